"""Numerical gradient checking by central differences in float64."""
from .. import backend as _backend
from .engine import grad as _grad
from .grad_mode import no_grad


class GradcheckError(AssertionError):
    """Analytic and numerical gradients disagree; the message names the worst element."""


def _outputs(fn, inputs):
    out = fn(*inputs)
    return out if isinstance(out, (tuple, list)) else (out,)


def gradcheck(fn, *inputs, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0):
    """Compare backprop gradients of ``fn`` with central differences; return True or raise.

    ``inputs`` are float64 tensors; those with ``requires_grad=True`` are checked. Each
    output is projected on a fixed random direction, so one backward pass gives every
    analytic gradient and two forward passes per input element give the numerical ones.
    On failure the error names the input, the worst element's index, and both values.
    """
    from ..tensor import Tensor
    checked = [t for t in inputs if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input requires grad")
    for t in checked:
        if t.dtype != _backend.float64:
            raise TypeError(f"gradcheck: inputs must be float64 for a meaningful check, got {t.dtype}")
    rng = _backend.new_generator(seed)
    first = _outputs(fn, inputs)
    # positions of the differentiable outputs: others (indices, constants) are skipped in every pass
    differentiable = [k for k, o in enumerate(first) if isinstance(o, Tensor) and o.requires_grad]
    if not differentiable:
        raise ValueError("gradcheck: fn returned no output that requires grad")
    outputs = [first[k] for k in differentiable]
    directions = [_backend.to_device(rng.standard_normal(o.shape), o.device) for o in outputs]

    def projected():
        results = _outputs(fn, inputs)
        return sum(float((results[k].data * d).sum()) for k, d in zip(differentiable, directions))

    analytic = _grad(outputs, checked, grad_outputs=directions, allow_unused=True)
    with no_grad():
        for k, (t, a) in enumerate(zip(checked, analytic)):
            host_analytic = _backend.to_host(a.data) if a is not None else 0 * _backend.to_host(t.data)
            numeric = host_analytic.copy()
            for j in range(t.size):
                index = _unravel(j, t.shape)
                original = t.data[index].item()
                t.data[index] = original + eps
                plus = projected()
                t.data[index] = original - eps
                minus = projected()
                t.data[index] = original
                numeric.reshape(-1)[j] = (plus - minus) / (2 * eps)
            error = abs(host_analytic - numeric) - (atol + rtol * abs(numeric))
            if error.size and error.max() > 0:
                worst = int(error.argmax())
                index = _unravel(worst, t.shape)
                raise GradcheckError(
                    f"gradcheck failed for input {k} (shape {t.shape}) at index {index}: "
                    f"analytic {float(host_analytic.reshape(-1)[worst])!r}, numerical {float(numeric.reshape(-1)[worst])!r} "
                    f"(atol={atol}, rtol={rtol})")
    return True


def _unravel(flat_index, shape):
    index = []
    for n in reversed(shape):
        index.append(flat_index % n)
        flat_index //= n
    return tuple(reversed(index))
