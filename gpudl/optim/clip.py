"""Gradient clipping: ``clip_grad_norm_`` (by the total norm, on the device) and ``clip_grad_value_``."""
import math

from .. import backend as _backend
from ..tensor import Tensor


def _grads(parameters, owner):
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    grads = []
    for k, param in enumerate(parameters):
        if not isinstance(param, Tensor):
            raise TypeError(f"{owner}: parameter {k} is a {type(param).__name__}, expected a gpudl Tensor")
        if param.grad is not None:
            grads.append(param.grad.data)
    return grads


def _norm_of(grad, norm_type):
    """The ``norm_type``-norm of one gradient as a 0-d array on its device (float32 at least)."""
    xp = _backend.backend_of(grad).xp
    if grad.dtype == _backend.float16:
        grad = grad.astype(_backend.float32)
    if norm_type == math.inf:
        return xp.max(xp.abs(grad)) if grad.size else xp.zeros((), grad.dtype)
    flat = grad.reshape(-1)
    if norm_type == 2:
        return xp.sqrt(xp.dot(flat, flat))
    if norm_type == 1:
        return xp.sum(xp.abs(flat))
    return xp.sum(xp.abs(flat) ** norm_type) ** (1.0 / norm_type)


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False) -> Tensor:
    """Scale the gradients in place so that their total norm (of all gradients as one vector) is at most
    ``max_norm``; returns the total norm before clipping as a 0-d tensor.

    The norm and the factor ``min(1, max_norm / (norm + 1e-6))`` stay on the device, so this never
    waits for the GPU, except with ``error_if_nonfinite=True``, which reads the norm to check it.
    ``norm_type`` is a positive number or ``inf`` (the largest absolute value).
    """
    norm_type = float(norm_type)
    if not norm_type > 0:
        raise ValueError(f"clip_grad_norm_: norm_type must be positive or inf, got {norm_type!r}")
    max_norm = float(max_norm)
    grads = _grads(parameters, "clip_grad_norm_")
    if not grads:
        return Tensor(_backend.new_array(_backend.default_device(), "zeros", (), dtype=_backend.float32))
    device = _backend.device_of(grads[0])
    backend = _backend.backend_for(device)
    xp = backend.xp
    with backend.context(device):
        norms = [_backend.to_device(_norm_of(grad, norm_type), device) for grad in grads]
        if len(norms) == 1:
            total = norms[0]
        elif norm_type == math.inf:
            total = xp.max(xp.stack(norms))
        else:
            total = _norm_of(xp.stack(norms), norm_type)
        if error_if_nonfinite and not bool(xp.isfinite(total)):
            raise RuntimeError(f"clip_grad_norm_: the total norm of order {norm_type} of the gradients is "
                               f"{float(total)}, so they cannot be clipped; pass error_if_nonfinite=False "
                               "to scale them anyway")
        factor = xp.minimum(max_norm / (total + 1e-6), 1.0)
        total = xp.asarray(total, dtype=xp.result_type(*(grad.dtype for grad in grads)))
    for grad in grads:
        grad *= _backend.to_device(factor, _backend.device_of(grad))
    return Tensor(total)


def clip_grad_value_(parameters, clip_value) -> None:
    """Clip every gradient in place into ``[-clip_value, clip_value]``."""
    clip_value = float(clip_value)
    if clip_value < 0:
        raise ValueError(f"clip_grad_value_: clip_value must be >= 0, got {clip_value!r}")
    for grad in _grads(parameters, "clip_grad_value_"):
        xp = _backend.backend_of(grad).xp
        xp.clip(grad, -clip_value, clip_value, out=grad)
