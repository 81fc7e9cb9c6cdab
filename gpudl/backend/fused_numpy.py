"""Fused ops on NumPy arrays: the CPU twin of ``fused_cupy``.

Every function computes exactly the math of the kernel in ``kernels/*.cuh`` (same operation
order, same accumulate type: float32 for float16, otherwise the array's own dtype), so the host
check in ``tests/kernels`` can compare them element for element. Outputs keep the input dtype
(NEP 50: scalars enter as ``dtype.type(v)``). The functions are pure functions on arrays, except
the optimizer updates, which work in place.
"""
import math

import numpy as np

from gpudl.backend.buffer_pool import POOL
from gpudl.backend.device import CPU
from gpudl.backend.erf import erf as _erf64
from gpudl.backend.masked_softmax import masked_softmax_backward, masked_softmax_forward  # noqa: F401 (attention)
from gpudl.backend.layer_norm_kernels import layer_norm_backward, layer_norm_forward  # noqa: F401 (LayerNorm)
from gpudl.backend.conv_kernels import col2im, im2col  # noqa: F401 (Conv2d)
from gpudl.backend.pooling_kernels import max_pool2d_backward, max_pool2d_forward  # noqa: F401 (MaxPool2d)
from gpudl.backend.kernel_specs import (ACTIVATION_BACKWARD_USES, ACTIVATION_PARAMS, ACTIVATIONS,
                                        adam_bias_corrections)

_FLOAT16 = np.dtype(np.float16)
_FLOAT32 = np.dtype(np.float32)
_FLOAT_DTYPES = (_FLOAT16, _FLOAT32, np.dtype(np.float64))
_MASK64 = (1 << 64) - 1
_NO_IGNORE = -(1 << 63)  # ignore_index=None: a value no real target takes

_SQRT1_2 = 0.70710678118654752440
_INV_SQRT_2PI = 0.39894228040143267794
_SQRT_2_OVER_PI = 0.79788456080286535588
_GELU_KAPPA = 0.044715


# ---------------------------------------------------------------------------------------------
# helpers

def _acc(a):
    """``a`` in its accumulate dtype (a float32 copy for float16, else ``a`` itself)."""
    return a.astype(np.float32) if a.dtype == _FLOAT16 else a


def _check_float(name, *arrays):
    for a in arrays:
        if a is not None and a.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{name}: expected a float16/float32/float64 array, got {a.dtype}")


def resolve_activation_params(name, params):
    """Return the activation's parameters with PyTorch's defaults filled in.

    Raises ValueError for an unknown activation (listing the valid names) and TypeError for a
    parameter the activation does not take. Shared by both backends.
    """
    try:
        defaults = ACTIVATION_PARAMS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown activation {name!r}; valid names: "
                         f"{', '.join(ACTIVATIONS)}") from None
    unexpected = set(params) - set(defaults)
    if unexpected:
        takes = ", ".join(defaults) or "no parameters"
        raise TypeError(f"activation {name!r} got unexpected parameter(s) "
                        f"{', '.join(sorted(unexpected))}; it takes {takes}")
    return {**defaults, **params}


def _erf(a):
    """erf in the accumulate dtype of ``a`` (float64 math, rounded once)."""
    return _erf64(a).astype(a.dtype, copy=False)


# ---------------------------------------------------------------------------------------------
# activations: each takes and returns arrays in the accumulate dtype

def _relu(x):
    return np.maximum(x, x.dtype.type(0))  # NaN stays NaN; -0.0 becomes +0.0, as the kernel


def _relu_backward(y, gy):
    return gy * (y > 0)


def _leaky_relu(x, negative_slope):
    return np.where(x > 0, x, x * x.dtype.type(negative_slope))


def _leaky_relu_backward(x, gy, negative_slope):
    return np.where(x > 0, gy, gy * gy.dtype.type(negative_slope))


def _elu(x, alpha):
    t = np.expm1(x)
    t *= x.dtype.type(alpha)
    return np.where(x <= 0, t, x)


def _elu_backward(x, gy, alpha):
    t = gy * gy.dtype.type(alpha)
    t *= np.exp(x)
    return np.where(x <= 0, t, gy)


def _sigmoid(x, out=None):
    t = np.negative(x, out=out)
    np.exp(t, out=t)
    t += 1
    return np.divide(1, t, out=t)


def _sigmoid_backward(y, gy, out=None):  # out (optional) must alias neither y nor gy
    t = np.subtract(1, y, out=out)
    np.multiply(gy, t, out=t)
    t *= y
    return t


def _tanh(x):
    return np.tanh(x)


def _tanh_backward(y, gy, out=None):  # out (optional) must alias neither y nor gy
    t = np.multiply(y, y, out=out)
    np.subtract(1, t, out=t)
    np.multiply(gy, t, out=t)
    return t


def _softplus(x, beta, threshold):
    A = x.dtype.type
    xb = x * A(beta)
    t = np.exp(xb)
    np.log1p(t, out=t)
    t /= A(beta)
    return np.where(xb > A(threshold), x, t)


def _softplus_backward(x, gy, beta, threshold):
    A = x.dtype.type
    xb = x * A(beta)
    z = np.exp(xb)
    t = gy * z
    z += 1
    t /= z
    return np.where(xb > A(threshold), gy, t)


def _gelu(x):
    A = x.dtype.type
    t = _erf(x * A(_SQRT1_2))
    t += 1
    u = x * A(0.5)
    u *= t
    return u


def _gelu_backward(x, gy):
    A = x.dtype.type
    cdf = _erf(x * A(_SQRT1_2))
    cdf += 1
    cdf *= A(0.5)
    pdf = x * A(-0.5)
    pdf *= x
    np.exp(pdf, out=pdf)
    pdf *= A(_INV_SQRT_2PI)
    pdf *= x
    cdf += pdf
    return np.multiply(gy, cdf, out=cdf)


def _gelu_tanh(x):
    A = x.dtype.type
    t = x * x
    t *= x
    t *= A(_GELU_KAPPA)
    t += x
    t *= A(_SQRT_2_OVER_PI)
    np.tanh(t, out=t)
    t += 1
    u = x * A(0.5)
    u *= t
    return u


def _gelu_tanh_backward(x, gy):
    A = x.dtype.type
    x_sq = x * x
    inner = x_sq * x
    inner *= A(_GELU_KAPPA)
    inner += x
    inner *= A(_SQRT_2_OVER_PI)
    th = np.tanh(inner, out=inner)
    left = np.add(1, th)
    left *= A(0.5)                                   # left_derivative
    inner_derivative = x_sq
    inner_derivative *= A(3 * _GELU_KAPPA)
    inner_derivative += 1
    inner_derivative *= A(_SQRT_2_OVER_PI)
    right = x * A(0.5)
    th *= th
    np.subtract(1, th, out=th)
    right *= th
    right *= inner_derivative                        # right_derivative
    left += right
    return np.multiply(gy, left, out=left)


def _silu(x):
    t = np.negative(x)
    np.exp(t, out=t)
    t += 1
    return np.divide(x, t, out=t)


def _silu_backward(x, gy):
    s = np.negative(x)
    np.exp(s, out=s)
    s += 1
    np.divide(1, s, out=s)
    t = np.subtract(1, s)
    t *= x
    t += 1
    s = np.multiply(gy, s, out=s)
    s *= t
    return s


_FORWARD = {"relu": _relu, "leaky_relu": _leaky_relu, "elu": _elu, "sigmoid": _sigmoid,
            "tanh": _tanh, "softplus": _softplus, "gelu": _gelu, "gelu_tanh": _gelu_tanh,
            "silu": _silu}
_BACKWARD = {"relu": _relu_backward, "leaky_relu": _leaky_relu_backward,
             "elu": _elu_backward, "sigmoid": _sigmoid_backward, "tanh": _tanh_backward,
             "softplus": _softplus_backward, "gelu": _gelu_backward,
             "gelu_tanh": _gelu_tanh_backward, "silu": _silu_backward}


def activation_forward(name, x, **params):
    """Return ``activation(x)`` for ``name`` in ``ACTIVATIONS`` (dtype of ``x``).

    Parameters (PyTorch defaults): ``negative_slope=0.01`` (leaky_relu), ``alpha=1.0`` (elu),
    ``beta=1.0, threshold=20.0`` (softplus). Unknown ``name`` raises ValueError.
    """
    params = resolve_activation_params(name, params)
    _check_float(name, x)
    if name == "relu":  # exact in any dtype
        return _relu(x)
    with np.errstate(all="ignore"):
        return _FORWARD[name](_acc(x), **params).astype(x.dtype, copy=False)


def activation_backward(name, x, y, gy, **params):
    """Return the input gradient of activation ``name`` given upstream gradient ``gy``.

    Needs ``y`` (the forward output) for relu, sigmoid and tanh and ``x`` for the others
    (``ACTIVATION_BACKWARD_USES``); the one not needed may be None. dtype of ``gy``.
    """
    params = resolve_activation_params(name, params)
    saved = y if ACTIVATION_BACKWARD_USES[name] == "y" else x
    if saved is None:
        raise ValueError(f"{name} backward needs {ACTIVATION_BACKWARD_USES[name]}")
    _check_float(name, saved, gy)
    if name == "relu":
        return _relu_backward(saved, gy)
    with np.errstate(all="ignore"):
        return _BACKWARD[name](_acc(saved), _acc(gy), **params).astype(gy.dtype, copy=False)


# ---------------------------------------------------------------------------------------------
# softmax cross-entropy

def raise_pending_device_errors():
    """No-op: NumPy checks raise immediately (see ``fused_cupy.raise_pending_device_errors``)."""


def check_class_indices(indices, num_classes, ignore_index=None, what="target"):
    """Raise if an entry of ``indices`` is not in ``[0, num_classes)`` (nor ``ignore_index``).

    NumPy raises at once: ValueError for a non-integer array, IndexError naming the first
    offending value and the valid range. (The CuPy twin records the error on the device and
    raises it at the next ``raise_pending_device_errors()``.)
    """
    if indices.dtype.kind not in "iu":
        raise ValueError(f"{what} indices must be an integer array, got dtype {indices.dtype}")
    if indices.size == 0:
        return
    if indices.min() >= 0 and indices.max() < num_classes:
        return
    invalid = (indices < 0) | (indices >= num_classes)
    if ignore_index is not None:
        invalid &= indices != ignore_index
    if invalid.any():
        bad = indices[invalid].flat[0]
        raise IndexError(invalid_index_message(what, int(bad), num_classes, ignore_index))


def invalid_index_message(what, value, num_classes, ignore_index):
    """The error text for an out-of-range class index (shared with ``fused_cupy``)."""
    extra = "" if ignore_index is None else f" (or ignore_index={ignore_index})"
    return (f"{what} {value} is out of bounds: valid range is [0, {num_classes}){extra}")


def _check_targets(logits, targets):
    if logits.ndim != 2:
        raise ValueError(f"logits must be [N, C], got shape {logits.shape}")
    if targets.shape != logits.shape[:1]:
        raise ValueError(f"targets must have shape ({logits.shape[0]},), got {targets.shape}")
    _check_float("softmax_cross_entropy", logits)


def softmax_cross_entropy_forward(logits, targets, ignore_index=-100, label_smoothing=0.0):
    """Per-sample softmax cross-entropy of ``logits`` [N, C] against class ``targets`` [N].

    Returns ``(loss, log_sum_exp)``: ``loss`` [N] in the logits dtype (0 where ignored),
    ``log_sum_exp`` [N] in the accumulate dtype (float32 for float16 logits), saved for the
    backward. ``loss = (1 - eps)(lse - x_t) + eps (lse - mean_c x_c)`` with ``eps =
    label_smoothing``. Targets are checked with :func:`check_class_indices`.
    """
    _check_targets(logits, targets)
    check_class_indices(targets, logits.shape[1], ignore_index, "target")
    n, c = logits.shape
    acc = np.dtype(np.float32) if logits.dtype == _FLOAT16 else logits.dtype
    A = acc.type
    with np.errstate(all="ignore"):
        shift = logits.max(axis=1).astype(acc)
        shift[~np.isfinite(shift)] = 0
        e = np.subtract(logits, shift[:, None], dtype=acc)
        np.exp(e, out=e)
        lse = e.sum(axis=1)
        np.log(lse, out=lse)
        lse += shift
        valid = targets != ignore_index
        rows = np.arange(n)
        picked = logits[rows, np.where(valid, targets, 0)].astype(acc)
        loss = np.subtract(lse, picked)
        if label_smoothing != 0.0:
            smooth = logits.sum(axis=1, dtype=acc)
            smooth /= A(c)
            np.subtract(lse, smooth, out=smooth)
            loss *= A(1.0 - label_smoothing)
            smooth *= A(label_smoothing)
            loss += smooth
        loss[~valid] = 0
    return loss.astype(logits.dtype, copy=False), lse


def softmax_cross_entropy_backward(logits, log_sum_exp, targets, grad_loss, ignore_index=-100,
                                   label_smoothing=0.0):
    """Gradient w.r.t. ``logits`` of the per-sample loss, scaled by ``grad_loss`` [N].

    ``grad = grad_loss * (softmax - eps / C - (1 - eps) onehot)``; ignored rows are 0. The
    caller folds the mean/sum reduction into ``grad_loss``. dtype of ``logits``.
    """
    _check_targets(logits, targets)
    n, c = logits.shape
    acc = np.dtype(np.float32) if logits.dtype == _FLOAT16 else logits.dtype
    A = acc.type
    with np.errstate(all="ignore"):
        g = np.subtract(logits, log_sum_exp.astype(acc, copy=False)[:, None], dtype=acc)
        np.exp(g, out=g)
        g -= A(label_smoothing / c)
        valid = targets != ignore_index
        rows = np.flatnonzero(valid)
        g[rows, targets[rows]] -= A(1.0 - label_smoothing)
        g *= grad_loss.astype(acc, copy=False)[:, None]
        g[~valid] = 0
    return g.astype(logits.dtype, copy=False)


# ---------------------------------------------------------------------------------------------
# dropout (counter-based hash, see kernels/dropout.cuh)

_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB


def splitmix64_int(z):
    """splitmix64 of a Python int (mod 2**64)."""
    z = (z + _GOLDEN) & _MASK64
    z = ((z ^ (z >> 30)) * _MIX1) & _MASK64
    z = ((z ^ (z >> 27)) * _MIX2) & _MASK64
    return z ^ (z >> 31)


def _splitmix64_inplace(z, tmp):
    """splitmix64 of a uint64 array, in place (``tmp`` is scratch of the same shape)."""
    z += np.uint64(_GOLDEN)
    for shift, mul in ((30, _MIX1), (27, _MIX2)):
        np.right_shift(z, np.uint64(shift), out=tmp)
        z ^= tmp
        z *= np.uint64(mul)
    np.right_shift(z, np.uint64(31), out=tmp)
    z ^= tmp
    return z


def dropout_keep_mask(shape, p, seed, step):
    """Boolean keep-mask of the dropout kernel for an array of ``shape`` (C order)."""
    size = math.prod(shape)
    key = splitmix64_int(splitmix64_int(seed & _MASK64) ^ (step & _MASK64))
    h = np.arange(size, dtype=np.uint64)
    h ^= np.uint64(key)
    tmp = np.empty_like(h)
    _splitmix64_inplace(h, tmp)
    h >>= np.uint64(11)
    # u = (h >> 11) * 2**-53 >= p  <=>  (h >> 11) >= ceil(p * 2**53)   (all exact)
    threshold = math.ceil(p * 2.0 ** 53)
    if threshold >= 1 << 53:
        return np.zeros(shape, dtype=bool)
    return (h >= np.uint64(threshold)).reshape(shape)


def _check_p(p):
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")


def _dropout_apply(x, p, seed, step):
    _check_p(p)
    _check_float("dropout", x)
    if p == 1.0:
        return np.zeros_like(x)
    keep = dropout_keep_mask(x.shape, p, seed, step)
    a = _acc(x)
    with np.errstate(all="ignore"):
        y = np.divide(a, a.dtype.type(1.0 - p))
    y[~keep] = 0
    return y.astype(x.dtype, copy=False)


def dropout_forward(x, p, seed, step):
    """Dropout: keep each element with probability ``1 - p`` and scale it by ``1 / (1 - p)``.

    The mask is a hash of ``(seed, step, flat index)`` (kernels/dropout.cuh), identical on
    both backends; nothing is stored for the backward.
    """
    return _dropout_apply(x, p, seed, step)


def dropout_backward(gy, p, seed, step):
    """Gradient of :func:`dropout_forward`: the same mask (recomputed) and scale, applied to gy."""
    return _dropout_apply(gy, p, seed, step)


# ---------------------------------------------------------------------------------------------
# optimizers (in place)

def _scratch(like, taken):
    """A temporary shaped like ``like`` from the buffer pool (no fresh allocation every step), listed
    in ``taken`` to be given back when the update is done."""
    array = POOL.take(np, CPU, like.shape, like.dtype)
    taken.append(array)
    return array


def _write_back(dst, src):
    if src is not dst:
        dst[...] = src


def sgd_update(param, grad, momentum_buffer, *, lr, momentum=0.0, dampening=0.0,
               nesterov=False, weight_decay=0.0, first_step=False):
    """One SGD step in place on ``param`` (and ``momentum_buffer``), as torch.optim.SGD.

    ``g = grad + wd p``; with momentum: ``buf = g`` on the first step, else
    ``buf = momentum buf + (1 - dampening) g``; ``g = g + momentum buf`` (nesterov) or ``buf``;
    ``p -= lr g``. ``momentum_buffer`` is None when ``momentum == 0``.
    """
    _check_float("sgd", param, grad)
    p = _acc(param)
    A = p.dtype.type
    g = _acc(grad)
    taken = []
    if weight_decay != 0.0:
        g = np.multiply(p, A(weight_decay), out=_scratch(p, taken))
        g += grad
    if momentum != 0.0:
        if momentum_buffer is None:
            raise ValueError("sgd_update: momentum != 0 needs a momentum_buffer")
        buf = _acc(momentum_buffer)
        if first_step:
            buf[...] = g
        else:
            buf *= A(momentum)
            if dampening == 0.0:  # (1 - 0) g is g exactly: one pass less
                buf += g
            else:
                buf += np.multiply(g, A(1.0 - dampening), out=_scratch(p, taken))
        _write_back(momentum_buffer, buf)
        if nesterov:
            t = np.multiply(buf, A(momentum), out=_scratch(p, taken))
            g = np.add(g, t, out=t)
        else:
            g = buf
    t = np.multiply(g, A(lr), out=_scratch(p, taken))
    p -= t
    _write_back(param, p)
    POOL.give(CPU, *taken)


def adam_update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq=None, *, step, lr=1e-3,
                beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False,
                decoupled=False):
    """One Adam (``decoupled=False``) or AdamW (``decoupled=True``) step in place.

    As torch.optim.Adam/AdamW's documented algorithm, with ``step`` the 1-based step count after
    this update. ``max_exp_avg_sq`` is None unless ``amsgrad``.
    """
    _check_float("adam", param, grad)
    if amsgrad and max_exp_avg_sq is None:
        raise ValueError("adam_update: amsgrad=True needs max_exp_avg_sq")
    step_size, bias_correction2_sqrt = adam_bias_corrections(step, lr, beta1, beta2)
    p = _acc(param)
    A = p.dtype.type
    g = _acc(grad)
    taken = []
    with np.errstate(all="ignore"):
        if weight_decay != 0.0:
            if decoupled:
                p *= A(1.0 - lr * weight_decay)
            else:
                g = np.multiply(p, A(weight_decay), out=_scratch(p, taken))
                g += grad
        m = _acc(exp_avg)
        v = _acc(exp_avg_sq)
        t = _scratch(p, taken)
        m *= A(beta1)
        m += np.multiply(g, A(1.0 - beta1), out=t)
        v *= A(beta2)
        np.multiply(g, g, out=t)
        t *= A(1.0 - beta2)
        v += t
        _write_back(exp_avg, m)
        _write_back(exp_avg_sq, v)
        if amsgrad:
            vmax = np.maximum(_acc(max_exp_avg_sq), v, out=_acc(max_exp_avg_sq))
            _write_back(max_exp_avg_sq, vmax)
            v = vmax
        denom = np.sqrt(v, out=t)
        denom /= A(bias_correction2_sqrt)
        denom += A(eps)
        np.divide(m, denom, out=denom)
        denom *= A(step_size)
        p -= denom
    _write_back(param, p)
    POOL.give(CPU, *taken)


def per_tensor(update):
    """The multi-tensor form of optimizer update ``update``: its array arguments as lists (one
    array per tensor; None for an unused one), applied tensor by tensor. The twin and the GPU's
    ``sgd_foreach``/``adam_foreach``; the host's native ones do one pass (``native_foreach``)."""
    def run(*columns, **hyperparameters):
        n = len(columns[0])
        for arrays in zip(*(column if column is not None else (None,) * n for column in columns)):
            update(*arrays, **hyperparameters)
    run.__doc__ = f"``{update.__name__}`` over lists of arrays, one call per tensor."
    return run


sgd_foreach, adam_foreach = per_tensor(sgd_update), per_tensor(adam_update)


# ---------------------------------------------------------------------------------------------
# recurrent cells: one time step (see kernels/rnn.cuh for the equations and conventions)
#
# Every function writes its outputs into the arrays it is given (the caller's preallocated
# per-sequence buffers) and returns None. States are [B, H]; gate rows [B, G*H]. ``lengths`` is an
# int64 array [B] (row b is valid at step t when t < lengths[b]) or None (every row valid).

def recurrence_runner(dtype, weight_shape):
    """None: here (and on the GPU) a recurrent layer runs one step at a time, a product and a
    cell call each (ops/rnn.py); the host's compiled kernels run whole sequences
    (``native_recurrence.runner``)."""
    return None


def conv_runner(dtype, weight_shape):
    """None: here (and on the GPU) a convolution writes all its im2col columns, then multiplies
    (ops/conv.py); the host's compiled kernels work in cache-sized blocks (``native_conv.runner``)."""
    return None


def _acc_out(a):
    """A buffer for computing ``a``'s new value: ``a`` itself, or a float32 scratch for float16
    (copied back with ``_write_back``)."""
    return np.empty(a.shape, np.float32) if a.dtype == _FLOAT16 else a


def _blocks(rows, count):
    """The ``count`` gate blocks of [B, count*H] rows, as [B, H] views."""
    hidden = rows.shape[1] // count
    return [rows[:, k * hidden:(k + 1) * hidden] for k in range(count)]


def _ended_rows(lengths, t):
    """[B, 1] mask of the rows whose sequence ended before step ``t`` (None: no lengths)."""
    return None if lengths is None else (lengths <= t)[:, None]


def _carry_state(invalid, new, old):
    """Keep ``old`` in the rows whose sequence has ended (in place in ``new``)."""
    if invalid is not None:
        np.copyto(new, old, where=invalid)


def _backward_totals(dy, dh_rec, dh):
    """``(carry, total)``: the state gradient without and with this step's output gradient."""
    acc = np.float32 if dy.dtype == _FLOAT16 else dy.dtype
    carry = np.add(dh_rec, dh, dtype=acc)
    return carry, np.add(dy, carry, dtype=acc)


def _finish_backward(invalid, carry, dh, direct, gate_grads):
    """Write dh (``direct`` on valid rows, ``carry`` on ended ones; direct None means 0) and zero
    the gate gradients of ended rows."""
    if invalid is None:
        if direct is None:
            dh.fill(0)
        else:
            dh[...] = direct
        return
    dh[...] = np.where(invalid, carry, 0 if direct is None else direct)
    for g in gate_grads:
        np.copyto(g, 0, where=invalid)


def rnn_cell_forward(xw, hw, h_prev, h, *, lengths=None, t=0, relu=False):
    """Elman RNN step: ``h = act(xw + hw)`` (act = relu if ``relu`` else tanh); ended rows keep
    ``h_prev``. ``xw = W_ih x + b_ih + b_hh``, ``hw = W_hh h_prev``, all [B, H]."""
    _check_float("rnn_cell_forward", xw, hw, h_prev)
    with np.errstate(all="ignore"):
        pre = _acc_out(h)
        np.add(xw, hw, out=pre, dtype=pre.dtype)
        y = _relu(pre) if relu else np.tanh(pre, out=pre)
    _write_back(h, y)
    _carry_state(_ended_rows(lengths, t), h, h_prev)


def rnn_cell_backward(h, dy, dh_rec, dh, dpre, *, lengths=None, t=0, relu=False):
    """Gradient of :func:`rnn_cell_forward`: ``dpre`` (w.r.t. the pre-activation) from the step's
    output ``h``, output gradient ``dy``, ``dh_rec = dpre_next @ W_hh`` and the in/out ``dh``."""
    _check_float("rnn_cell_backward", h, dy, dh_rec, dh)
    invalid = _ended_rows(lengths, t)
    with np.errstate(all="ignore"):
        carry, total = _backward_totals(dy, dh_rec, dh)
        ha = _acc(h)
        d = _relu_backward(ha, total) if relu else _tanh_backward(ha, total)
    _write_back(dpre, d)
    _finish_backward(invalid, carry, dh, None, (dpre,))


def lstm_cell_forward(gates, hw, c_prev, h_prev, c, h, tanh_c, *, lengths=None, t=0):
    """LSTM step. ``gates`` [B, 4H] holds ``W_ih x + b_ih + b_hh`` on entry and the activations
    i, f, g, o on exit; ``hw = W_hh h_prev``. Writes ``c = f c_prev + i g``, ``h = o tanh(c)``
    and ``tanh_c`` (saved for backward); ended rows keep ``c_prev`` and ``h_prev``. Both tanh are
    NumPy's (vectorised, accurate to a few ulps relative, as the kernel's)."""
    _check_float("lstm_cell_forward", gates)
    a = _acc(gates)
    i, f, g, o = _blocks(a, 4)
    tc = _acc_out(tanh_c)
    with np.errstate(all="ignore"):
        a += hw
        # tanh(g) goes aside (into tanh_c's buffer, free until the end), so that one sigmoid runs over
        # whole contiguous rows: a third faster than sigmoid over the strided i|f and o blocks
        np.tanh(g, out=tc)
        _sigmoid(a, out=a)
        g[...] = tc
        c_new = np.multiply(f, c_prev, out=_acc_out(c))
        c_new += np.multiply(i, g)
        np.tanh(c_new, out=tc)
        h_new = np.multiply(o, tc, out=_acc_out(h))
    for dst, src in ((gates, a), (tanh_c, tc), (c, c_new), (h, h_new)):
        _write_back(dst, src)
    invalid = _ended_rows(lengths, t)
    _carry_state(invalid, c, c_prev)
    _carry_state(invalid, h, h_prev)


def lstm_cell_backward(act, c_prev, tanh_c, dy, dh_rec, dh, dc, dgates, *, lengths=None, t=0):
    """Gradient of :func:`lstm_cell_forward`: writes ``dgates`` [B, 4H] (w.r.t. the gate
    pre-activations) and updates ``dc`` (dL/dc_t in, dL/dc_prev out) and ``dh`` (see
    kernels/rnn.cuh) from the saved activations ``act`` and ``tanh_c``."""
    _check_float("lstm_cell_backward", act)
    invalid = _ended_rows(lengths, t)
    tc = _acc(tanh_c)
    a = _acc(act)
    i, f, g, o = _blocks(a, 4)
    d = _acc_out(dgates)
    di, df, dg, do = _blocks(d, 4)
    with np.errstate(all="ignore"):
        carry, total = _backward_totals(dy, dh_rec, dh)
        gy = np.multiply(total, o)
        dcc = _tanh_backward(tc, gy, out=np.empty_like(gy))
        dcc += dc
        np.multiply(dcc, g, out=di)
        np.multiply(dcc, c_prev, out=df)
        np.multiply(total, tc, out=do)
        # sigmoid' = (1 - y) y over whole rows (fewer, larger calls); the g block is redone below
        d *= np.subtract(1, a)
        d *= a
        _tanh_backward(g, np.multiply(dcc, i, out=gy), out=dg)
        if invalid is None:
            np.multiply(dcc, f, out=dc)
        else:
            np.copyto(dc, dcc * f, where=~invalid)
    _write_back(dgates, d)
    _finish_backward(invalid, carry, dh, None, (dgates,))


def gru_cell_forward(xw, hw, bias_hh, h_prev, act, h, *, lengths=None, t=0):
    """GRU step. ``xw = W_ih x + b_ih`` and ``hw = W_hh h_prev`` are [B, 3H] (r, z, n), ``bias_hh``
    [3H]. Writes ``act`` [B, 4H] = r, z, n, hn (saved for backward) and
    ``h = (1 - z) n + z h_prev``; ended rows keep ``h_prev``."""
    _check_float("gru_cell_forward", xw, hw, bias_hh, h_prev)
    hidden = h.shape[-1]
    acc = np.float32 if h.dtype == _FLOAT16 else h.dtype
    a = _acc_out(act)
    r, z, n, hn = _blocks(a, 4)
    with np.errstate(all="ignore"):
        hb = np.add(hw, bias_hh, dtype=acc)
        rz = a[:, :2 * hidden]
        np.add(xw[:, :2 * hidden], hb[:, :2 * hidden], out=rz)
        _sigmoid(rz, out=rz)
        hn[...] = hb[:, 2 * hidden:]
        np.multiply(r, hn, out=n)
        n += xw[:, 2 * hidden:]
        np.tanh(n, out=n)
        h_new = np.subtract(1, z, out=_acc_out(h))
        h_new *= n
        h_new += z * h_prev
    _write_back(act, a)
    _write_back(h, h_new)
    _carry_state(_ended_rows(lengths, t), h, h_prev)


def gru_cell_backward(act, h_prev, dy, dh_rec, dh, dgx, dgh, *, lengths=None, t=0):
    """Gradient of :func:`gru_cell_forward`: writes ``dgx`` (w.r.t. ``xw``) and ``dgh`` (w.r.t.
    ``hw + bias_hh``), [B, 3H] each; they differ in the n block (``dgh_n = r dgx_n``). Updates
    ``dh`` (see kernels/rnn.cuh)."""
    _check_float("gru_cell_backward", act, h_prev, dy, dh_rec, dh)
    hidden = dh.shape[-1]
    invalid = _ended_rows(lengths, t)
    a = _acc(act)
    r, z, n, hn = _blocks(a, 4)
    gx, gh = _acc_out(dgx), _acc_out(dgh)
    with np.errstate(all="ignore"):
        carry, total = _backward_totals(dy, dh_rec, dh)
        dn = _tanh_backward(n, total * np.subtract(1, z), out=gx[:, 2 * hidden:])
        _sigmoid_backward(z, total * np.subtract(h_prev, n, dtype=a.dtype),
                          out=gx[:, hidden:2 * hidden])
        _sigmoid_backward(r, dn * hn, out=gx[:, :hidden])
        gh[:, :2 * hidden] = gx[:, :2 * hidden]
        np.multiply(dn, r, out=gh[:, 2 * hidden:])
        total *= z
    _write_back(dgx, gx)
    _write_back(dgh, gh)
    _finish_backward(invalid, carry, dh, total, (dgx, dgh))
