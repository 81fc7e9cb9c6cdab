"""``Optimizer``: parameter groups, per-parameter state, ``zero_grad``, ``step`` and state dicts.

Subclasses implement ``_update(param, group, state, index)``, which changes ``param.data`` in
place from ``param.grad.data``, and may implement ``_update_foreach(group, batch)``, one update of
all of a group's parameters on one device (a multi-tensor kernel); the group's ``foreach``
(PyTorch's constructor argument: None or True uses it, False updates tensor by tensor) chooses. State lives in ``self.state``, keyed by the parameter's position
(its index counted over all groups in order, PyTorch's integer ids), so ``state_dict()`` maps
onto another optimizer built the same way, in another process or on another device.
"""
import contextlib

from .. import backend as _backend
from ..autograd.grad_mode import enable_grad
from ..backend.buffer_pool import POOL
from ..tensor import Tensor

_NO_CONTEXT = contextlib.nullcontext()


class Optimizer:
    """Base class: holds ``param_groups`` (dicts of hyperparameters plus ``"params"``) and ``state``."""

    def __init__(self, params, defaults: dict):
        self.defaults = dict(defaults)
        self.param_groups = []
        self.state = {}        # parameter index -> {name: array | int}; what state_dict() saves
        self._taken = []       # temporaries of the update in progress, from the buffer pool
        if isinstance(params, (Tensor, dict)):
            raise TypeError(f"{type(self).__name__}: params should be an iterable of tensors or of dicts "
                            f"(parameter groups), got a {type(params).__name__}")
        groups = list(self._ordered(params))
        if not groups:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for k, group in enumerate(self.param_groups):
            settings = ", ".join(f"{key}={value!r}" for key, value in group.items() if key != "params")
            lines.append(f"  group {k}: {len(group['params'])} tensors, {settings}")
        return "\n".join(lines + [")"])

    # ----------------------------------------------------------------- parameter groups
    def add_param_group(self, param_group: dict) -> None:
        """Add a group: ``{"params": tensors, <hyperparameter>: value, ...}``; missing ones take the defaults."""
        if not isinstance(param_group, dict):
            raise TypeError(f"{type(self).__name__}.add_param_group: expected a dict, "
                            f"got {type(param_group).__name__}")
        params = param_group.get("params")
        if isinstance(params, Tensor):
            params = [params]
        elif params is None:
            raise ValueError(f"{type(self).__name__}: a parameter group needs a 'params' entry")
        params = list(self._ordered(params))
        seen = {id(p) for group in self.param_groups for p in group["params"]}
        for k, param in enumerate(params):
            self._check_param(param, k)
            if id(param) in seen:
                raise ValueError(f"{type(self).__name__}: a tensor of shape {param.shape} appears more than once "
                                 "in the parameters (within a group or in two groups)")
            seen.add(id(param))
        unknown = set(param_group) - set(self.defaults) - {"params", "initial_lr", "foreach"}
        if unknown:
            raise ValueError(f"{type(self).__name__}: unknown hyperparameter(s) {sorted(unknown)} in a parameter "
                             f"group; valid ones are {sorted(self.defaults)}")
        group = {**self.defaults, **param_group, "params": params}
        self._check_group(group)
        self.param_groups.append(group)

    def _ordered(self, params):
        if isinstance(params, (set, frozenset)):
            raise TypeError(f"{type(self).__name__}: parameters must be given in a fixed order (a list), "
                            "not a set, so that state dicts map back onto the same tensors")
        return params

    def _check_param(self, param, k):
        name = type(self).__name__
        if not isinstance(param, Tensor):
            raise TypeError(f"{name}: parameter {k} is a {type(param).__name__}, expected a gpudl Tensor")
        if not param.is_leaf:
            raise ValueError(f"{name}: parameter {k} (shape {param.shape}) is not a leaf tensor; optimizers "
                             "can only update leaves (call .detach().requires_grad_() to make one)")
        if param.dtype.kind != "f":
            raise TypeError(f"{name}: parameter {k} has dtype {param.dtype}; only floating-point tensors "
                            "can be optimized")

    def _check_group(self, group: dict) -> None:
        group.setdefault("foreach", None)
        self._require(group["foreach"] in (None, True, False),
                      f"foreach must be None, True or False, got {group['foreach']!r}")
        self._check_hyperparameters(group)

    def _check_hyperparameters(self, group: dict) -> None:
        """Raise ValueError for out-of-range hyperparameters (subclasses list theirs)."""

    def _require(self, condition: bool, message: str) -> None:
        if not condition:
            raise ValueError(f"{type(self).__name__}: {message}")

    # ----------------------------------------------------------------- stepping
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every parameter's gradient: drop it (default) or, with ``set_to_none=False``, zero it in place."""
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                if set_to_none:
                    param.grad = None
                else:
                    param.grad.data.fill(0)

    def step(self, closure=None):
        """Update every parameter that has a gradient; ``closure`` (re-evaluating the loss) is called first."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        index = 0
        for group in self.param_groups:
            batch = []
            for param in group["params"]:
                if param.grad is not None:
                    state = self.state.get(index)
                    if state is None:
                        state = self.state[index] = {}
                    batch.append((param, state, index))
                index += 1
            if group["foreach"] is False:
                for entry in batch:
                    self._run(self._update_one, group, [entry])
            else:
                for device_batch in self._by_device(batch):
                    self._run(self._update_foreach, group, device_batch)
        return loss

    def _run(self, update, group, batch):
        """``update(group, batch)`` on the batch's device; temporaries go back to the pool, and the
        parameters' versions are bumped so that saved-for-backward checks see the in-place change."""
        param = batch[0][0]
        backend = param.backend
        try:
            with backend.context(param.device) if backend.needs_device_context else _NO_CONTEXT:
                update(group, batch)
        finally:
            if self._taken:
                POOL.give(param.device, *self._taken)
                self._taken.clear()
        for param, _, _ in batch:
            param._version[0] += 1

    @staticmethod
    def _by_device(batch):
        """``batch`` split by the parameters' device (one multi-tensor update per device); a backend
        with a single device (the host's: no device context) is one key, without asking each array."""
        split = {}
        for entry in batch:
            backend = entry[0].backend
            split.setdefault(entry[0].device if backend.needs_device_context else backend, []).append(entry)
        return split.values()

    def _update_one(self, group, batch):
        (param, state, index), = batch
        self._update(param, group, state, index)

    def _update(self, param, group: dict, state: dict, index: int) -> None:
        raise NotImplementedError

    def _update_foreach(self, group: dict, batch: list) -> None:
        """Update every ``(param, state, index)`` of ``batch`` (parameters with a gradient, on one
        device). Optimizers with a multi-tensor kernel override this; here: one after another."""
        for entry in batch:
            self._update_one(group, [entry])

    # ----------------------------------------------------------------- helpers for _update
    def _buffer(self, like):
        """A temporary shaped like ``like`` for the update in progress, from the buffer pool (so a step
        allocates nothing); ``step`` gives it back after the update."""
        backend = _backend.backend_of(like)
        array = POOL.take(backend.xp, backend.device_of(like), like.shape, like.dtype)
        self._taken.append(array)
        return array

    def _state_array(self, state: dict, name: str, param, fill=0.0):
        """``state[name]``, created as an array like the parameter filled with ``fill`` on first use."""
        array = state.get(name)
        if array is None:
            array = state[name] = param.backend.xp.full_like(param.data, fill)
        return array

    def _effective_grad(self, param, maximize: bool, weight_decay: float = 0.0):
        """``±grad + weight_decay * param`` (minus for ``maximize``) as an array; ``param.grad`` is untouched."""
        grad = param.grad.data
        if not maximize and weight_decay == 0:
            return grad
        xp = param.backend.xp
        out = self._buffer(grad)
        if weight_decay == 0:
            return xp.negative(grad, out=out)
        xp.multiply(param.data, weight_decay, out=out)
        return (xp.subtract if maximize else xp.add)(out, grad, out=out)

    # ----------------------------------------------------------------- saving and restoring
    def state_dict(self) -> dict:
        """The optimizer's state as ``{"state": {index: {name: Tensor | number}}, "param_groups":
        [{hyperparameters..., "params": [index, ...]}]}``, indices counting parameters over all groups.

        State tensors share memory with the optimizer (as in PyTorch); ``gpudl.save`` copies them.
        """
        groups, index = [], 0
        for group in self.param_groups:
            packed = {key: value for key, value in group.items() if key != "params"}
            packed["params"] = list(range(index, index + len(group["params"])))
            index += len(group["params"])
            groups.append(packed)
        state = {k: {name: Tensor(value) if _backend.is_array(value) else value for name, value in entry.items()}
                 for k, entry in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore hyperparameters and state saved by ``state_dict()`` of an optimizer built the same way.

        State arrays are copied onto each parameter's device and float dtype. A different number of
        groups or parameters, or state shaped unlike its parameter, is a ValueError that says where.
        """
        name = type(self).__name__
        if not isinstance(state_dict, dict) or set(state_dict) != {"state", "param_groups"}:
            raise ValueError(f"{name}.load_state_dict: expected a dict with keys 'state' and 'param_groups', got "
                             f"{sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict).__name__}")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{name}.load_state_dict: the saved state has {len(saved_groups)} parameter groups, "
                             f"this optimizer has {len(self.param_groups)}")
        position, index = {}, 0
        for k, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"{name}.load_state_dict: parameter group {k} has {len(saved['params'])} "
                                 f"parameters in the saved state but {len(group['params'])} here")
            for saved_id, param in zip(saved["params"], group["params"]):
                position[saved_id] = (index, param)
                index += 1
        state = {}
        for saved_id, entry in state_dict["state"].items():
            if saved_id not in position:
                raise ValueError(f"{name}.load_state_dict: state for parameter {saved_id!r}, which no group lists")
            index, param = position[saved_id]
            state[index] = {key: self._restore_state_value(value, param, index, key) for key, value in entry.items()}
        for saved, group in zip(saved_groups, self.param_groups):
            group.update({key: value for key, value in saved.items() if key != "params"})
            self._check_group(group)
        self.state = state

    def _restore_state_value(self, value, param, index, key):
        data = value.data if isinstance(value, Tensor) else value
        if not _backend.is_array(data):
            return value
        if data.shape != param.shape:
            raise ValueError(f"{type(self).__name__}.load_state_dict: state {key!r} of parameter {index} has shape "
                             f"{tuple(data.shape)} but the parameter has shape {param.shape}")
        data = _backend.to_device(data, param.device, copy=True)
        return data.astype(param.dtype, copy=False) if data.dtype.kind == "f" else data
