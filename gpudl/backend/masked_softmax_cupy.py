"""The masked softmax of attention on CuPy arrays: one launch of kernels/attention.cuh per call,
one thread per row of scores, in place. Same functions and arguments as the NumPy twin
(``gpudl.backend.masked_softmax``); the launches are those listed in ``kernel_specs.SIGNATURES``
(flat raw arrays, a boolean or scores-dtype mask, a 1-element dummy when there is none)."""
import functools

import numpy

import cupy

from gpudl.backend.fused_cupy import kernel
from gpudl.backend.masked_softmax import launch_backward, launch_forward


@functools.lru_cache(maxsize=16)
def _no_mask(device_id):
    with cupy.cuda.Device(device_id):
        return cupy.zeros(1, dtype=numpy.bool_)


def masked_softmax_forward(scores, mask=None, *, scale=1.0, causal=False):
    """Overwrite ``scores`` with the masked softmax; see ``masked_softmax.masked_softmax_forward``."""
    return launch_forward(kernel("masked_softmax_forward"), cupy, _no_mask(scores.device.id), scores, mask,
                          scale, causal)


def masked_softmax_backward(probs, grad, *, scale=1.0, causal=False):
    """Overwrite ``grad`` with the scores' gradient; see ``masked_softmax.masked_softmax_backward``."""
    return launch_backward(kernel("masked_softmax_backward"), probs, grad, scale, causal)
