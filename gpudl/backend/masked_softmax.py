"""The masked softmax of attention (kernels/attention.cuh): its NumPy twin, and the mask layout,
argument checks and launch sequence that the kernel bindings share (``masked_softmax_cupy`` on the
GPU, ``fused_native`` on the host).

Both functions work in place on C-contiguous scores ``[..., L, S]`` (the one score tensor of an
attention step) and follow the kernel's arithmetic: accumulate type float32 for float16, else the
scores' dtype; ``exp(z - max)`` rounded to the scores' dtype before the division, as the kernel
stores it in the row. A boolean mask entry True means *may attend*, a float mask is added (PyTorch's
``scaled_dot_product_attention``); causal structure masks the keys ``s > l`` (top-left aligned).
"""
import math

import numpy as np

from gpudl.backend import FLOAT_DTYPES


def _acc(a):
    return a.astype(np.float32) if a.dtype == np.float16 else a


def check_arguments(scores, mask=None, probs=None):
    """Raise a clear error for arrays the kernels cannot take (shared by both backends)."""
    if scores.dtype not in FLOAT_DTYPES:
        raise TypeError(f"masked_softmax: expected float16/float32/float64 scores, got {scores.dtype}")
    if scores.ndim < 2 or not scores.flags.c_contiguous:
        raise ValueError(f"masked_softmax: scores must be a C-contiguous [..., L, S] array, got shape "
                         f"{scores.shape} and strides {scores.strides}")
    if probs is not None and (probs.shape != scores.shape or probs.dtype != scores.dtype
                              or not probs.flags.c_contiguous):
        raise ValueError(f"masked_softmax backward: probabilities {probs.shape} {probs.dtype} do not match "
                         f"the gradient {scores.shape} {scores.dtype} (both C-contiguous)")
    if mask is None:
        return
    if mask.dtype != np.bool_ and mask.dtype != scores.dtype:
        raise TypeError(f"masked_softmax: the mask must be boolean or of the scores' dtype {scores.dtype}, "
                        f"got {mask.dtype}")
    try:
        fits = np.broadcast_shapes(mask.shape, scores.shape) == scores.shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"masked_softmax: a mask of shape {mask.shape} does not broadcast to the scores' "
                         f"shape {scores.shape}")


def compact_mask(xp, mask, scores_shape):
    """``(flat_mask, mask_div, mask_mod, mask_rows)``: how the kernel reads ``mask`` broadcast over
    scores of ``scores_shape`` without expanding it (``xp`` is the mask's array module).

    ``flat_mask`` is the mask broadcast to its own extent on the batch axes it varies along (from the
    first to the last), then ``mask_rows`` (L or 1) and S, contiguous and flattened; batch entry n of
    the scores (batch axes flattened) reads block ``(n // mask_div) % mask_mod`` of it. Only a mask
    that varies along batch axes that are not adjacent, or not along S, gets copied to a larger array.
    """
    shape = (1,) * (len(scores_shape) - mask.ndim) + tuple(mask.shape)
    batch = scores_shape[:-2]
    queries, keys = scores_shape[-2:]
    mask_rows = queries if shape[-2] == queries else 1
    varying = [j for j, n in enumerate(shape[:-2]) if n != 1]
    first, last = (varying[0], varying[-1] + 1) if varying else (0, 0)
    compact = xp.broadcast_to(mask.reshape(shape[first:last] + shape[-2:]), batch[first:last] + (mask_rows, keys))
    return xp.ascontiguousarray(compact).reshape(-1), math.prod(batch[last:]), math.prod(batch[first:last]), mask_rows


def launch_forward(kernel, xp, no_mask, scores, mask, scale, causal):
    """Run the forward kernel (a CuPy or native kernel object; ``no_mask`` is the 1-element boolean
    array it reads when there is no mask) over the rows of ``scores``, in place; return ``scores``."""
    check_arguments(scores, mask)
    queries, keys = scores.shape[-2:]
    if mask is None:
        flat_mask, layout = no_mask, (1, 1, 1)
    else:
        flat_mask, *layout = compact_mask(xp, mask, scores.shape)
    rows = scores.size // keys if keys else 0
    if rows:
        kernel(flat_mask, queries, keys, mask is not None, *layout, bool(causal), float(scale),
               scores.reshape(-1), size=rows)
    return scores


def launch_backward(kernel, probs, grad, scale, causal):
    """Run the backward kernel over the rows of ``grad``, in place; return ``grad``."""
    check_arguments(grad, probs=probs)
    queries, keys = grad.shape[-2:]
    rows = grad.size // keys if keys else 0
    if rows:
        kernel(probs.reshape(-1), queries, keys, bool(causal), float(scale), grad.reshape(-1), size=rows)
    return grad


def _causal_excluded(queries, keys):
    """[L, S] boolean: True where key s lies after query l (s > l)."""
    return np.triu(np.ones((queries, keys), dtype=bool), k=1)


def masked_softmax_forward(scores, mask=None, *, scale=1.0, causal=False):
    """Overwrite ``scores`` [..., L, S] with ``softmax(scale * scores + mask)`` over the last axis.

    ``mask``: None, boolean (True: may attend) or additive of the scores' dtype, broadcastable to
    ``scores``; ``causal`` excludes keys after the query. A row with nothing to attend to becomes
    zeros. Returns ``scores``.
    """
    check_arguments(scores, mask)
    if scores.size == 0:
        return scores
    z = _acc(scores)
    A = z.dtype.type
    with np.errstate(all="ignore"):
        z *= A(scale)
        if mask is not None and mask.dtype == np.bool_:
            np.copyto(z, A(-np.inf), where=~mask)
        elif mask is not None:
            z += mask
        if causal:
            np.copyto(z, A(-np.inf), where=_causal_excluded(*scores.shape[-2:]))
        row_max = z.max(axis=-1, keepdims=True)
        empty = row_max == -np.inf
        row_max[empty] = 0
        z -= row_max
        np.exp(z, out=z)
        row_sum = z.sum(axis=-1, keepdims=True)
        row_sum[empty] = 1  # its exponentials are all 0: the row stays 0
        if scores.dtype == np.float16:
            z = z.astype(np.float16).astype(np.float32)  # the kernel stores exp(z - max) in the row
        z /= row_sum
    if z is not scores:
        scores[...] = z
    return scores


def masked_softmax_backward(probs, grad, *, scale=1.0, causal=False):
    """Overwrite ``grad`` (the gradient of the probabilities, [..., L, S]) with the gradient of the
    scores: ``scale * probs * (grad - sum(grad * probs))`` per row. Returns ``grad``."""
    check_arguments(grad, probs=probs)
    g = _acc(grad)
    y = _acc(probs)
    with np.errstate(all="ignore"):
        dot = np.matmul(y[..., None, :], g[..., :, None])[..., 0]  # per-row dot products, no [.., L, S] temporary
        g -= dot
        g *= y
        g *= g.dtype.type(scale)
        if causal:
            np.copyto(g, 0, where=_causal_excluded(*grad.shape[-2:]))
    if g is not grad:
        grad[...] = g
    return grad
