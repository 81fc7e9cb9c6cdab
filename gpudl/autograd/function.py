"""``Function``: one differentiable op, with ``forward`` and ``backward`` side by side.

``forward(*arrays)`` gets backend arrays (and Python scalars / None passed through) and
returns an array or a tuple of arrays; ``backward(*grad_outputs)`` gets one gradient per
output (None for outputs nobody used) and returns one gradient per input (None where
``needs_input_grad`` is False). ``self.xp`` is the array module of the inputs.
Arrays kept for backward go in ``self.saved``; if a tensor whose array was saved is later
modified in place, backward reports it instead of computing a wrong gradient.
"""
from .. import backend as _backend
from .. import profiler as _profiler
from ..profiler import active as _profiling
from .grad_mode import grad_mode

Tensor = None  # set by gpudl.tensor once the Tensor class exists (it imports this module)


class Function:
    """Base class of every op; subclasses define ``forward`` and ``backward``."""

    saved = ()
    is_view = False
    inputs = None
    # True where every gradient ``backward`` returns is a new array that nothing else references
    # (or a view of one): the engine then keeps it as a leaf's ``.grad`` instead of copying it
    private_grads = False

    def apply(self, *inputs):
        """Run ``forward`` on the inputs' arrays and, if needed, link the outputs into the graph."""
        arrays = []
        tensors = []
        edges = []  # where each input's gradient goes (None: nowhere), collected in the same pass
        requires = False
        first = None
        for value in inputs:
            if isinstance(value, Tensor):
                data = value.data
                if first is None:
                    first = data
                elif type(data) is not type(first):
                    self._raise_mixed_devices(first, data)
                tensors.append(value)
                arrays.append(data)
                if value._requires_grad:
                    requires = True
                    edges.append((value.grad_fn, value._output_index))
                    continue
            else:
                arrays.append(value)
            edges.append(None)
        backend = _backend.backend_of(first)
        self.xp = backend.xp
        self.backend = backend
        if backend.needs_device_context:
            device = self.input_device = backend.device_of(first)
            for other in tensors:
                if backend.device_of(other.data) != device:
                    self._raise_mixed_devices(first, other.data)
            with backend.context(device):
                outputs = self._profiled_forward(arrays, backend, device)
        elif _profiling.profile is None:
            outputs = self.forward(*arrays)
        else:
            outputs = self._profiled_forward(arrays, backend, None)
        single = type(outputs) is not tuple
        array_type = type(first)
        if single:
            outputs = (outputs if type(outputs) is array_type else self._as_arrays((outputs,))[0],)
        else:
            outputs = self._as_arrays(outputs)
        if requires and grad_mode.enabled:
            self.inputs = inputs
            # where each input's gradient goes, fixed now: a later in-place op on an input must not reroute it
            self.edges = tuple(edges)
            self.needs_input_grad = tuple([edge is not None for edge in edges])
            self.n_outputs = len(outputs)
            results = [Tensor._from_op(o, self, k) for k, o in enumerate(outputs)]
            if self.saved:
                saved = {id(s) for s in self.saved}
                self._saved_versions = [(t._version, t._version[0]) for t in (*tensors, *results)
                                        if id(t.data) in saved]
        else:
            results = [Tensor._wrap(o) for o in outputs]
        if self.is_view:
            for r in results:
                r._version = tensors[0]._version
        return results[0] if single else tuple(results)

    def _as_arrays(self, outputs):
        """``outputs`` with NumPy scalars (from reductions) made 0-d arrays of the inputs' backend."""
        return tuple(o if _backend.is_array(o) else self.xp.asarray(o) for o in outputs)

    @property
    def op_name(self) -> str:
        """The name the profiler reports this op under."""
        return type(self).__name__

    def _profiled_forward(self, arrays, backend, device):
        if _profiling.profile is None:
            return self.forward(*arrays)
        return _profiler.timed(self.op_name, backend, device, self.forward, *arrays)

    def _backward(self, grads, device):
        """``backward``, timed when a profile is active (called by the engine)."""
        if _profiling.profile is None:
            return self.backward(*grads)
        return _profiler.timed(self.op_name, self.backend, device, self.backward, *grads, backward=True)

    def _raise_mixed_devices(self, a, b):
        raise RuntimeError(f"{type(self).__name__}: tensors are on different devices: {_backend.device_of(a)} and "
                           f"{_backend.device_of(b)}; move them with .to(device)")

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
        """Drop what backward needed, so the graph can be freed: after it the Function holds no
        arrays (saved ones, or attributes such as pooling indices and batch statistics) and no edges,
        so tensors kept from a step (a loss for logging) keep only this small object alive."""
        self.saved = ()
        self.inputs = None
        self.edges = None
        for name, value in self.__dict__.items():
            if name not in _BOOKKEEPING and _holds_arrays(value):
                setattr(self, name, None)  # replacing a value keeps the dict's size: safe while iterating

    def __repr__(self):
        return f"<{type(self).__name__}>"


# what ``apply`` records on every Function: never arrays, so release() need not look at them (it runs
# once per op and step; a Function's own attributes are few)
_BOOKKEEPING = frozenset({"xp", "backend", "saved", "inputs", "edges", "needs_input_grad", "n_outputs",
                          "_saved_versions", "input_device"})


def _holds_arrays(value) -> bool:
    """True for an array, or a tuple or list with one (an advanced index)."""
    if type(value) in (tuple, list):
        for item in value:
            if _backend.is_array(item):
                return True
        return False
    return _backend.is_array(value)
