"""Scaled dot-product attention as one Function: ``softmax(scale q k^T + mask) v``.

The scores ``q k^T`` are the only ``[..., L, S]`` tensor of the forward: the fused masked softmax
(kernels/attention.cuh) turns them into the attention weights in place, and those are what
backward keeps. Backward needs one more ``[..., L, S]`` array, the weights' gradient, which the
softmax backward kernel turns into the scores' gradient in place. With dropout the mask is the
counter-based one of ``ops.dropout``, recomputed in backward rather than stored.
"""
import math

from .. import backend as _backend
from ..autograd.function import Function
from .linear import gemm


class Attention(Function):
    """Outputs ``out`` (and the weights, after dropout, when ``need_weights``) for q [..., L, E],
    k [..., S, E], v [..., S, Ev] and a mask (None, boolean True = may attend, or additive)."""

    private_grads = True  # every gradient is a fresh GEMM result

    def __init__(self, scale, causal, dropout_p, dropout_key, need_weights):
        self.scale, self.causal, self.need_weights = scale, causal, need_weights
        self.dropout_p, self.dropout_key = dropout_p, dropout_key

    def _dropped(self, probs):
        if not self.dropout_p:
            return probs
        return self.backend.fused.dropout_forward(probs, self.dropout_p, *self.dropout_key)

    def forward(self, q, k, v, mask):
        xp = self.xp
        scores = gemm(xp, q, xp.swapaxes(k, -1, -2))
        probs = self.backend.fused.masked_softmax_forward(scores, mask, scale=self.scale, causal=self.causal)
        weights = self._dropped(probs)
        out = gemm(xp, weights, v)
        self.saved = (q, k, v, probs)
        return (out, weights) if self.need_weights else out

    def backward(self, g_out, g_weights=None):
        q, k, v, probs = self.saved
        xp, fused = self.xp, self.backend.fused
        needs_q, needs_k, needs_v, _ = self.needs_input_grad
        gq = gk = gv = None
        if g_out is not None and needs_v:
            gv = gemm(xp, xp.swapaxes(self._dropped(probs), -1, -2), g_out)
        if not (needs_q or needs_k):
            return gq, gk, gv, None
        if g_out is not None:
            g = gemm(xp, g_out, xp.swapaxes(v, -1, -2))
            if g_weights is not None:
                xp.add(g, g_weights, out=g)
        else:
            g = xp.array(g_weights, dtype=probs.dtype, order="C")  # a copy: the kernel writes into it
        if self.dropout_p:
            g = fused.dropout_backward(g, self.dropout_p, *self.dropout_key)
        g = fused.masked_softmax_backward(probs, g, scale=self.scale, causal=self.causal)
        if needs_q:
            gq = gemm(xp, g, k)
        if needs_k:
            gk = gemm(xp, xp.swapaxes(g, -1, -2), q)
        return gq, gk, gv, None


def _broadcasts_to(shape, target):
    """Whether an array of ``shape`` broadcasts to exactly ``target``."""
    if len(shape) > len(target):
        return False
    return all(n in (1, t) for n, t in zip(reversed(shape), reversed(target)))


def _check_inputs(op, query, key, value):
    tensors = {"query": query, "key": key, "value": value}
    for name, t in tensors.items():
        if t.ndim < 2:
            raise ValueError(f"{op}: {name} must have at least 2 dimensions [..., length, features], got shape "
                             f"{t.shape}")
        if t.dtype.kind != "f":
            raise TypeError(f"{op}: expected floating-point tensors, got {name} of dtype {t.dtype}")
    if not query.dtype == key.dtype == value.dtype:
        raise TypeError(f"{op}: query, key and value must have the same dtype, got {query.dtype}, {key.dtype} "
                        f"and {value.dtype}")
    if not query.shape[:-2] == key.shape[:-2] == value.shape[:-2]:
        raise ValueError(f"{op}: query, key and value must have the same leading (batch) dimensions, got shapes "
                         f"{query.shape}, {key.shape} and {value.shape}")
    if query.shape[-1] != key.shape[-1] or key.shape[-2] != value.shape[-2]:
        raise ValueError(f"{op}: query [..., L, E], key [..., S, E] and value [..., S, Ev] do not fit: got shapes "
                         f"{query.shape}, {key.shape} and {value.shape}")


def _mask_for_kernel(op, mask, query, key):
    """The mask as the kernel takes it: boolean (True = may attend) or of the query's dtype."""
    if mask is None:
        return None
    scores_shape = query.shape[:-1] + key.shape[-2:-1]
    if not _broadcasts_to(mask.shape, scores_shape):
        raise ValueError(f"{op}: attn_mask of shape {mask.shape} does not broadcast to the attention scores' "
                         f"shape {scores_shape} (query {query.shape}, key {key.shape})")
    if mask.dtype == _backend.bool_:
        return mask
    if mask.dtype.kind != "f":
        raise TypeError(f"{op}: attn_mask must be boolean or floating point, got dtype {mask.dtype}")
    if mask.requires_grad:
        raise NotImplementedError(f"{op}: gradients with respect to a float attn_mask are not supported; "
                                  "pass attn_mask.detach()")
    return mask if mask.dtype == query.dtype else mask.astype(query.dtype)


def attention(query, key, value, mask=None, dropout_p=0.0, causal=False, scale=None, need_weights=False,
              op="attention"):
    """``(output, weights)``: ``softmax(scale q k^T + mask) v`` and, when ``need_weights``, the attention
    weights [..., L, S] after dropout (else None). ``mask`` is boolean (True = may attend) or additive;
    ``causal`` excludes the keys after each query (top-left aligned); ``scale`` defaults to 1/sqrt(E)."""
    _check_inputs(op, query, key, value)
    if not 0.0 <= dropout_p <= 1.0:
        raise ValueError(f"{op}: dropout_p must be in [0, 1], got {dropout_p}")
    mask = _mask_for_kernel(op, mask, query, key)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else float(scale)
    key_ = _backend.next_dropout_key() if dropout_p else None
    result = Attention(scale, bool(causal), float(dropout_p), key_, need_weights).apply(query, key, value, mask)
    return result if need_weights else (result, None)


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False):
    """PyTorch's ``F.scaled_dot_product_attention``: ``softmax(q k^T * scale + mask) v`` for query
    [..., L, E], key [..., S, E], value [..., S, Ev] (same leading dimensions).

    ``attn_mask`` broadcasts to [..., L, S]: boolean True means *may attend*, a float mask is added to
    the scores. ``is_causal`` masks the keys after each query (``s > l``, top-left aligned); giving
    both is an error, as in PyTorch. ``scale`` defaults to ``1/sqrt(E)``. Dropout with probability
    ``dropout_p`` is applied to the weights whenever it is non-zero (pass 0 in evaluation, as
    PyTorch's modules do). A query that may attend to nothing gets zeros.
    """
    if enable_gqa:
        raise NotImplementedError("scaled_dot_product_attention: enable_gqa=True is not supported; repeat the "
                                  "key and value heads to the query's number of heads")
    if is_causal and attn_mask is not None:
        raise RuntimeError("scaled_dot_product_attention: explicit attn_mask should not be set when is_causal=True "
                           "(fold the causal structure into the mask)")
    output, _ = attention(query, key, value, attn_mask, dropout_p, is_causal, scale,
                          op="scaled_dot_product_attention")
    return output
