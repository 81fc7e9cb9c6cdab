"""Softmax cross-entropy as one fused Function (forward log-sum-exp, backward softmax - onehot)."""
from ..autograd.function import Function
from ._util import as_tensor_like

REDUCTIONS = ("mean", "sum", "none")


class SoftmaxCrossEntropy(Function):
    """Loss of logits [N, C] against integer targets [N], reduced in the same Function."""

    def __init__(self, reduction, ignore_index, label_smoothing):
        self.reduction, self.ignore_index, self.label_smoothing = reduction, ignore_index, label_smoothing

    def forward(self, logits, targets):
        fused = self.backend.fused
        loss, lse = fused.softmax_cross_entropy_forward(logits, targets, self.ignore_index, self.label_smoothing)
        self.saved = (logits, lse, targets)
        if self.reduction == "none":
            return loss
        total = loss.sum(dtype=lse.dtype)
        if self.reduction == "sum":
            return total.astype(logits.dtype)
        # divided on the device: no host sync; 0 valid targets give NaN, as PyTorch
        self.count = (targets != self.ignore_index).sum().astype(lse.dtype)
        return (total / self.count).astype(logits.dtype)

    def backward(self, g):
        logits, lse, targets = self.saved
        if self.reduction == "none":
            grad_loss = g
        else:
            scale = g / self.count if self.reduction == "mean" else g
            grad_loss = self.xp.empty(targets.shape, dtype=g.dtype)
            grad_loss[...] = scale
        return self.backend.fused.softmax_cross_entropy_backward(
            logits, lse, targets, grad_loss, self.ignore_index, self.label_smoothing), None


def softmax_cross_entropy(logits, targets, reduction="mean", ignore_index=-100, label_smoothing=0.0):
    """Cross-entropy of ``softmax(logits)`` against class indices, as PyTorch's ``cross_entropy``.

    ``logits`` [N, C] (or [N, C, d1, ...], classes on axis 1); ``targets`` integer class indices
    of shape [N] (or [N, d1, ...]), any int dtype. ``reduction``: ``mean`` (over targets that are
    not ``ignore_index``), ``sum`` or ``none``. ``label_smoothing`` mixes the one-hot target with
    the uniform distribution.

    Targets outside ``[0, C)`` other than ``ignore_index`` are an error naming the value and the
    range. On the CPU it is raised here; on the GPU, where an index would silently wrap, the check
    sets a device-side flag that is read — and raised as the same IndexError — at the thread's
    next host sync (``.item()``, ``.numpy()``, ``float()``, ``gpudl.check_device_errors()``), so
    the step itself never waits for the device (``GPUDL_SYNC_CHECKS=1``: raised here).
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"softmax_cross_entropy: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"softmax_cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    targets = as_tensor_like(targets, logits)
    if logits.dtype.kind != "f":
        raise TypeError(f"softmax_cross_entropy: logits must be floating point, got {logits.dtype}")
    if targets.dtype.kind not in "iu":
        raise TypeError(f"softmax_cross_entropy: targets must be integer class indices, got dtype {targets.dtype}")
    if logits.ndim < 1 or logits.ndim == 1 and targets.ndim != 0:
        raise ValueError(f"softmax_cross_entropy: logits of shape {logits.shape} do not fit targets of "
                         f"shape {targets.shape}")
    expected = logits.shape[:1] + logits.shape[2:] if logits.ndim > 1 else ()
    if targets.shape != expected:
        raise ValueError(f"softmax_cross_entropy: targets must have shape {expected} for logits of shape "
                         f"{logits.shape}, got {targets.shape}")
    if logits.ndim != 2:
        classes = logits.shape[1] if logits.ndim > 1 else logits.shape[0]
        if logits.ndim > 2:
            logits = logits.permute(0, *range(2, logits.ndim), 1)
        logits = logits.reshape(-1, classes)
        loss = SoftmaxCrossEntropy(reduction, ignore_index, label_smoothing).apply(logits, targets.reshape(-1))
        return loss.reshape(expected) if reduction == "none" else loss
    return SoftmaxCrossEntropy(reduction, ignore_index, label_smoothing).apply(logits, targets)

