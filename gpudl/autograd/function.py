"""``Function``: one differentiable op, with ``forward`` and ``backward`` side by side.

``forward(*arrays)`` gets backend arrays (and Python scalars / None passed through) and
returns an array or a tuple of arrays; ``backward(*grad_outputs)`` gets one gradient per
output (None for outputs nobody used) and returns one gradient per input (None where
``needs_input_grad`` is False). ``self.xp`` is the array module of the inputs.
Arrays kept for backward go in ``self.saved``; if a tensor whose array was saved is later
modified in place, backward reports it instead of computing a wrong gradient.
"""
from .. import backend as _backend
from .grad_mode import grad_mode


class Function:
    """Base class of every op; subclasses define ``forward`` and ``backward``."""

    saved = ()
    is_view = False
    inputs = None

    def apply(self, *inputs):
        """Run ``forward`` on the inputs' arrays and, if needed, link the outputs into the graph."""
        from ..tensor import Tensor
        arrays = []
        tensors = []
        requires = False
        for value in inputs:
            if type(value) is Tensor or isinstance(value, Tensor):
                arrays.append(value.data)
                tensors.append(value)
                requires = requires or value.requires_grad
            else:
                arrays.append(value)
        first = tensors[0].data
        backend = _backend.backend_of(first)
        for other in tensors[1:]:
            if type(other.data) is not type(first) or (
                    backend.needs_device_context and backend.device_of(other.data) != backend.device_of(first)):
                raise RuntimeError(
                    f"{type(self).__name__}: tensors are on different devices: "
                    f"{backend.device_of(first)} and {_backend.device_of(other.data)}; move them with .to(device)")
        self.xp = backend.xp
        self.backend = backend
        if backend.needs_device_context:
            with backend.context(backend.device_of(first)):
                outputs = self.forward(*arrays)
        else:
            outputs = self.forward(*arrays)
        requires = requires and grad_mode.enabled
        single = not isinstance(outputs, tuple)
        if single:
            outputs = (outputs,)
        array_type = type(first)
        outputs = tuple(o if type(o) is array_type else backend.xp.asarray(o) for o in outputs)
        if requires:
            self.inputs = inputs
            self.needs_input_grad = tuple(
                isinstance(v, Tensor) and v.requires_grad for v in inputs)
            self.n_outputs = len(outputs)
            results = tuple(Tensor._from_op(o, self, k) for k, o in enumerate(outputs))
            if self.is_view:
                for r in results:
                    r._version = tensors[0]._version
            if self.saved:
                self._saved_versions = [
                    (t._version, t._version[0]) for t in (*tensors, *results)
                    if any(t.data is s for s in self.saved)]
        else:
            results = tuple(Tensor(o) for o in outputs)
            if self.is_view:
                for r in results:
                    r._version = tensors[0]._version
        return results[0] if single else results

    def forward(self, *arrays):
        """Compute the outputs from the input arrays."""
        raise NotImplementedError

    def backward(self, *grad_outputs):
        """Gradients with respect to the inputs, given gradients of the outputs."""
        raise NotImplementedError(f"{type(self).__name__} is not differentiable")

    def check_saved_versions(self):
        """Raise if a tensor saved for backward was modified in place since."""
        for counter, version in getattr(self, "_saved_versions", ()):
            if counter[0] != version:
                raise RuntimeError(
                    f"{type(self).__name__}: one of the tensors it saved for backward was modified by an "
                    f"in-place operation (version {version} -> {counter[0]}); compute the gradient before "
                    "modifying it, or modify a copy (.clone())")

    def release(self):
        """Drop what backward needed, so the graph can be freed."""
        self.saved = ()
        self.inputs = None

    def __repr__(self):
        return f"<{type(self).__name__}>"
