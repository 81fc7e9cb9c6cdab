"""``MultiheadAttention`` with PyTorch's signature, parameter names and mask conventions."""
from .. import backend as _backend
from ..ops.attention import attention
from ..ops.linear import linear
from ..tensor import Tensor
from . import init
from .linear import Linear, check_size
from .module import Module
from .parameter import empty_parameter

CAUSAL_HINT_ERROR = ("Need attn_mask if specifying the is_causal hint: pass the causal mask itself (a boolean "
                     "[L, L] mask that is True above the diagonal)")


class MultiheadAttention(Module):
    """Attention over ``num_heads`` heads of ``embed_dim // num_heads`` features (PyTorch's
    ``nn.MultiheadAttention``): ``in_proj_weight`` [3E, E] holds the query, key and value
    projections stacked, ``in_proj_bias`` [3E], ``out_proj`` a Linear(E, E).

    Inputs are [L, B, E] (or [B, L, E] with ``batch_first``; [L, E] unbatched). Masks follow PyTorch:
    ``key_padding_mask`` [B, S] and a boolean ``attn_mask`` ([L, S] or [B * num_heads, L, S]) are True
    where attention is *not* allowed; float masks are added to the scores. Dropout applies to the
    attention weights in training mode. ``add_bias_kv``, ``add_zero_attn`` and ``kdim``/``vdim``
    other than ``embed_dim`` are not implemented.
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False, add_zero_attn=False,
                 kdim=None, vdim=None, batch_first=False, device=None, dtype=None):
        super().__init__()
        check_size(embed_dim, "embed_dim", "MultiheadAttention")
        check_size(num_heads, "num_heads", "MultiheadAttention")
        if num_heads == 0 or embed_dim % num_heads:
            raise ValueError(f"MultiheadAttention: embed_dim must be divisible by num_heads, got embed_dim={embed_dim} "
                             f"and num_heads={num_heads}")
        for name, value in (("add_bias_kv", add_bias_kv), ("add_zero_attn", add_zero_attn)):
            if value:
                raise NotImplementedError(f"MultiheadAttention: {name}=True is not implemented")
        for name, value in (("kdim", kdim), ("vdim", vdim)):
            if value not in (None, embed_dim):
                raise NotImplementedError(f"MultiheadAttention: {name}={value} different from embed_dim={embed_dim} "
                                          "(separate key/value projection sizes) is not implemented")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"MultiheadAttention: dropout must be in [0, 1], got {dropout}")
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.kdim = self.vdim = embed_dim
        self.dropout, self.batch_first = dropout, batch_first
        self.in_proj_weight = empty_parameter((3 * embed_dim, embed_dim), device, dtype, "MultiheadAttention")
        if bias:
            self.in_proj_bias = empty_parameter((3 * embed_dim,), device, dtype, "MultiheadAttention")
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, device=device, dtype=dtype)
        self._reset_parameters()

    def _reset_parameters(self):
        """PyTorch's initialisation: Xavier-uniform projections, zero biases (``out_proj.weight`` keeps
        Linear's default)."""
        init.xavier_uniform_(self.in_proj_weight)
        if self.in_proj_bias is not None:
            init.zeros_(self.in_proj_bias)
            init.zeros_(self.out_proj.bias)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        """Return ``(output, weights)``: output shaped as ``query``; weights [B, L, S] averaged over the
        heads (``average_attn_weights``) or [B, num_heads, L, S], None unless ``need_weights``."""
        if is_causal and attn_mask is None:
            raise RuntimeError(CAUSAL_HINT_ERROR)
        batched = self._check_inputs(query, key, value)
        batch_axis = 0 if self.batch_first else 1  # the inputs stay in their layout: no transposed copies
        if not batched:  # one view per distinct input, so self-attention keeps its single projection
            views = {id(t): t.unsqueeze(batch_axis) for t in (query, key, value)}
            query, key, value = (views[id(t)] for t in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        batch, length, source = query.shape[batch_axis], query.shape[1 - batch_axis], key.shape[1 - batch_axis]
        causal = is_causal and key_padding_mask is None and not need_weights  # PyTorch trusts the hint here
        mask = None if causal else _merged_mask(attn_mask, key_padding_mask, batch, self.num_heads, length,
                                                source, query.dtype, batched)
        q, k, v = (self._heads(t) for t in self._project(query, key, value))
        out, weights = attention(q, k, v, mask, self.dropout if self.training else 0.0, causal,
                                 need_weights=need_weights, op="MultiheadAttention")
        # [B, heads, L, head_dim] back to the input's layout, heads side by side
        out = out.permute(0, 2, 1, 3) if self.batch_first else out.permute(2, 0, 1, 3)
        out = self.out_proj(out.reshape(query.shape))
        if not batched:
            out = out.squeeze(batch_axis)
        if weights is not None:
            if average_attn_weights:
                weights = weights.mean(dim=1)
            if not batched:
                weights = weights.squeeze(0)
        return out, weights

    def _check_inputs(self, query, key, value):
        """Whether the inputs are batched (3-D); a clear error for shapes that do not fit."""
        if query.ndim not in (2, 3) or key.ndim != query.ndim or value.ndim != query.ndim:
            raise ValueError(f"MultiheadAttention: query, key and value must all be 3-D (batched) or 2-D "
                             f"(unbatched), got shapes {query.shape}, {key.shape} and {value.shape}")
        for name, t in (("query", query), ("key", key), ("value", value)):
            if t.shape[-1] != self.embed_dim:
                raise ValueError(f"MultiheadAttention: was expecting embedding dimension of {self.embed_dim}, "
                                 f"but got {name} of shape {t.shape}")
        if key.shape[:-1] != value.shape[:-1]:
            raise ValueError(f"MultiheadAttention: key shape {key.shape} does not match value shape {value.shape}")
        batch_axis = 0 if self.batch_first else 1
        if query.ndim == 3 and query.shape[batch_axis] != key.shape[batch_axis]:
            raise ValueError(f"MultiheadAttention: query {query.shape} and key {key.shape} have different batch "
                             f"sizes (batch_first={self.batch_first})")
        return query.ndim == 3

    def _project(self, query, key, value):
        """q, k, v in the inputs' layout: one matrix product for self-attention, else one per input
        (sharing ``in_proj_weight``'s rows)."""
        weight, bias, e = self.in_proj_weight, self.in_proj_bias, self.embed_dim
        if query is key and key is value:
            return linear(query, weight, bias).split(e, dim=-1)
        rows = [slice(0, e), slice(e, 2 * e), slice(2 * e, 3 * e)]
        return tuple(linear(x, weight[r], None if bias is None else bias[r])
                     for x, r in zip((query, key, value), rows))

    def _heads(self, x):
        """[L, B, E] (or [B, L, E] with ``batch_first``) -> [B, num_heads, L, head_dim], a view."""
        heads = x.reshape(x.shape[0], x.shape[1], self.num_heads, self.head_dim)
        return heads.permute(0, 2, 1, 3) if self.batch_first else heads.permute(1, 2, 0, 3)

    def extra_repr(self):
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}, " \
               f"batch_first={self.batch_first}"


def _merged_mask(attn_mask, key_padding_mask, batch, heads, length, source, dtype, batched):
    """``attn_mask`` and ``key_padding_mask`` (PyTorch's convention: True = masked out) as one mask in
    the attention kernel's convention (boolean True = may attend, or additive), broadcasting to
    [B, heads, L, S]; None when there is neither."""
    masks = []
    if attn_mask is not None:
        if attn_mask.ndim == 2:
            expected = (length, source)
        elif attn_mask.ndim == 3:
            expected = ((batch if batched else 1) * heads, length, source)
        else:
            raise ValueError(f"MultiheadAttention: attn_mask's dimension {attn_mask.ndim} is not supported "
                             "(expected [L, S] or [B * num_heads, L, S])")
        if attn_mask.shape != expected:
            raise ValueError(f"MultiheadAttention: the shape of the {attn_mask.ndim}D attn_mask is {attn_mask.shape}, "
                             f"but should be {expected}")
        masks.append(attn_mask.reshape(-1, heads, length, source) if attn_mask.ndim == 3 else attn_mask)
    if key_padding_mask is not None:
        if key_padding_mask.shape != (batch, source):
            raise ValueError(f"MultiheadAttention: expecting key_padding_mask shape of {(batch, source)}, but got "
                             f"{key_padding_mask.shape}")
        masks.append(key_padding_mask.reshape(batch, 1, 1, source))
    for m in masks:
        if m.dtype != _backend.bool_ and m.dtype.kind != "f":
            raise TypeError(f"MultiheadAttention: only boolean and floating-point masks are supported, got {m.dtype}")
        if m.requires_grad:
            raise NotImplementedError("MultiheadAttention: gradients with respect to a float mask are not "
                                      "supported; pass mask.detach()")
    if not masks:
        return None
    xp = _backend.backend_of(masks[0].data).xp
    arrays = [m.data for m in masks]
    if all(a.dtype == _backend.bool_ for a in arrays):
        masked_out = arrays[0] if len(arrays) == 1 else xp.logical_or(*arrays)
        return Tensor(xp.logical_not(masked_out))
    additive = [xp.where(a, dtype.type(-float("inf")), dtype.type(0)) if a.dtype == _backend.bool_
                else a.astype(dtype, copy=False) for a in arrays]
    return Tensor(additive[0] if len(additive) == 1 else additive[0] + additive[1])
