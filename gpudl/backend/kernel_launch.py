"""How the fused ops launch their kernels, written once for both kernel runners.

CuPy's kernels on the GPU (``fused_cupy``) and the same specs compiled for the host
(``fused_native``) take the same arguments, so one launch sequence serves both. A
:class:`Launcher` holds what differs: the kernel lookup, how a uint64 scalar is passed and the
all-valid lengths array of the recurrent cells. The errors are the NumPy twins' (``fused_numpy``).
"""
import functools

import numpy

from gpudl.backend import fused_numpy as _twin
from gpudl.backend.kernel_specs import ACC_DTYPE, KERNELS, adam_bias_corrections

_MASK64 = (1 << 64) - 1
_TARGET_DTYPES = frozenset(numpy.dtype(d) for d in ("int32", "int64", "uint8", "int16"))
_check_float = _twin._check_float


def sgd_arguments(grad, param, momentum_buffer, *, lr, momentum=0.0, dampening=0.0, nesterov=False,
                  weight_decay=0.0, first_step=False):
    """``(kernel name, arrays, scalars)`` of an SGD update (see ``fused_numpy.sgd_update``): the
    optimizer kernel of ``kernel_specs``, its array arguments and its scalar arguments, each in
    the spec's order. The arrays may be single arrays or lists of them (the foreach form)."""
    if momentum == 0.0:
        return "sgd", (grad, param), (float(lr), float(weight_decay))
    if momentum_buffer is None:
        raise ValueError("sgd_update: momentum != 0 needs a momentum_buffer")
    return "sgd_momentum", (grad, param, momentum_buffer), (
        float(lr), float(momentum), float(dampening), float(weight_decay), bool(nesterov), bool(first_step))


def adam_arguments(grad, param, exp_avg, exp_avg_sq, max_exp_avg_sq=None, *, step, lr=1e-3, beta1=0.9,
                   beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False, decoupled=False):
    """``(kernel name, arrays, scalars)`` of an Adam/AdamW update (see ``fused_numpy.adam_update``),
    as :func:`sgd_arguments`."""
    step_size, bias_correction2_sqrt = adam_bias_corrections(step, lr, beta1, beta2)
    scalars = (float(lr), float(beta1), float(beta2), float(eps), float(weight_decay), bool(decoupled),
               float(step_size), float(bias_correction2_sqrt))
    if not amsgrad:
        return "adam", (grad, param, exp_avg, exp_avg_sq), scalars
    if max_exp_avg_sq is None:
        raise ValueError("adam_update: amsgrad=True needs max_exp_avg_sq")
    return "adam_amsgrad", (grad, param, exp_avg, exp_avg_sq, max_exp_avg_sq), scalars


def spec_order(op, arrays, scalars):
    """The positional arguments of kernel ``op``: ``arrays`` and ``scalars`` interleaved as the
    spec's parameters list them (optimizer specs: ``grad``, the scalars, then the outputs)."""
    arrays, scalars = iter(arrays), iter(scalars)
    return [next(arrays) if is_array else next(scalars) for is_array in _array_params(op)]


@functools.cache
def _array_params(op):
    """Per parameter of kernel ``op``, in order: True for an array (a type letter such as ``T``),
    False for a scalar (a fixed dtype such as ``float64``)."""
    return tuple(len(p.split()[-2]) == 1 for p in
                 (KERNELS[op]["in_params"] + ", " + KERNELS[op]["out_params"]).split(", "))


def _flat(name, *arrays):
    """[B, H] state arrays as the 1-D views the kernels are launched with (``SIGNATURES``)."""
    for a in arrays:
        if not a.flags.c_contiguous:
            raise ValueError(f"{name}: state arrays must be C-contiguous, got strides {a.strides}")
    return [a.reshape(-1) for a in arrays]


class Launcher:
    """The launches of the softmax cross-entropy, dropout, optimizer and recurrent-cell ops for
    one kernel runner.

    ``kernel(name)`` returns the kernel of ``kernel_specs.KERNELS[name]``; ``xp`` is the array
    module; ``uint64(v)`` makes the scalar the runner passes for a ``uint64`` parameter;
    ``all_valid_lengths(state)`` returns an int64 array of the state's batch size whose every row
    is valid (for ``lengths=None``); ``check_class_indices`` is the runner's target check.
    """

    def __init__(self, kernel, xp, uint64, all_valid_lengths, check_class_indices):
        self.kernel, self.xp, self.uint64 = kernel, xp, uint64
        self.all_valid_lengths, self.check_class_indices = all_valid_lengths, check_class_indices

    def _lengths(self, lengths, state):
        return self.all_valid_lengths(state) if lengths is None else lengths

    def as_target(self, t):
        """Class targets as the kernels take them: C-contiguous, of a listed integer dtype."""
        t = self.xp.ascontiguousarray(t)
        return t if t.dtype in _TARGET_DTYPES else t.astype(numpy.int64)

    # softmax cross-entropy ---------------------------------------------------------------------
    def softmax_cross_entropy_forward(self, logits, targets, ignore_index=-100,
                                      label_smoothing=0.0):
        """Per-sample loss and log-sum-exp; see ``fused_numpy.softmax_cross_entropy_forward``.

        Three launches: row max (the array module), sum of shifted exponentials (reduction
        kernel), loss and log-sum-exp (elementwise kernel). On the GPU invalid targets are
        reported through the device error flag (``raise_pending_device_errors``); their loss is
        NaN.
        """
        _twin._check_targets(logits, targets)
        self.check_class_indices(targets, logits.shape[1], ignore_index, "target")
        xp = self.xp
        logits = xp.ascontiguousarray(logits)
        n, c = logits.shape
        acc = numpy.dtype(ACC_DTYPE[logits.dtype.name])
        row_max = logits.max(axis=1)
        sum_exp = xp.empty(n, dtype=acc)
        self.kernel("softmax_cross_entropy_sum_exp")(logits, row_max[:, None], axis=1, out=sum_exp)
        loss = xp.empty(n, dtype=logits.dtype)
        lse = xp.empty(n, dtype=acc)
        self.kernel("softmax_cross_entropy_loss")(logits, self.as_target(targets), row_max,
                                                  sum_exp, c, int(ignore_index),
                                                  float(label_smoothing), loss, lse)
        return loss, lse

    def softmax_cross_entropy_backward(self, logits, log_sum_exp, targets, grad_loss,
                                       ignore_index=-100, label_smoothing=0.0):
        """Gradient w.r.t. logits in one launch; see
        ``fused_numpy.softmax_cross_entropy_backward``."""
        _twin._check_targets(logits, targets)
        logits = self.xp.ascontiguousarray(logits)
        acc = numpy.dtype(ACC_DTYPE[logits.dtype.name])
        lse = log_sum_exp.astype(acc, copy=False)
        gloss = grad_loss.astype(logits.dtype, copy=False)
        return self.kernel("softmax_cross_entropy_backward")(
            logits, self.as_target(targets)[:, None], lse[:, None], gloss[:, None],
            logits.shape[1], int(ignore_index), float(label_smoothing))

    # dropout ---------------------------------------------------------------------------------
    def dropout_forward(self, x, p, seed, step):
        """Dropout with the counter-based mask of kernels/dropout.cuh; see ``fused_numpy``."""
        _twin._check_p(p)
        _check_float("dropout", x)
        return self.kernel("dropout")(x, self.uint64(seed & _MASK64), self.uint64(step & _MASK64),
                                      float(p))

    def dropout_backward(self, gy, p, seed, step):
        """Gradient of :meth:`dropout_forward`: the same mask (recomputed from seed, step and
        index) and scale, applied to ``gy``."""
        return self.dropout_forward(gy, p, seed, step)

    # optimizers (one launch per parameter, in place) --------------------------------------------
    def sgd_update(self, param, grad, momentum_buffer, *, lr, momentum=0.0, dampening=0.0,
                   nesterov=False, weight_decay=0.0, first_step=False):
        """One SGD step in place; see ``fused_numpy.sgd_update``."""
        _check_float("sgd", param, grad)
        op, arrays, scalars = sgd_arguments(grad, param, momentum_buffer, lr=lr, momentum=momentum,
                                            dampening=dampening, nesterov=nesterov,
                                            weight_decay=weight_decay, first_step=first_step)
        self.kernel(op)(*spec_order(op, arrays, scalars))

    def adam_update(self, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq=None, *, step, lr=1e-3,
                    beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False,
                    decoupled=False):
        """One Adam/AdamW step in place; see ``fused_numpy.adam_update``."""
        _check_float("adam", param, grad)
        op, arrays, scalars = adam_arguments(grad, param, exp_avg, exp_avg_sq, max_exp_avg_sq, step=step,
                                             lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                                             weight_decay=weight_decay, amsgrad=amsgrad, decoupled=decoupled)
        self.kernel(op)(*spec_order(op, arrays, scalars))

    # recurrent cells: one launch per time step (kernels/rnn.cuh) ---------------------------------
    def rnn_cell_forward(self, xw, hw, h_prev, h, *, lengths=None, t=0, relu=False):
        """Elman RNN step; see ``fused_numpy.rnn_cell_forward``."""
        _check_float("rnn_cell_forward", xw, hw, h_prev)
        xw, hw, h_prev, h_out = _flat("rnn_cell_forward", xw, hw, h_prev, h)
        self.kernel("rnn_cell_forward")(xw, hw, h_prev, self._lengths(lengths, h), h.shape[-1],
                                        int(t), bool(relu), h_out)

    def rnn_cell_backward(self, h, dy, dh_rec, dh, dpre, *, lengths=None, t=0, relu=False):
        """Gradient of the RNN step; see ``fused_numpy.rnn_cell_backward``."""
        _check_float("rnn_cell_backward", h, dy, dh_rec, dh)
        flat = _flat("rnn_cell_backward", h, dy, dh_rec, dh, dpre)
        self.kernel("rnn_cell_backward")(*flat[:3], self._lengths(lengths, dh), dh.shape[-1],
                                         int(t), bool(relu), *flat[3:])

    def lstm_cell_forward(self, gates, hw, c_prev, h_prev, c, h, tanh_c, *, lengths=None, t=0):
        """LSTM step; see ``fused_numpy.lstm_cell_forward``."""
        _check_float("lstm_cell_forward", gates, hw, c_prev, h_prev)
        c_prev, h_prev, c_out, h_out, tc_out = _flat("lstm_cell_forward", c_prev, h_prev, c, h,
                                                     tanh_c)
        self.kernel("lstm_cell_forward")(hw, c_prev, h_prev, self._lengths(lengths, c),
                                         c.shape[-1], int(t), gates, c_out, h_out, tc_out)

    def lstm_cell_backward(self, act, c_prev, tanh_c, dy, dh_rec, dh, dc, dgates, *, lengths=None,
                           t=0):
        """Gradient of the LSTM step; see ``fused_numpy.lstm_cell_backward``."""
        _check_float("lstm_cell_backward", act, c_prev, tanh_c, dy, dh_rec, dh, dc)
        flat = _flat("lstm_cell_backward", c_prev, tanh_c, dy, dh_rec, dh, dc)
        self.kernel("lstm_cell_backward")(act, *flat[:4], self._lengths(lengths, dc),
                                          dc.shape[-1], int(t), *flat[4:], dgates)

    def gru_cell_forward(self, xw, hw, bias_hh, h_prev, act, h, *, lengths=None, t=0):
        """GRU step; see ``fused_numpy.gru_cell_forward``."""
        _check_float("gru_cell_forward", xw, hw, bias_hh, h_prev)
        h_prev, h_out = _flat("gru_cell_forward", h_prev, h)
        self.kernel("gru_cell_forward")(xw, hw, bias_hh, h_prev, self._lengths(lengths, h),
                                        h.shape[-1], int(t), act, h_out)

    def gru_cell_backward(self, act, h_prev, dy, dh_rec, dh, dgx, dgh, *, lengths=None, t=0):
        """Gradient of the GRU step; see ``fused_numpy.gru_cell_backward``."""
        _check_float("gru_cell_backward", act, h_prev, dy, dh_rec, dh)
        flat = _flat("gru_cell_backward", h_prev, dy, dh_rec, dh)
        self.kernel("gru_cell_backward")(act, *flat[:3], self._lengths(lengths, dh), dh.shape[-1],
                                         int(t), flat[3], dgx, dgh)
