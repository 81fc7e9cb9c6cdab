"""Scaled dot-product attention, the masked softmax it runs on, and nn.MultiheadAttention: values
against a float64 NumPy reference, gradient checks, errors, and side by side with PyTorch through
state_dict (those tests skip where PyTorch is not installed: run them with .venv-torch)."""
import numpy as np
import pytest

import gpudl as gd
from gpudl import nn
from gpudl.autograd import gradcheck
from gpudl.backend import masked_softmax as ms
from gpudl.nn import functional as F
from gpudl.ops.attention import attention

B, H, L, S, E, EV = 2, 3, 4, 6, 5, 7


def reference_attention(q, k, v, mask=None, causal=False, scale=None):
    """``(output, weights)`` in float64 NumPy; a row with nothing to attend to gets zeros."""
    z = q @ np.swapaxes(k, -1, -2) * (1 / np.sqrt(q.shape[-1]) if scale is None else scale)
    if mask is not None:
        z = np.where(mask, z, -np.inf) if mask.dtype == bool else z + mask
    if causal:
        z = np.where(np.tril(np.ones(z.shape[-2:], bool)), z, -np.inf)
    top = z.max(axis=-1, keepdims=True)
    top[np.isneginf(top)] = 0
    e = np.exp(z - top)
    total = e.sum(axis=-1, keepdims=True)
    p = e / np.where(total > 0, total, 1)
    return p @ v, p


def qkv(rng, batch=(B, H), length=L, source=S):
    return (rng.standard_normal(batch + (length, E)), rng.standard_normal(batch + (source, E)),
            rng.standard_normal(batch + (source, EV)))


# mask cases: (name, builder) with PyTorch's SDPA convention (boolean True = may attend)
MASKS = [
    ("none", lambda r: None),
    ("bool [L,S]", lambda r: r.random((L, S)) > 0.3),
    ("float [B,1,L,S]", lambda r: r.standard_normal((B, 1, L, S))),
    ("bool [B,1,1,S] padding", lambda r: np.array([[True] * 4 + [False] * 2, [True] * 6])[:, None, None, :]),
    ("bool [H,L,S]", lambda r: r.random((H, L, S)) > 0.4),
    ("bool [B,H,L,S]", lambda r: r.random((B, H, L, S)) > 0.4),
    ("float [B,H,1,S] with -inf", lambda r: np.where(r.random((B, H, 1, S)) > 0.3, 0.0, -np.inf)),
    ("bool [B,1,L,1]", lambda r: np.array([True, False, True, True])[None, None, :, None].repeat(B, 0)),
]
MASK_IDS = [name for name, _ in MASKS]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("case", range(len(MASKS)), ids=MASK_IDS)
def test_sdpa_matches_reference(device, case, causal):
    rng = np.random.default_rng(case)
    q, k, v = qkv(rng)
    mask = MASKS[case][1](rng)
    out, _ = attention(*(gd.tensor(a, device=device) for a in (q, k, v)),
                       None if mask is None else gd.tensor(mask, device=device), causal=causal)
    want, _ = reference_attention(q, k, v, mask, causal)
    assert out.shape == (B, H, L, EV) and out.dtype == np.float64
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("case", range(len(MASKS)), ids=MASK_IDS)
def test_sdpa_gradcheck(case, causal):
    rng = np.random.default_rng(10 + case)
    q, k, v = (gd.tensor(a, requires_grad=True) for a in qkv(rng))
    mask = MASKS[case][1](rng)
    mask = None if mask is None else gd.tensor(mask)
    assert gradcheck(lambda a, b, c: attention(a, b, c, mask, causal=causal, scale=0.7)[0], q, k, v)


def test_attention_weights_output_gradcheck():
    """Both outputs of the fused op (the weights too, as MultiheadAttention returns them) differentiate."""
    rng = np.random.default_rng(3)
    q, k, v = (gd.tensor(a, requires_grad=True) for a in qkv(rng, batch=(2,)))
    mask = gd.tensor(rng.random((L, S)) > 0.3)
    assert gradcheck(lambda a, b, c: attention(a, b, c, mask, need_weights=True), q, k, v)
    assert gradcheck(lambda a, b, c: attention(a, b, c, mask, need_weights=True)[1], q, k, v)


def test_dropout_gradcheck_and_extremes():
    rng = np.random.default_rng(4)
    q, k, v = (gd.tensor(a, requires_grad=True) for a in qkv(rng, batch=(2,)))

    def dropped(a, b, c):
        gd.manual_seed(7)  # the same dropout mask on every call
        return attention(a, b, c, dropout_p=0.4, need_weights=True)

    assert gradcheck(dropped, q, k, v)
    out, weights = dropped(q, k, v)
    kept = weights.numpy() != 0
    assert 0.3 < 1 - kept.mean() < 0.75  # about 40% of the weights dropped, the rest scaled by 1/0.6
    _, probs = reference_attention(q.numpy(), k.numpy(), v.numpy())
    np.testing.assert_allclose(weights.numpy()[kept], probs[kept] / 0.6, rtol=1e-12)
    zero = F.scaled_dot_product_attention(q, k, v, dropout_p=1.0)
    assert (zero.numpy() == 0).all()


def test_fully_masked_rows_give_zeros_and_zero_gradients(device):
    rng = np.random.default_rng(5)
    q, k, v = (gd.tensor(a, device=device, requires_grad=True) for a in qkv(rng))
    mask = np.ones((L, S), bool)
    mask[1] = False
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=gd.tensor(mask, device=device))
    assert (out.numpy()[:, :, 1] == 0).all() and np.isfinite(out.numpy()).all()
    out.sum().backward()
    assert (q.grad.numpy()[:, :, 1] == 0).all() and np.isfinite(k.grad.numpy()).all()


def test_forward_materialises_one_score_tensor():
    """The fused softmax works in place: the forward allocates one [B, H, L, S] array (the weights),
    not a chain of scores, masked scores, exponentials and probabilities."""
    import tracemalloc
    q, k, v = (gd.randn(2, 2, 256, 8, device="cpu", requires_grad=True) for _ in range(3))
    mask = gd.tensor(np.tril(np.ones((256, 256), bool)), device="cpu")
    score_bytes = 2 * 2 * 256 * 256 * 4
    F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # builds the kernels, fills the caches
    tracemalloc.start()
    try:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert score_bytes <= peak < 1.5 * score_bytes, (peak, score_bytes)
    assert out.shape == (2, 2, 256, 8)


def test_sdpa_unbatched_default_scale_and_other_sizes():
    rng = np.random.default_rng(6)
    q, k, v = qkv(rng, batch=(), length=1, source=9)
    out = F.scaled_dot_product_attention(gd.tensor(q), gd.tensor(k), gd.tensor(v), is_causal=True)
    np.testing.assert_allclose(out.numpy(), v[:1], rtol=1e-12)  # causal: query 0 sees key 0 only
    out = F.scaled_dot_product_attention(gd.tensor(q), gd.tensor(k), gd.tensor(v), scale=0.1)
    np.testing.assert_allclose(out.numpy(), reference_attention(q, k, v, scale=0.1)[0], rtol=1e-12)


@pytest.mark.parametrize("dtype,rtol", [("float32", 2e-6), ("float16", 4e-3)])
def test_sdpa_lower_precision(dtype, rtol):
    rng = np.random.default_rng(8)
    q, k, v = qkv(rng)
    mask = rng.random((L, S)) > 0.3
    out, _ = attention(*(gd.tensor(a, dtype=dtype) for a in (q, k, v)), gd.tensor(mask), causal=True)
    assert out.dtype == np.dtype(dtype)
    want, _ = reference_attention(*(a.astype(dtype).astype(np.float64) for a in (q, k, v)), mask, True)
    np.testing.assert_allclose(out.numpy().astype(np.float64), want, rtol=rtol, atol=rtol)


def test_a_float_mask_of_another_float_dtype_is_cast_to_the_query_dtype():
    rng = np.random.default_rng(9)
    q, k, v = qkv(rng)
    mask = rng.standard_normal((L, S))
    out = F.scaled_dot_product_attention(gd.tensor(q), gd.tensor(k), gd.tensor(v),
                                         attn_mask=gd.tensor(mask, dtype="float32"))
    want, _ = reference_attention(q, k, v, mask.astype(np.float32).astype(np.float64))
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-12)


@pytest.mark.parametrize("call,error,match", [
    (lambda q, k, v: F.scaled_dot_product_attention(q[0, 0, 0], k, v), ValueError, "at least 2 dimensions"),
    (lambda q, k, v: F.scaled_dot_product_attention(q, k, v.astype("float32")), TypeError, "same dtype"),
    (lambda q, k, v: F.scaled_dot_product_attention(q[:1], k, v), ValueError, "leading"),
    (lambda q, k, v: F.scaled_dot_product_attention(q, k[..., :2], v), ValueError, "do not fit"),
    (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=gd.zeros(L, S, dtype="int64")),
     TypeError, "boolean or floating point"),
    (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=gd.zeros(S, L)), ValueError,
     r"attn_mask of shape \(6, 4\) does not broadcast"),
    (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=gd.zeros(L, S, requires_grad=True)),
     NotImplementedError, "detach"),
    (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, dropout_p=1.5), ValueError, "dropout_p"),
    (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=gd.ones(L, S, dtype="bool"), is_causal=True),
     RuntimeError, "should not be set when is_causal=True"),
    (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, enable_gqa=True), NotImplementedError, "enable_gqa"),
])
def test_sdpa_errors(call, error, match):
    q, k, v = (gd.tensor(a) for a in qkv(np.random.default_rng(0)))
    with pytest.raises(error, match=match):
        call(q, k, v)


# --- the masked softmax twin and the kernel's mask layout ---------------------------------------

@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("case", range(len(MASKS)), ids=MASK_IDS)
def test_masked_softmax_twin_in_place(dtype, case):
    rng = np.random.default_rng(20 + case)
    scores = (rng.standard_normal((B, H, L, S)) * 3).astype(dtype)
    mask = MASKS[case][1](rng)
    if mask is not None and mask.dtype != bool:
        mask = mask.astype(dtype)
    z = scores.astype(np.float64) * 0.5
    z = np.where(mask, z, -np.inf) if mask is not None and mask.dtype == bool else z + (0 if mask is None else mask)
    z = np.where(np.tril(np.ones((L, S), bool)), z, -np.inf)
    top = z.max(-1, keepdims=True)
    top[np.isneginf(top)] = 0
    e = np.exp(z - top)
    want = e / np.maximum(e.sum(-1, keepdims=True), np.finfo(np.float64).tiny)
    got = ms.masked_softmax_forward(scores, mask, scale=0.5, causal=True)
    assert got is scores and got.dtype == np.dtype(dtype)
    tol = {"float16": 2e-3, "float32": 1e-6, "float64": 1e-14}[dtype]
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=tol, atol=tol)
    grad = rng.standard_normal(scores.shape).astype(dtype)
    want_g = 0.5 * want * (grad - (grad.astype(np.float64) * want).sum(-1, keepdims=True))
    got_g = ms.masked_softmax_backward(got, grad, scale=0.5, causal=True)
    assert got_g is grad
    np.testing.assert_allclose(got_g.astype(np.float64), want_g, rtol=5 * tol, atol=5 * tol)


@pytest.mark.parametrize("mask_shape,compact_size", [
    ((S,), S), ((L, S), L * S), ((L, 1), L * S), ((1, S), S), ((H, 1, S), H * S), ((B, 1, 1, S), B * S),
    ((B, H, L, S), B * H * L * S), ((B, 1, L, S), B * L * S), ((1, H, L, 1), H * L * S),
    ((7, B, 1, L, S), 7 * B * L * S),
    ((7, 1, H, 1, S), 7 * B * H * S),  # varies along batch axes 0 and 2, not 1: expanded over axis 1
])
def test_mask_layout_reads_the_broadcast_mask(mask_shape, compact_size):
    """The kernel's indexing (block (n // div) % mod, row l or 0) over the compact mask reads exactly
    the mask broadcast to the scores' shape, expanding only where the layout cannot express it."""
    scores_shape = (7, B, H, L, S) if len(mask_shape) == 5 else (B, H, L, S)
    mask = np.random.default_rng(0).random(mask_shape) > 0.5
    flat, div, mod, rows = ms.compact_mask(np, mask, scores_shape)
    n_batch = int(np.prod(scores_shape[:-2]))
    r = np.arange(n_batch * L)
    start = (((r // L) // div) % mod * rows + (0 if rows == 1 else r % L)) * S
    read = flat[start[:, None] + np.arange(S)]
    np.testing.assert_array_equal(read.reshape(scores_shape), np.broadcast_to(mask, scores_shape))
    assert flat.size == compact_size


def test_masked_softmax_argument_errors():
    scores = np.zeros((2, L, S))
    with pytest.raises(TypeError, match="boolean or of the scores' dtype"):
        ms.masked_softmax_forward(scores, np.zeros((L, S), np.float32))
    with pytest.raises(ValueError, match="does not broadcast"):
        ms.masked_softmax_forward(scores, np.zeros((3, L, S), bool))
    with pytest.raises(ValueError, match="C-contiguous"):
        ms.masked_softmax_forward(np.zeros((S, L)).T)
    with pytest.raises(TypeError, match="float16/float32/float64"):
        ms.masked_softmax_forward(np.zeros((L, S), np.int32))


# --- MultiheadAttention -----------------------------------------------------------------------

def test_mha_parameters_and_shapes():
    mha = nn.MultiheadAttention(8, 2)
    assert list(mha.state_dict()) == ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"]
    assert mha.in_proj_weight.shape == (24, 8) and (mha.in_proj_bias.numpy() == 0).all()
    assert (mha.out_proj.bias.numpy() == 0).all()
    bound = np.sqrt(6 / (24 + 8))  # Xavier-uniform over the stacked [3E, E] matrix, as PyTorch
    assert np.abs(mha.in_proj_weight.numpy()).max() <= bound
    x = gd.randn(5, 3, 8)
    out, w = mha(x, x, x)
    assert out.shape == (5, 3, 8) and w.shape == (3, 5, 5)
    np.testing.assert_allclose(w.numpy().sum(-1), 1, rtol=1e-6)
    out, w = mha(x, gd.randn(7, 3, 8), gd.randn(7, 3, 8), need_weights=True, average_attn_weights=False)
    assert out.shape == (5, 3, 8) and w.shape == (3, 2, 5, 7)
    assert mha(x, x, x, need_weights=False)[1] is None
    out, w = mha(x[:, 0], x[:, 0], x[:, 0])
    assert out.shape == (5, 8) and w.shape == (5, 5)
    first = nn.MultiheadAttention(8, 2, batch_first=True, bias=False)
    assert first.in_proj_bias is None and first.out_proj.bias is None
    assert first(x, x, x)[0].shape == (5, 3, 8)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(embed_dim=8, num_heads=3), ValueError, "divisible by num_heads"),
    (dict(embed_dim=8, num_heads=2, add_bias_kv=True), NotImplementedError, "add_bias_kv"),
    (dict(embed_dim=8, num_heads=2, add_zero_attn=True), NotImplementedError, "add_zero_attn"),
    (dict(embed_dim=8, num_heads=2, kdim=4), NotImplementedError, "kdim=4"),
    (dict(embed_dim=8, num_heads=2, vdim=4), NotImplementedError, "vdim=4"),
])
def test_mha_constructor_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        nn.MultiheadAttention(**kwargs)


@pytest.mark.parametrize("call,error,match", [
    (lambda m, x: m(x, x, x, is_causal=True), RuntimeError, "Need attn_mask if specifying the is_causal hint"),
    (lambda m, x: m(x, x, x, attn_mask=gd.zeros(4, 5, dtype="bool")), ValueError,
     r"2D attn_mask is \(4, 5\), but should be \(5, 5\)"),
    (lambda m, x: m(x, x, x, attn_mask=gd.zeros(3, 5, 5, dtype="bool")), ValueError, r"should be \(6, 5, 5\)"),
    (lambda m, x: m(x, x, x, key_padding_mask=gd.zeros(5, 3, dtype="bool")), ValueError,
     r"key_padding_mask shape of \(3, 5\)"),
    (lambda m, x: m(x, x, x, attn_mask=gd.zeros(5, 5, dtype="int64")), TypeError, "boolean and floating-point"),
    (lambda m, x: m(x[..., :4], x, x), ValueError, "embedding dimension of 8"),
    (lambda m, x: m(x, x[:, :2], x[:, :2]), ValueError, "different batch sizes"),
    (lambda m, x: m(x, x, x[:4]), ValueError, "does not match value shape"),
])
def test_mha_forward_errors(call, error, match):
    mha = nn.MultiheadAttention(8, 2)
    with pytest.raises(error, match=match):
        call(mha, gd.randn(5, 3, 8))


def test_mha_dropout_only_in_training():
    mha = nn.MultiheadAttention(8, 2, dropout=0.5)
    x = gd.randn(5, 3, 8)
    _, w_train = mha(x, x, x, average_attn_weights=False)
    assert (w_train.numpy() == 0).any()
    mha.eval()
    _, w_eval = mha(x, x, x, average_attn_weights=False)
    np.testing.assert_allclose(w_eval.numpy().sum(-1), 1, rtol=1e-6)


# --- side by side with PyTorch (float64, through state_dict) ----------------------------------

def close(got, want, what=""):
    """Agreement to 1e-7 (relative, with an absolute floor for values near 0)."""
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9, err_msg=what)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("case", range(len(MASKS)), ids=MASK_IDS)
def test_sdpa_matches_pytorch(torch, device, case, causal):
    rng = np.random.default_rng(30 + case)
    arrays = qkv(rng)
    mask = MASKS[case][1](rng)
    if causal and mask is not None:  # PyTorch refuses both: the mask carries the causal structure instead
        mask = mask & np.tril(np.ones((L, S), bool)) if mask.dtype == bool else \
            np.where(np.tril(np.ones((L, S), bool)), mask, -np.inf)
        causal = False
    mine = [gd.tensor(a, device=device, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    out = F.scaled_dot_product_attention(*mine, attn_mask=None if mask is None else gd.tensor(mask, device=device),
                                         is_causal=causal)
    ref = torch.nn.functional.scaled_dot_product_attention(
        *theirs, attn_mask=None if mask is None else torch.tensor(mask), is_causal=causal)
    close(out.numpy(), ref.detach().numpy(), "output")
    direction = rng.standard_normal(out.shape)
    (out * gd.tensor(direction, device=device)).sum().backward()
    (ref * torch.tensor(direction)).sum().backward()
    for name, a, b in zip("qkv", mine, theirs):
        close(a.grad.numpy(), b.grad.numpy(), f"grad {name}")


def _mha_pair(torch, device, batch_first=False, bias=True):
    torch.manual_seed(0)
    reference = torch.nn.MultiheadAttention(8, 2, bias=bias, batch_first=batch_first).double()
    model = nn.MultiheadAttention(8, 2, bias=bias, batch_first=batch_first).double().to(device)
    assert list(model.state_dict()) == list(reference.state_dict())
    model.load_state_dict({k: v.numpy() for k, v in reference.state_dict().items()})
    return model, reference


L_MHA, S_MHA, B_MHA = 5, 7, 3
CAUSAL_BOOL = np.triu(np.ones((L_MHA, L_MHA), bool), k=1)  # PyTorch's convention: True = masked out
PADDING = np.array([[False] * 5 + [True] * 2, [False] * 7, [False] * 3 + [True] * 4])
MHA_CASES = {
    "no mask": dict(),
    "causal bool attn_mask": dict(attn_mask=CAUSAL_BOOL),
    "causal float attn_mask": dict(attn_mask=np.where(CAUSAL_BOOL, -np.inf, 0.0)),
    "causal attn_mask with is_causal hint": dict(attn_mask=CAUSAL_BOOL, is_causal=True, need_weights=False),
    "key_padding_mask": dict(key_padding_mask=PADDING[:, :L_MHA] | np.eye(3, L_MHA, 2, dtype=bool)),
    "key_padding_mask and attn_mask": dict(key_padding_mask=PADDING[:, :L_MHA], attn_mask=CAUSAL_BOOL),
    "float key_padding_mask, per-head weights": dict(key_padding_mask=np.where(PADDING[:, :L_MHA], -np.inf, 0.0),
                                                      average_attn_weights=False),
    "3-D attn_mask": dict(attn_mask=np.random.default_rng(1).random((B_MHA * 2, L_MHA, L_MHA)) < 0.3),
    "cross attention with key_padding_mask": dict(cross=True, key_padding_mask=PADDING),
    "batch_first, no bias": dict(batch_first=True, bias=False, attn_mask=CAUSAL_BOOL),
    "unbatched": dict(unbatched=True, attn_mask=CAUSAL_BOOL),
}


@pytest.mark.parametrize("case", list(MHA_CASES))
def test_mha_matches_pytorch(torch, device, case):
    options = dict(MHA_CASES[case])
    cross, unbatched = options.pop("cross", False), options.pop("unbatched", False)
    model, reference = _mha_pair(torch, device, options.pop("batch_first", False), options.pop("bias", True))
    rng = np.random.default_rng(2)
    length, source = L_MHA, S_MHA if cross else L_MHA
    shape = (lambda n: (n, 8)) if unbatched else (
        (lambda n: (B_MHA, n, 8)) if model.batch_first else (lambda n: (n, B_MHA, 8)))
    arrays = [rng.standard_normal(shape(length))] + ([rng.standard_normal(shape(source))] * 2 if cross else [])
    mine = [gd.tensor(a, device=device, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    masks = {k: options.pop(k) for k in ("attn_mask", "key_padding_mask") if k in options}
    if unbatched and "key_padding_mask" in masks:
        masks["key_padding_mask"] = masks["key_padding_mask"][0]
    q_m, k_m, v_m = (mine * 3)[:3] if not cross else (mine[0], mine[1], mine[1])
    q_t, k_t, v_t = (theirs * 3)[:3] if not cross else (theirs[0], theirs[1], theirs[1])
    out, weights = model(q_m, k_m, v_m, **{k: gd.tensor(v, device=device) for k, v in masks.items()}, **options)
    ref, ref_weights = reference(q_t, k_t, v_t, **{k: torch.tensor(v) for k, v in masks.items()}, **options)
    close(out.numpy(), ref.detach().numpy(), "output")
    assert (weights is None) == (ref_weights is None)
    direction = rng.standard_normal(out.shape)
    loss = (out * gd.tensor(direction, device=device)).sum()
    ref_loss = (ref * torch.tensor(direction)).sum()
    if weights is not None:
        close(weights.numpy(), ref_weights.detach().numpy(), "attention weights")
        w_direction = rng.standard_normal(weights.shape)
        loss = loss + (weights * gd.tensor(w_direction, device=device)).sum()
        ref_loss = ref_loss + (ref_weights * torch.tensor(w_direction)).sum()
    loss.backward()
    ref_loss.backward()
    for name, a, b in zip(("query", "key/value"), mine, theirs):
        close(a.grad.numpy(), b.grad.numpy(), f"grad {name}")
    grads = dict(model.named_parameters())
    for name, p in reference.named_parameters():
        close(grads[name].grad.numpy(), p.grad.numpy(), f"grad {name}")
