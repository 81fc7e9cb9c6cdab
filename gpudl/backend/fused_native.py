"""Fused ops on NumPy arrays, computed by the kernels of ``kernels/*.cuh`` compiled for the host.

Same functions, signatures and errors as ``fused_numpy`` (whose validation it reuses); each op
launches the kernels of ``kernel_specs`` exactly as ``fused_cupy`` does on the GPU, through
:mod:`gpudl.backend.native_kernels` (OpenMP across cores, vectorised). Class indices are checked
on the host before the launch, as the NumPy twin does (an immediate IndexError).

Under ``GPUDL_CPU_KERNELS=auto`` the ops in :data:`TWIN_FASTER` run as their NumPy twins: NumPy
computes exp/tanh/log1p over whole arrays with SIMD loops, while these kernels evaluate them one
element per iteration (their index arithmetic, ``i / hidden`` and ``i % n_class``, keeps the
compiler from vectorising them), and the twins measured faster on one core at the models' sizes
(README, "CPU kernels"). ``GPUDL_CPU_KERNELS=native`` runs every op here natively.
"""
import functools

import numpy as np

from gpudl.backend import fused_numpy as _twin
from gpudl.backend.kernel_specs import ACC_DTYPE, ACTIVATION_BACKWARD_USES, adam_bias_corrections
from gpudl.backend.masked_softmax import launch_backward, launch_forward
from gpudl.backend.native_kernels import kernel

__all__ = ["ACTIVATION_BACKWARD_USES", "activation_backward", "activation_forward", "adam_update",
           "check_class_indices", "dropout_backward", "dropout_forward", "gru_cell_backward",
           "gru_cell_forward", "invalid_index_message", "lstm_cell_backward", "lstm_cell_forward",
           "masked_softmax_backward", "masked_softmax_forward",
           "raise_pending_device_errors", "resolve_activation_params", "rnn_cell_backward",
           "rnn_cell_forward", "sgd_update", "softmax_cross_entropy_backward",
           "softmax_cross_entropy_forward"]

_MASK64 = (1 << 64) - 1
_TARGET_DTYPES = frozenset(np.dtype(d) for d in ("int32", "int64", "uint8", "int16"))
resolve_activation_params = _twin.resolve_activation_params
check_class_indices = _twin.check_class_indices
raise_pending_device_errors = _twin.raise_pending_device_errors
invalid_index_message = _twin.invalid_index_message
_check_float = _twin._check_float

TWIN_FASTER = frozenset({
    "elu_forward", "elu_backward", "sigmoid_forward", "tanh_forward", "softplus_forward",
    "softplus_backward", "gelu_tanh_forward", "gelu_tanh_backward", "silu_forward",
    "silu_backward", "softmax_cross_entropy_forward", "softmax_cross_entropy_backward",
    "rnn_cell_forward", "rnn_cell_backward", "lstm_cell_forward", "gru_cell_forward"})
_prefer_twin = frozenset()


def prefer_twins_where_faster(enabled):
    """Run the ops of :data:`TWIN_FASTER` as their NumPy twins (``enabled``) or natively; return
    the previous setting."""
    global _prefer_twin
    previous = bool(_prefer_twin)
    _prefer_twin = TWIN_FASTER if enabled else frozenset()
    _default_activation.cache_clear()
    return previous


@functools.cache
def _default_activation(name, direction):
    """``(kernel, parameter values)`` of an activation called without parameters (the usual
    call, kept cheap: it runs once per layer and step); kernel None: the twin runs it."""
    values = tuple(float(v) for v in resolve_activation_params(name, {}).values())
    op = f"{name}_{direction}"
    return (None if op in _prefer_twin else kernel(op)), values


def _activation(name, direction, params):
    if not params:
        return _default_activation(name, direction)
    values = tuple(float(v) for v in resolve_activation_params(name, params).values())
    op = f"{name}_{direction}"
    return (None if op in _prefer_twin else kernel(op)), values


def activation_forward(name, x, **params):
    """Return ``activation(x)``; see ``fused_numpy.activation_forward``."""
    launch, values = _activation(name, "forward", params)
    if launch is None:
        return _twin.activation_forward(name, x, **params)
    _check_float(name, x)
    return launch(x, *values)


def activation_backward(name, x, y, gy, **params):
    """Input gradient of activation ``name``; see ``fused_numpy.activation_backward``."""
    launch, values = _activation(name, "backward", params)
    if launch is None:
        return _twin.activation_backward(name, x, y, gy, **params)
    saved = y if ACTIVATION_BACKWARD_USES[name] == "y" else x
    if saved is None:
        raise ValueError(f"{name} backward needs {ACTIVATION_BACKWARD_USES[name]}")
    _check_float(name, saved, gy)
    return launch(saved, gy, *values)


# ---------------------------------------------------------------------------------------------
# softmax cross-entropy

def _as_target(t):
    return t if t.dtype in _TARGET_DTYPES else t.astype(np.int64)


def softmax_cross_entropy_forward(logits, targets, ignore_index=-100, label_smoothing=0.0):
    """Per-sample loss and log-sum-exp; see ``fused_numpy.softmax_cross_entropy_forward``.

    Row max (NumPy), sum of shifted exponentials (reduction kernel), loss and log-sum-exp
    (elementwise kernel over rows).
    """
    if "softmax_cross_entropy_forward" in _prefer_twin:
        return _twin.softmax_cross_entropy_forward(logits, targets, ignore_index, label_smoothing)
    _twin._check_targets(logits, targets)
    check_class_indices(targets, logits.shape[1], ignore_index, "target")
    logits = np.ascontiguousarray(logits)
    n, c = logits.shape
    acc = np.dtype(ACC_DTYPE[logits.dtype.name])
    row_max = logits.max(axis=1)
    sum_exp = np.empty(n, dtype=acc)
    kernel("softmax_cross_entropy_sum_exp")(logits, row_max[:, None], sum_exp)
    loss = np.empty(n, dtype=logits.dtype)
    lse = np.empty(n, dtype=acc)
    kernel("softmax_cross_entropy_loss")(logits, _as_target(targets), row_max, sum_exp, c,
                                         int(ignore_index), float(label_smoothing), loss, lse)
    return loss, lse


def softmax_cross_entropy_backward(logits, log_sum_exp, targets, grad_loss, ignore_index=-100,
                                   label_smoothing=0.0):
    """Gradient w.r.t. logits in one launch; see ``fused_numpy.softmax_cross_entropy_backward``."""
    if "softmax_cross_entropy_backward" in _prefer_twin:
        return _twin.softmax_cross_entropy_backward(logits, log_sum_exp, targets, grad_loss,
                                                    ignore_index, label_smoothing)
    _twin._check_targets(logits, targets)
    acc = np.dtype(ACC_DTYPE[logits.dtype.name])
    lse = log_sum_exp.astype(acc, copy=False)
    gloss = grad_loss.astype(logits.dtype, copy=False)
    return kernel("softmax_cross_entropy_backward")(
        logits, _as_target(targets)[:, None], lse[:, None], gloss[:, None], logits.shape[1],
        int(ignore_index), float(label_smoothing))


# ---------------------------------------------------------------------------------------------
# dropout

def _dropout_apply(x, p, seed, step):
    _twin._check_p(p)
    _check_float("dropout", x)
    return kernel("dropout")(x, seed & _MASK64, step & _MASK64, float(p))


def dropout_forward(x, p, seed, step):
    """Dropout with the counter-based mask of kernels/dropout.cuh; see ``fused_numpy``."""
    return _dropout_apply(x, p, seed, step)


def dropout_backward(gy, p, seed, step):
    """Gradient of :func:`dropout_forward` (recomputes the mask from seed, step and index)."""
    return _dropout_apply(gy, p, seed, step)


# ---------------------------------------------------------------------------------------------
# optimizers (one launch per parameter, in place)

def sgd_update(param, grad, momentum_buffer, *, lr, momentum=0.0, dampening=0.0,
               nesterov=False, weight_decay=0.0, first_step=False):
    """One SGD step in place; see ``fused_numpy.sgd_update``."""
    _check_float("sgd", param, grad)
    if momentum == 0.0:
        kernel("sgd")(grad, float(lr), float(weight_decay), param)
        return
    if momentum_buffer is None:
        raise ValueError("sgd_update: momentum != 0 needs a momentum_buffer")
    kernel("sgd_momentum")(grad, float(lr), float(momentum), float(dampening),
                           float(weight_decay), bool(nesterov), bool(first_step), param,
                           momentum_buffer)


def adam_update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq=None, *, step, lr=1e-3,
                beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False,
                decoupled=False):
    """One Adam/AdamW step in place; see ``fused_numpy.adam_update``."""
    _check_float("adam", param, grad)
    step_size, bias_correction2_sqrt = adam_bias_corrections(step, lr, beta1, beta2)
    scalars = (float(lr), float(beta1), float(beta2), float(eps), float(weight_decay),
               bool(decoupled), float(step_size), float(bias_correction2_sqrt))
    if amsgrad:
        if max_exp_avg_sq is None:
            raise ValueError("adam_update: amsgrad=True needs max_exp_avg_sq")
        kernel("adam_amsgrad")(grad, *scalars, param, exp_avg, exp_avg_sq, max_exp_avg_sq)
    else:
        kernel("adam")(grad, *scalars, param, exp_avg, exp_avg_sq)


# ---------------------------------------------------------------------------------------------
# recurrent cells: one launch per time step (kernels/rnn.cuh); see the fused_numpy twins

_ALL_VALID = 1 << 62  # a length no sequence reaches: every step valid


@functools.lru_cache(maxsize=64)
def _all_valid_lengths(batch):
    lengths = np.full(batch, _ALL_VALID, dtype=np.int64)
    lengths.flags.writeable = False
    return lengths


def _lengths(lengths, state):
    """The int64 lengths array the kernels read; None becomes a cached all-valid array."""
    return _all_valid_lengths(state.shape[0]) if lengths is None else lengths


def rnn_cell_forward(xw, hw, h_prev, h, *, lengths=None, t=0, relu=False):
    """Elman RNN step; see ``fused_numpy.rnn_cell_forward``."""
    if "rnn_cell_forward" in _prefer_twin:
        return _twin.rnn_cell_forward(xw, hw, h_prev, h, lengths=lengths, t=t, relu=relu)
    _check_float("rnn_cell_forward", xw, hw, h_prev)
    kernel("rnn_cell_forward")(xw, hw, h_prev, _lengths(lengths, h), h.shape[-1], int(t),
                               bool(relu), h)


def rnn_cell_backward(h, dy, dh_rec, dh, dpre, *, lengths=None, t=0, relu=False):
    """Gradient of the RNN step; see ``fused_numpy.rnn_cell_backward``."""
    if "rnn_cell_backward" in _prefer_twin:
        return _twin.rnn_cell_backward(h, dy, dh_rec, dh, dpre, lengths=lengths, t=t, relu=relu)
    _check_float("rnn_cell_backward", h, dy, dh_rec, dh)
    kernel("rnn_cell_backward")(h, dy, dh_rec, _lengths(lengths, dh), dh.shape[-1], int(t),
                                bool(relu), dh, dpre)


def lstm_cell_forward(gates, hw, c_prev, h_prev, c, h, tanh_c, *, lengths=None, t=0):
    """LSTM step; see ``fused_numpy.lstm_cell_forward``."""
    if "lstm_cell_forward" in _prefer_twin:
        return _twin.lstm_cell_forward(gates, hw, c_prev, h_prev, c, h, tanh_c, lengths=lengths, t=t)
    _check_float("lstm_cell_forward", gates, hw, c_prev, h_prev)
    kernel("lstm_cell_forward")(hw, c_prev, h_prev, _lengths(lengths, c), c.shape[-1], int(t),
                                gates, c, h, tanh_c)


def lstm_cell_backward(act, c_prev, tanh_c, dy, dh_rec, dh, dc, dgates, *, lengths=None, t=0):
    """Gradient of the LSTM step; see ``fused_numpy.lstm_cell_backward``."""
    _check_float("lstm_cell_backward", act, c_prev, tanh_c, dy, dh_rec, dh, dc)
    kernel("lstm_cell_backward")(act, c_prev, tanh_c, dy, dh_rec, _lengths(lengths, dc),
                                 dc.shape[-1], int(t), dh, dc, dgates)


def gru_cell_forward(xw, hw, bias_hh, h_prev, act, h, *, lengths=None, t=0):
    """GRU step; see ``fused_numpy.gru_cell_forward``."""
    if "gru_cell_forward" in _prefer_twin:
        return _twin.gru_cell_forward(xw, hw, bias_hh, h_prev, act, h, lengths=lengths, t=t)
    _check_float("gru_cell_forward", xw, hw, bias_hh, h_prev)
    kernel("gru_cell_forward")(xw, hw, bias_hh, h_prev, _lengths(lengths, h), h.shape[-1],
                               int(t), act, h)


def gru_cell_backward(act, h_prev, dy, dh_rec, dh, dgx, dgh, *, lengths=None, t=0):
    """Gradient of the GRU step; see ``fused_numpy.gru_cell_backward``."""
    _check_float("gru_cell_backward", act, h_prev, dy, dh_rec, dh)
    kernel("gru_cell_backward")(act, h_prev, dy, dh_rec, _lengths(lengths, dh), dh.shape[-1],
                                int(t), dh, dgx, dgh)


# ---------------------------------------------------------------------------------------------
# masked softmax of attention: one launch over the rows of scores (kernels/attention.cuh)

_NO_MASK = np.zeros(1, dtype=np.bool_)


def masked_softmax_forward(scores, mask=None, *, scale=1.0, causal=False):
    """Overwrite ``scores`` with the masked softmax; see ``masked_softmax.masked_softmax_forward``."""
    return launch_forward(kernel("masked_softmax_forward"), np, _NO_MASK, scores, mask, scale, causal)


def masked_softmax_backward(probs, grad, *, scale=1.0, causal=False):
    """Overwrite ``grad`` with the scores' gradient; see ``masked_softmax.masked_softmax_backward``."""
    return launch_backward(kernel("masked_softmax_backward"), probs, grad, scale, causal)


def __getattr__(name):
    """An op without a native launch here yet runs as its NumPy twin, so a new op works at once."""
    return getattr(_twin, name)
