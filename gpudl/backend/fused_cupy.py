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
from gpudl.backend import conv_kernels as _conv
from gpudl.backend import layer_norm_kernels as _layer_norm
from gpudl.backend import pooling_kernels as _pooling
from gpudl.backend.kernel_launch import Launcher
from gpudl.backend.kernel_specs import ACTIVATION_BACKWARD_USES, KERNELS

_NO_IGNORE = -(1 << 63)
resolve_activation_params = _host.resolve_activation_params
_check_float = _host._check_float  # validation only looks at dtypes and shapes: shared with the host twin


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
    indices = _launch.as_target(indices)
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
# softmax cross-entropy, dropout, optimizer updates (one launch per parameter, in place) and
# recurrent cells (one launch per time step, kernels/rnn.cuh): the launch sequences fused_native
# shares (kernel_launch)

_ALL_VALID = 1 << 62  # a length no sequence reaches: every step valid


@functools.lru_cache(maxsize=64)
def _all_valid_lengths(device_id, batch):
    with cupy.cuda.Device(device_id):
        return cupy.full(batch, _ALL_VALID, dtype=numpy.int64)


_launch = Launcher(kernel, cupy, numpy.uint64,
                   lambda state: _all_valid_lengths(state.device.id, state.shape[0]),
                   check_class_indices)
softmax_cross_entropy_forward = _launch.softmax_cross_entropy_forward
softmax_cross_entropy_backward = _launch.softmax_cross_entropy_backward
dropout_forward, dropout_backward = _launch.dropout_forward, _launch.dropout_backward
sgd_update, adam_update = _launch.sgd_update, _launch.adam_update
sgd_foreach, adam_foreach = _host.per_tensor(sgd_update), _host.per_tensor(adam_update)  # one launch per tensor
rnn_cell_forward, rnn_cell_backward = _launch.rnn_cell_forward, _launch.rnn_cell_backward
lstm_cell_forward, lstm_cell_backward = _launch.lstm_cell_forward, _launch.lstm_cell_backward
gru_cell_forward, gru_cell_backward = _launch.gru_cell_forward, _launch.gru_cell_backward
recurrence_runner = _host.recurrence_runner  # one launch per step and cell
conv_runner = _host.conv_runner  # im2col of the whole layer, then one product


# masked softmax of attention (kernels/attention.cuh), in a module of its own that uses kernel() above
from gpudl.backend.masked_softmax_cupy import masked_softmax_backward, masked_softmax_forward  # noqa: E402,F401

# layer normalisation over rows (kernels/layer_norm.cuh): the launches shared with fused_native
layer_norm_forward, layer_norm_backward = _layer_norm.bind(kernel, cupy, _layer_norm.gpu_rows_per_block)

# convolution's im2col and col2im (kernels/conv.cuh): one thread per element, the launches shared with fused_native
im2col, col2im = _conv.bind(kernel, cupy, lambda batch, width, elements: 1)

# max pooling (kernels/pooling.cuh): one thread per element, the launches shared with fused_native
max_pool2d_forward, max_pool2d_backward = _pooling.bind(kernel, cupy, lambda batch: 1)
