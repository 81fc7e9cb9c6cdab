"""Fused ops on CuPy arrays: one ElementwiseKernel launch per op, built from ``kernel_specs``.

Same functions and signatures as ``fused_numpy``. Kernels are created once per process
(``functools.cache``; CuPy compiles lazily on first launch and caches per device and on disk).
CuPy is imported only here. The launches made are those listed in ``kernel_specs.SIGNATURES``
(targets of other integer dtypes are cast to int64, and logits are made contiguous), so the
NVRTC check in tests/kernels covers them; tests/test_launches.py checks this on every launch of
training the models through the CuPy test double.
"""
import functools
import os
import threading

import numpy

import cupy

from gpudl.backend import fused_numpy as _host
from gpudl.backend.kernel_specs import (ACC_DTYPE, ACTIVATION_BACKWARD_USES, KERNELS,
                                        adam_bias_corrections)

_MASK64 = (1 << 64) - 1
_NO_IGNORE = -(1 << 63)
_TARGET_DTYPES = frozenset(numpy.dtype(d) for d in ("int32", "int64", "uint8", "int16"))
resolve_activation_params = _host.resolve_activation_params
_check_float = _host._check_float  # validation only looks at dtypes and shapes: shared with the host twin
_check_targets = _host._check_targets


@functools.cache
def kernel(name):
    """The CuPy kernel object for spec ``name`` of ``kernel_specs.KERNELS`` (memoized)."""
    spec = dict(KERNELS[name])
    if spec.pop("kind") == "reduction":
        return cupy.ReductionKernel(
            spec["in_params"], spec["out_params"], spec["map_expr"], spec["reduce_expr"],
            spec["post_map_expr"], spec["identity"], spec["name"],
            reduce_type=spec["reduce_type"], preamble=spec["preamble"])
    return cupy.ElementwiseKernel(**spec)


def activation_forward(name, x, **params):
    """Return ``activation(x)``; see ``fused_numpy.activation_forward``."""
    params = resolve_activation_params(name, params)
    _check_float(name, x)
    return kernel(f"{name}_forward")(x, *(float(v) for v in params.values()))


def activation_backward(name, x, y, gy, **params):
    """Input gradient of activation ``name``; see ``fused_numpy.activation_backward``."""
    params = resolve_activation_params(name, params)
    saved = y if ACTIVATION_BACKWARD_USES[name] == "y" else x
    if saved is None:
        raise ValueError(f"{name} backward needs {ACTIVATION_BACKWARD_USES[name]}")
    _check_float(name, saved, gy)
    return kernel(f"{name}_backward")(saved, gy, *(float(v) for v in params.values()))


# ---------------------------------------------------------------------------------------------
# device-side index checks

class _ErrorLog:
    """The device-side index checks of one thread on one device that nobody has read yet.

    Row ``k`` of ``flags`` (int64 ``[capacity, 2]`` on the device) is written by check ``k``
    (``[1, offending value]``, or left zero); ``checks[k]`` says what it checked. The buffer grows
    on the device when full, so no check ever forces a synchronisation."""

    def __init__(self):
        self.flags = None
        self.checks = []

    def next_row(self):
        """The flag row for the next check (a view into ``flags``)."""
        used = len(self.checks)
        if self.flags is None or used == self.flags.shape[0]:
            grown = cupy.zeros((max(64, 2 * used), 2), dtype=numpy.int64)
            if used:
                grown[:used] = self.flags
            self.flags = grown
        return self.flags[used]


_threads = threading.local()  # .logs: {device id: _ErrorLog}, so one thread never sees another's


def _error_logs():
    logs = getattr(_threads, "logs", None)
    if logs is None:
        logs = _threads.logs = {}
    return logs


def sync_checks():
    """True when ``GPUDL_SYNC_CHECKS=1``: read every device check right after its launch (a debug
    mode, like ``CUDA_LAUNCH_BLOCKING=1``: the error points at the op, each check costs a sync)."""
    return os.environ.get("GPUDL_SYNC_CHECKS") == "1"


def check_class_indices(indices, num_classes, ignore_index=None, what="target"):
    """Check on the device that ``indices`` lie in ``[0, num_classes)`` (or are ``ignore_index``).

    Launches one kernel that writes ``[1, offending value]`` into this thread's error log; no
    host synchronisation. The error is raised (IndexError, same message as NumPy) at the thread's
    next host synchronisation (``backend.to_host``/``item``/``synchronize``: ``.item()``,
    ``.numpy()``, ``float()``...) or by :func:`raise_pending_device_errors`; at once with
    ``GPUDL_SYNC_CHECKS=1``. A non-integer dtype raises ValueError at once.
    """
    if indices.dtype.kind not in "iu":
        raise ValueError(f"{what} indices must be an integer array, got dtype {indices.dtype}")
    if indices.size == 0:
        return
    indices = _as_target(indices)
    ignore = _NO_IGNORE if ignore_index is None else int(ignore_index)
    log = _error_logs().setdefault(indices.device.id, _ErrorLog())
    kernel("check_class_indices")(indices, int(num_classes), ignore, log.next_row())
    log.checks.append((num_classes, ignore_index, what))
    if sync_checks():
        raise_pending_device_errors()


def raise_pending_device_errors():
    """Read this thread's device error flags recorded since the last call and raise the first.

    Costs one small device-to-host copy per device with unread checks, nothing otherwise: call it
    where the host waits for the device anyway. Raises IndexError naming the offending value and
    the valid range, as NumPy would have.
    """
    for device_id, log in _error_logs().items():
        used = len(log.checks)
        if not used:
            continue
        with cupy.cuda.Device(device_id):
            flags = log.flags[:used].get()
            log.flags[:used] = 0
        checks, log.checks = log.checks, []
        for (flag, value), (num_classes, ignore_index, what) in zip(flags, checks):
            if flag:
                raise IndexError(_host.invalid_index_message(what, int(value), num_classes,
                                                             ignore_index))


# ---------------------------------------------------------------------------------------------
# softmax cross-entropy

def _as_target(t):
    t = cupy.ascontiguousarray(t)
    return t if t.dtype in _TARGET_DTYPES else t.astype(numpy.int64)


def softmax_cross_entropy_forward(logits, targets, ignore_index=-100, label_smoothing=0.0):
    """Per-sample loss and log-sum-exp; see ``fused_numpy.softmax_cross_entropy_forward``.

    Three launches: row max (CuPy), sum of shifted exponentials (ReductionKernel), loss and
    log-sum-exp (ElementwiseKernel). Invalid targets are reported through the device error flag
    (:func:`raise_pending_device_errors`); their loss is NaN.
    """
    _check_targets(logits, targets)
    check_class_indices(targets, logits.shape[1], ignore_index, "target")
    logits = cupy.ascontiguousarray(logits)
    targets = _as_target(targets)
    n, c = logits.shape
    acc = numpy.dtype(ACC_DTYPE[logits.dtype.name])
    row_max = logits.max(axis=1)
    sum_exp = cupy.empty(n, dtype=acc)
    kernel("softmax_cross_entropy_sum_exp")(logits, row_max[:, None], axis=1, out=sum_exp)
    loss = cupy.empty(n, dtype=logits.dtype)
    lse = cupy.empty(n, dtype=acc)
    kernel("softmax_cross_entropy_loss")(logits, targets, row_max, sum_exp, c, int(ignore_index),
                                         float(label_smoothing), loss, lse)
    return loss, lse


def softmax_cross_entropy_backward(logits, log_sum_exp, targets, grad_loss, ignore_index=-100,
                                   label_smoothing=0.0):
    """Gradient w.r.t. logits in one launch; see ``fused_numpy.softmax_cross_entropy_backward``."""
    _check_targets(logits, targets)
    logits = cupy.ascontiguousarray(logits)
    acc = numpy.dtype(ACC_DTYPE[logits.dtype.name])
    lse = log_sum_exp.astype(acc, copy=False)
    gloss = grad_loss.astype(logits.dtype, copy=False)
    return kernel("softmax_cross_entropy_backward")(
        logits, _as_target(targets)[:, None], lse[:, None], gloss[:, None], logits.shape[1],
        int(ignore_index), float(label_smoothing))


# ---------------------------------------------------------------------------------------------
# dropout

def _dropout_apply(x, p, seed, step):
    _host._check_p(p)
    _check_float("dropout", x)
    return kernel("dropout")(x, numpy.uint64(seed & _MASK64), numpy.uint64(step & _MASK64),
                             float(p))


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
def _all_valid_lengths(device_id, batch):
    with cupy.cuda.Device(device_id):
        return cupy.full(batch, _ALL_VALID, dtype=numpy.int64)


def _lengths(lengths, state):
    """The int64 lengths array the kernels read; None becomes a cached all-valid array."""
    if lengths is None:
        return _all_valid_lengths(state.device.id, state.shape[0])
    return lengths


def _flat(name, *arrays):
    """[B, H] state arrays as the 1-D views the kernels are launched with (``SIGNATURES``)."""
    for a in arrays:
        if not a.flags.c_contiguous:
            raise ValueError(f"{name}: state arrays must be C-contiguous, got strides {a.strides}")
    return [a.reshape(-1) for a in arrays]


def rnn_cell_forward(xw, hw, h_prev, h, *, lengths=None, t=0, relu=False):
    """Elman RNN step; see ``fused_numpy.rnn_cell_forward``."""
    _check_float("rnn_cell_forward", xw, hw, h_prev)
    xw, hw, h_prev, h_out = _flat("rnn_cell_forward", xw, hw, h_prev, h)
    kernel("rnn_cell_forward")(xw, hw, h_prev, _lengths(lengths, h), h.shape[-1], int(t),
                               bool(relu), h_out)


def rnn_cell_backward(h, dy, dh_rec, dh, dpre, *, lengths=None, t=0, relu=False):
    """Gradient of the RNN step; see ``fused_numpy.rnn_cell_backward``."""
    _check_float("rnn_cell_backward", h, dy, dh_rec, dh)
    flat = _flat("rnn_cell_backward", h, dy, dh_rec, dh, dpre)
    kernel("rnn_cell_backward")(*flat[:3], _lengths(lengths, dh), dh.shape[-1], int(t),
                                bool(relu), *flat[3:])


def lstm_cell_forward(gates, hw, c_prev, h_prev, c, h, tanh_c, *, lengths=None, t=0):
    """LSTM step; see ``fused_numpy.lstm_cell_forward``."""
    _check_float("lstm_cell_forward", gates, hw, c_prev, h_prev)
    c_prev, h_prev, c_out, h_out, tc_out = _flat("lstm_cell_forward", c_prev, h_prev, c, h, tanh_c)
    kernel("lstm_cell_forward")(hw, c_prev, h_prev, _lengths(lengths, c), c.shape[-1], int(t),
                                gates, c_out, h_out, tc_out)


def lstm_cell_backward(act, c_prev, tanh_c, dy, dh_rec, dh, dc, dgates, *, lengths=None, t=0):
    """Gradient of the LSTM step; see ``fused_numpy.lstm_cell_backward``."""
    _check_float("lstm_cell_backward", act, c_prev, tanh_c, dy, dh_rec, dh, dc)
    flat = _flat("lstm_cell_backward", c_prev, tanh_c, dy, dh_rec, dh, dc)
    kernel("lstm_cell_backward")(act, *flat[:4], _lengths(lengths, dc), dc.shape[-1], int(t),
                                 *flat[4:], dgates)


def gru_cell_forward(xw, hw, bias_hh, h_prev, act, h, *, lengths=None, t=0):
    """GRU step; see ``fused_numpy.gru_cell_forward``."""
    _check_float("gru_cell_forward", xw, hw, bias_hh, h_prev)
    h_prev, h_out = _flat("gru_cell_forward", h_prev, h)
    kernel("gru_cell_forward")(xw, hw, bias_hh, h_prev, _lengths(lengths, h), h.shape[-1],
                               int(t), act, h_out)


def gru_cell_backward(act, h_prev, dy, dh_rec, dh, dgx, dgh, *, lengths=None, t=0):
    """Gradient of the GRU step; see ``fused_numpy.gru_cell_backward``."""
    _check_float("gru_cell_backward", act, h_prev, dy, dh_rec, dh)
    flat = _flat("gru_cell_backward", h_prev, dy, dh_rec, dh)
    kernel("gru_cell_backward")(act, *flat[:3], _lengths(lengths, dh), dh.shape[-1], int(t),
                                flat[3], dgx, dgh)


# masked softmax of attention (kernels/attention.cuh), in a module of its own that uses kernel() above
from gpudl.backend.masked_softmax_cupy import masked_softmax_backward, masked_softmax_forward  # noqa: E402,F401
