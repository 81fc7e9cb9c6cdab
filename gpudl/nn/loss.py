"""Losses, as functions (``mse_loss`` ...) and as modules (``MSELoss`` ...), with PyTorch's definitions,
defaults and ``reduction`` (``'mean'``, ``'sum'``, ``'none'``); plus L1/L2 penalties on parameters."""
from .. import ops
from ..autograd.function import Function
from ..ops._util import accumulation_dtype, as_tensor_like
from ..ops.embedding import check_indices
from ..ops.loss import softmax_cross_entropy
from ..tensor import Tensor
from .module import Module

REDUCTIONS = ("mean", "sum", "none")
_BCE_EPSILON = 9.999999960041972e-13  # PyTorch's 1e-12 as the float32 it is stored in


def _reduce(loss, reduction):
    if reduction == "mean":
        return loss.mean()
    return loss.sum() if reduction == "sum" else loss


def _check_reduction(op, reduction):
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _input_and_target(op, input, target, reduction):
    """Validate the reduction and shapes; the target as a tensor of the input's float dtype."""
    _check_reduction(op, reduction)
    if input.dtype.kind != "f":
        raise TypeError(f"{op}: input must be floating point, got {input.dtype}")
    target = as_tensor_like(target, input)
    if target.shape != input.shape:
        raise ValueError(f"{op}: target shape {target.shape} differs from input shape {input.shape} "
                         "(broadcasting them is almost always a bug; reshape one of them)")
    return input, target if target.dtype == input.dtype else target.astype(input.dtype)


def mse_loss(input, target, reduction="mean"):
    """Squared error ``(input - target)²``, reduced."""
    input, target = _input_and_target("mse_loss", input, target, reduction)
    diff = input - target
    return _reduce(diff * diff, reduction)


def l1_loss(input, target, reduction="mean"):
    """Absolute error ``|input - target|``, reduced (gradient 0 where they are equal, as PyTorch)."""
    input, target = _input_and_target("l1_loss", input, target, reduction)
    return _reduce((input - target).abs(), reduction)


def huber_loss(input, target, reduction="mean", delta=1.0):
    """``0.5 d²`` where ``|d| < delta``, else ``delta (|d| - 0.5 delta)``, with ``d = input - target``."""
    if delta <= 0:
        raise ValueError(f"huber_loss: delta must be positive, got {delta}")
    input, target = _input_and_target("huber_loss", input, target, reduction)
    diff = input - target
    # 0.5 c² + delta (|d| - |c|) with c = clamp(d, ±delta) is the same function with no masked-off
    # branch: a where() would send 0 · inf = NaN back from the quadratic branch of an infinite d
    inner = diff.clamp(-delta, delta)
    return _reduce(0.5 * inner * inner + delta * (diff.abs() - inner.abs()), reduction)


class BinaryCrossEntropy(Function):
    """Elementwise ``-(t log p + (1 - t) log(1 - p))`` with each log clamped at -100 and PyTorch's
    gradient ``(p - t) / max(p (1 - p), 1e-12)``, so p = 0 or 1 gives finite values."""

    def forward(self, p, t):
        xp = self.xp
        # NaN counts as defined, so a NaN probability gives a NaN loss rather than the clamp's 100
        log_p = _clamped_log(xp, xp.log, p, ~(p <= 0), 1)
        log_q = _clamped_log(xp, xp.log1p, -p, ~(p >= 1), 0)
        self.saved = (p, t, log_p, log_q)
        return -(t * log_p + (1 - t) * log_q)

    def backward(self, g):
        p, t, log_p, log_q = self.saved
        gp = gt = None
        if self.needs_input_grad[0]:
            gp = g * (p - t) / self.xp.maximum(p * (1 - p), _BCE_EPSILON)
        if self.needs_input_grad[1]:
            gt = g * (log_q - log_p)
        return gp, gt


def _clamped_log(xp, log, argument, defined, neutral):
    """``max(log(argument), -100)``, with ``log`` evaluated only where ``defined`` (elsewhere on
    ``neutral``), so log(0) never runs and raises no floating-point warning."""
    return xp.where(defined, xp.maximum(log(xp.where(defined, argument, neutral)), -100), -100)


class BinaryCrossEntropyWithLogits(Function):
    """Elementwise ``(1 - t) x + (1 + (w - 1) t) softplus(-x)`` (w = pos_weight, 1 if None), which is
    BCE of sigmoid(x) written so no exp overflows: stable for any |x|."""

    def forward(self, x, t, pos_weight):
        xp = self.xp
        softplus_neg = xp.log1p(xp.exp(-xp.abs(x))) + xp.maximum(-x, 0)
        log_weight = 1 + (pos_weight - 1) * t if pos_weight is not None else 1
        self.saved = (x, t, pos_weight, softplus_neg, log_weight)
        return (1 - t) * x + log_weight * softplus_neg

    def backward(self, g):
        x, t, pos_weight, softplus_neg, log_weight = self.saved
        xp = self.xp
        gx = gt = gw = None
        if self.needs_input_grad[0]:
            e = xp.exp(-xp.abs(x))
            sigmoid_neg = xp.where(x >= 0, e, 1) / (1 + e)  # sigmoid(-x) without overflow
            gx = g * ((1 - t) - log_weight * sigmoid_neg)
        if self.needs_input_grad[1]:
            gt = g * (-x + (pos_weight - 1) * softplus_neg if pos_weight is not None else -x)
        if self.needs_input_grad[2]:
            gw = g * t * softplus_neg
        return gx, gt, gw


def binary_cross_entropy(input, target, weight=None, reduction="mean"):
    """BCE of probabilities ``input`` in [0, 1] against ``target``; logs are clamped at -100 (as PyTorch).
    ``weight`` (broadcast to the input) rescales each element's loss."""
    input, target = _input_and_target("binary_cross_entropy", input, target, reduction)
    loss = BinaryCrossEntropy().apply(input, target)
    return _reduce(loss if weight is None else loss * as_tensor_like(weight, input), reduction)


def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean", pos_weight=None):
    """BCE of ``sigmoid(input)`` computed from the logits directly (stable for any magnitude).
    ``pos_weight`` (broadcast along the last axis, e.g. one per class) weighs the positive term;
    ``weight`` rescales each element's loss."""
    input, target = _input_and_target("binary_cross_entropy_with_logits", input, target, reduction)
    if pos_weight is not None:
        pos_weight = as_tensor_like(pos_weight, input)
    loss = BinaryCrossEntropyWithLogits().apply(input, target, pos_weight)
    return _reduce(loss if weight is None else loss * as_tensor_like(weight, input), reduction)


class NegativeLogLikelihood(Function):
    """``-weight[t] * input[n, t]`` per target, reduced; ``mean`` divides by the summed weights of
    the targets that are not ``ignore_index`` (as PyTorch)."""

    def __init__(self, target, weight, ignore_index, reduction):
        self.target, self.weight, self.ignore_index, self.reduction = target, weight, ignore_index, reduction

    def forward(self, log_probs):
        xp = self.xp
        valid = self.target != self.ignore_index
        # ignored targets read class 0 (with weight 0); bad ones were reported by check_indices
        # (on the GPU at the next sync) and are clipped so the gather stays in bounds until then
        safe = xp.clip(xp.where(valid, self.target, 0), 0, log_probs.shape[1] - 1)
        self.safe_target = xp.expand_dims(safe, 1)
        picked = xp.take_along_axis(log_probs, self.safe_target, axis=1)[:, 0]
        if self.weight is None:
            self.target_weight = valid.astype(log_probs.dtype)
        else:
            self.target_weight = self.weight.astype(log_probs.dtype)[self.safe_target[:, 0]] * valid
        self.shape = log_probs.shape
        losses = -picked * self.target_weight
        if self.reduction == "none":
            return losses
        acc = accumulation_dtype(log_probs.dtype) or log_probs.dtype
        total = losses.sum(dtype=acc)
        if self.reduction == "sum":
            return total.astype(log_probs.dtype)
        self.denominator = self.target_weight.sum(dtype=acc)  # on the device: no host sync
        return (total / self.denominator).astype(log_probs.dtype)

    def backward(self, g):
        xp = self.xp
        scale = g / self.denominator if self.reduction == "mean" else g
        coefficient = xp.expand_dims(-self.target_weight * scale, 1).astype(g.dtype, copy=False)
        classes = xp.arange(self.shape[1]).reshape((1, -1) + (1,) * (len(self.shape) - 2))
        return xp.where(classes == self.safe_target, coefficient, g.dtype.type(0))


def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """Negative log-likelihood of log-probabilities ``input`` [N, C] (or [N, C, d1, ...], or [C]) for
    integer class ``target`` [N] (or [N, d1, ...], or a scalar). ``weight`` [C] weighs the classes;
    targets equal to ``ignore_index`` contribute nothing; ``mean`` averages over the rest."""
    op = "nll_loss"
    _check_reduction(op, reduction)
    target = as_tensor_like(target, input)
    if input.ndim == 0:
        raise ValueError(f"{op}: input must have a class axis, got a 0-d tensor")
    if input.ndim == 1:
        loss = nll_loss(input.unsqueeze(0), target.reshape(1), weight, ignore_index, reduction)
        return loss.reshape(()) if reduction == "none" else loss
    expected = input.shape[:1] + input.shape[2:]
    if target.shape != expected:
        raise ValueError(f"{op}: target of shape {target.shape} does not fit input of shape {input.shape} "
                         f"(expected target shape {expected})")
    check_indices(target.data, input.shape[1], f"{op} target", ignore_index)
    if weight is not None:
        weight = as_tensor_like(weight, input)
        if weight.shape != (input.shape[1],):
            raise ValueError(f"{op}: weight must have shape ({input.shape[1]},), one per class, got {weight.shape}")
        weight = weight.data
    return NegativeLogLikelihood(target.data, weight, ignore_index, reduction).apply(input)


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """Cross-entropy of logits [N, C] (or [N, C, d1, ...]) against integer class targets, with PyTorch's
    signature. Without ``weight`` it is the fused ``softmax_cross_entropy``; with class weights it is
    ``nll_loss(log_softmax(input, dim=1), target, weight, ...)``."""
    if weight is None:
        return softmax_cross_entropy(input, target, reduction, ignore_index, label_smoothing)
    if label_smoothing:
        raise NotImplementedError("cross_entropy: weight and label_smoothing together are not supported")
    return nll_loss(ops.log_softmax(input, 1 if input.ndim > 1 else 0), target, weight, ignore_index, reduction)


def l1_penalty(params):
    """Sum of the absolute values of every entry of ``params`` (e.g. ``model.parameters()``), as one scalar tensor."""
    return _penalty(params, lambda p: p.abs().sum(), "l1_penalty")


def l2_penalty(params):
    """Sum of the squares of every entry of ``params`` (not halved): ``loss + wd / 2 * l2_penalty(...)``
    gives the same gradient as SGD's ``weight_decay=wd``."""
    return _penalty(params, lambda p: (p * p).sum(), "l2_penalty")


def _penalty(params, term, op):
    total = None
    for p in params:
        if not isinstance(p, Tensor):
            raise TypeError(f"{op}: expected tensors, got {type(p).__name__}")
        total = term(p) if total is None else total + term(p)
    if total is None:
        raise ValueError(f"{op}: no parameters given")
    return total


class _Loss(Module):
    def __init__(self, reduction="mean"):
        super().__init__()
        _check_reduction(type(self).__name__, reduction)
        self.reduction = reduction

    def extra_repr(self):
        return "" if self.reduction == "mean" else f"reduction={self.reduction!r}"


class MSELoss(_Loss):
    """Mean squared error (see ``mse_loss``)."""

    def forward(self, input, target):
        return mse_loss(input, target, self.reduction)


class L1Loss(_Loss):
    """Mean absolute error (see ``l1_loss``)."""

    def forward(self, input, target):
        return l1_loss(input, target, self.reduction)


class HuberLoss(_Loss):
    """Huber loss with threshold ``delta`` (see ``huber_loss``)."""

    def __init__(self, reduction="mean", delta=1.0):
        super().__init__(reduction)
        self.delta = delta

    def forward(self, input, target):
        return huber_loss(input, target, self.reduction, self.delta)


class _WeightedLoss(_Loss):
    def __init__(self, weight=None, reduction="mean"):
        super().__init__(reduction)
        self.register_buffer("weight", weight)


class NLLLoss(_WeightedLoss):
    """Negative log-likelihood of log-probabilities (see ``nll_loss``)."""

    def __init__(self, weight=None, ignore_index=-100, reduction="mean"):
        super().__init__(weight, reduction)
        self.ignore_index = ignore_index

    def forward(self, input, target):
        return nll_loss(input, target, self.weight, self.ignore_index, self.reduction)


class CrossEntropyLoss(_WeightedLoss):
    """Cross-entropy of logits against class indices (see ``cross_entropy``)."""

    def __init__(self, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        super().__init__(weight, reduction)
        self.ignore_index, self.label_smoothing = ignore_index, label_smoothing

    def forward(self, input, target):
        return cross_entropy(input, target, self.weight, self.ignore_index, self.reduction, self.label_smoothing)


class BCELoss(_WeightedLoss):
    """Binary cross-entropy of probabilities (see ``binary_cross_entropy``)."""

    def forward(self, input, target):
        return binary_cross_entropy(input, target, self.weight, self.reduction)


class BCEWithLogitsLoss(_WeightedLoss):
    """Binary cross-entropy of logits, computed stably (see ``binary_cross_entropy_with_logits``)."""

    def __init__(self, weight=None, reduction="mean", pos_weight=None):
        super().__init__(weight, reduction)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, input, target):
        return binary_cross_entropy_with_logits(input, target, self.weight, self.reduction, self.pos_weight)
