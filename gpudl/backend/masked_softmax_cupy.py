"""The masked softmax of attention on CuPy arrays: one launch of kernels/attention.cuh per call,
one thread per row of scores, in place. Same functions and arguments as the NumPy twin
(``gpudl.backend.masked_softmax``); the launches are those listed in ``kernel_specs.SIGNATURES``
(flat raw arrays, a boolean or scores-dtype mask, a 1-element dummy when there is none)."""
import functools

import numpy

import cupy

from gpudl.backend.fused_cupy import kernel
from gpudl.backend.masked_softmax import check_arguments, compact_mask


@functools.lru_cache(maxsize=16)
def _no_mask(device_id):
    with cupy.cuda.Device(device_id):
        return cupy.zeros(1, dtype=numpy.bool_)


def masked_softmax_forward(scores, mask=None, *, scale=1.0, causal=False):
    """Overwrite ``scores`` with the masked softmax; see ``masked_softmax.masked_softmax_forward``."""
    check_arguments(scores, mask)
    queries, keys = scores.shape[-2:]
    if mask is None:
        flat_mask, layout = _no_mask(scores.device.id), (1, 1, 1)
    else:
        flat_mask, *layout = compact_mask(cupy, mask, scores.shape)
    rows = scores.size // keys if keys else 0
    if rows:
        kernel("masked_softmax_forward")(flat_mask, queries, keys, mask is not None, *layout,
                                         bool(causal), float(scale), scores.reshape(-1), size=rows)
    return scores


def masked_softmax_backward(probs, grad, *, scale=1.0, causal=False):
    """Overwrite ``grad`` with the scores' gradient; see ``masked_softmax.masked_softmax_backward``."""
    check_arguments(grad, probs=probs)
    queries, keys = grad.shape[-2:]
    rows = grad.size // keys if keys else 0
    if rows:
        kernel("masked_softmax_backward")(probs.reshape(-1), queries, keys, bool(causal), float(scale),
                                          grad.reshape(-1), size=rows)
    return grad
