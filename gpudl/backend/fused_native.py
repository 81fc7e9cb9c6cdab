"""Fused ops on NumPy arrays, computed by the kernels of ``kernels/*.cuh`` compiled for the host.

Same functions, signatures and errors as ``fused_numpy`` (whose validation it reuses); each op
launches the kernels of ``kernel_specs`` exactly as ``fused_cupy`` does on the GPU, through
:mod:`gpudl.backend.native_kernels` (OpenMP across cores, vectorised). Class indices are checked
on the host before the launch, as the NumPy twin does (an immediate IndexError).

Under ``GPUDL_CPU_KERNELS=auto`` the ops in :data:`TWIN_FASTER` run as their NumPy twins, which
measured faster on one core at the models' sizes (the numbers are above the list; README, "CPU
kernels"): NumPy's float32 tanh is faster than the kernels' vectorised one (tanh, GELU-tanh,
the RNN cell), softplus's log1p runs in double, and the softmax cross-entropy's loops
(``i % n_class``) do not vectorise.
``GPUDL_CPU_KERNELS=native`` runs every op here natively.
"""
import functools

import numpy as np

from gpudl.backend import fused_numpy as _twin
from gpudl.backend.kernel_launch import Launcher
from gpudl.backend.kernel_specs import ACTIVATION_BACKWARD_USES
from gpudl.backend import conv_kernels, layer_norm_kernels, pooling_kernels
from gpudl.backend import native_conv, native_foreach, native_recurrence
from gpudl.backend.masked_softmax import launch_backward, launch_forward
from gpudl.backend.native_kernels import PARALLEL_MIN, kernel

__all__ = ["ACTIVATION_BACKWARD_USES", "activation_backward", "activation_forward", "adam_update",
           "check_class_indices", "col2im", "dropout_backward", "dropout_forward", "gru_cell_backward",
           "gru_cell_forward", "im2col", "invalid_index_message", "layer_norm_backward", "layer_norm_forward",
           "lstm_cell_backward", "lstm_cell_forward",
           "masked_softmax_backward", "masked_softmax_forward", "max_pool2d_backward", "max_pool2d_forward",
           "raise_pending_device_errors", "resolve_activation_params", "rnn_cell_backward",
           "rnn_cell_forward", "sgd_foreach", "sgd_update", "adam_foreach", "softmax_cross_entropy_backward",
           "softmax_cross_entropy_forward"]

resolve_activation_params = _twin.resolve_activation_params
check_class_indices = _twin.check_class_indices
raise_pending_device_errors = _twin.raise_pending_device_errors
invalid_index_message = _twin.invalid_index_message
_check_float = _twin._check_float

TWIN_FASTER = frozenset({
    # Activations and softmax cross-entropy, native/twin ns per element (float32, one thread,
    # medians of 11, 2026-12-06 16:22, load 3.4-4) at [128, 512] and [512, 4096] / [N, 10] N 128,
    # 512. Left as twins: tanh 1.2/0.42 1.1/0.40 (NumPy's float32 tanh), softplus 3.0/2.0 2.9/2.0
    # (log1p in double), gelu_tanh 1.5/1.1 1.4/1.4, sigmoid 0.78/0.77 0.71/0.84 and silu 0.78/0.77
    # 0.81/0.78 (ties), cross-entropy forward 28/20 13/11 and backward 24/12 11/4.6 (launches,
    # ``i % n_class``). Native since the shim's exp/tanh/erf vectorise: elu 1.5/3.7 1.5/4.3, elu
    # backward 0.80/3.9 0.78/4.7, silu backward 0.96/1.3 1.0/1.6, softplus backward 0.94/1.7
    # 0.80/1.9, gelu_tanh backward 1.6/2.0 1.5/2.8 (gelu, never listed: 3.0/32 3.0/59).
    "sigmoid_forward", "tanh_forward", "softplus_forward", "silu_forward", "gelu_tanh_forward",
    "softmax_cross_entropy_forward", "softmax_cross_entropy_backward",
    # Recurrent cells, measured per step (H 128, float32, one thread, native/twin us at batch
    # 32/128/512, with the shim's inline exp/tanh, 2026-12-06): only the RNN forward stays on its
    # twin, (tanh) 11/5 24/11 75/38. Native: lstm forward 25/31 77/96 277/342, gru forward
    # 18/46 52/132 184/480; backward rnn 9/8 15/16 33/52, lstm 15/38 33/96 79/308, gru 12/47
    # 25/110 79/412.
    "rnn_cell_forward"})
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
# softmax cross-entropy, dropout, optimizer updates and recurrent cells: the launch sequences of
# fused_cupy (kernel_launch); class targets are checked on the host, as the twin does (an
# immediate IndexError)

def _routed(op):
    """``op`` launched natively, or as its twin while ``op`` is in the preferred-twin set."""
    native = getattr(_launch, op)

    @functools.wraps(native)
    def run(*args, **kwargs):
        return (getattr(_twin, op) if op in _prefer_twin else native)(*args, **kwargs)
    return run


_launch = Launcher(kernel, np, int, lambda state: native_recurrence.all_valid_lengths(state.shape[0]),
                   check_class_indices)
softmax_cross_entropy_forward = _routed("softmax_cross_entropy_forward")
softmax_cross_entropy_backward = _routed("softmax_cross_entropy_backward")
dropout_forward, dropout_backward = _launch.dropout_forward, _launch.dropout_backward
sgd_update, adam_update = _launch.sgd_update, _launch.adam_update
sgd_foreach, adam_foreach = native_foreach.sgd_foreach, native_foreach.adam_foreach
rnn_cell_forward, rnn_cell_backward = _routed("rnn_cell_forward"), _routed("rnn_cell_backward")
lstm_cell_forward, lstm_cell_backward = _routed("lstm_cell_forward"), _launch.lstm_cell_backward
gru_cell_forward, gru_cell_backward = _routed("gru_cell_forward"), _launch.gru_cell_backward
recurrence_runner = native_recurrence.runner  # whole sequences in one call (float32, float64)
conv_runner = native_conv.runner  # im2col and GEMM in cache-sized blocks (float32, float64)


# ---------------------------------------------------------------------------------------------
# masked softmax of attention: one launch over the rows of scores (kernels/attention.cuh)

_NO_MASK = np.zeros(1, dtype=np.bool_)


def masked_softmax_forward(scores, mask=None, *, scale=1.0, causal=False):
    """Overwrite ``scores`` with the masked softmax; see ``masked_softmax.masked_softmax_forward``."""
    return launch_forward(kernel("masked_softmax_forward"), np, _NO_MASK, scores, mask, scale, causal)


def masked_softmax_backward(probs, grad, *, scale=1.0, causal=False):
    """Overwrite ``grad`` with the scores' gradient; see ``masked_softmax.masked_softmax_backward``."""
    return launch_backward(kernel("masked_softmax_backward"), probs, grad, scale, causal)


# layer normalisation: one launch over the rows forward, one backward (kernels/layer_norm.cuh)
layer_norm_forward, layer_norm_backward = layer_norm_kernels.bind(kernel, np, layer_norm_kernels.host_rows_per_block)

# convolution's im2col and col2im: one launch each, a run along the batch per index (kernels/conv.cuh)
im2col, col2im = conv_kernels.bind(kernel, np, functools.partial(conv_kernels.host_run, parallel_min=PARALLEL_MIN))

# max pooling: one launch forward, one backward, a run along the batch per index (kernels/pooling.cuh)
max_pool2d_forward, max_pool2d_backward = pooling_kernels.bind(kernel, np, pooling_kernels.host_run)


def __getattr__(name):
    """An op without a native launch here yet runs as its NumPy twin, so a new op works at once."""
    return getattr(_twin, name)
