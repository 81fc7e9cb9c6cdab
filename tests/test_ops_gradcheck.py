"""Every differentiable op: numerical gradient check (float64) and forward values against NumPy.

``OP_CASES`` is the one table of op cases; test_dtypes.py runs the same table for dtype
discipline. A case's ``fn(m, *xs)`` is written once against a module ``m``: it is called with
``m=gpudl`` on tensors and, unless the case gives its own ``ref``, with ``m=numpy`` on arrays
for the reference values. Constants such as masks and conditions are derived from the inputs
(``x > 0``), so a case runs unchanged on any device.
"""
from dataclasses import dataclass

import numpy as np
import pytest

import gpudl as gd
from gpudl.nn import functional as F


@dataclass(frozen=True)
class OpCase:
    """One op call: ``fn(m, *inputs)`` on inputs of ``shapes`` drawn from ``domains``."""

    id: str
    fn: object
    shapes: tuple
    ref: object = None
    domains: tuple = ()   # per input: "any" (normal), "pos" (0.5..2), "nonzero" (|x| in 0.5..2), "zero" (a 0 inside)

    def reference(self, *arrays):
        """The NumPy result for host arrays."""
        return self.ref(*arrays) if self.ref is not None else self.fn(np, *arrays)

    def domain(self, k):
        return self.domains[k] if k < len(self.domains) else "any"


def draw(shape, domain, rng):
    """A float64 host array of ``shape`` for ``domain`` (see OpCase.domains)."""
    if domain == "pos":
        return rng.uniform(0.5, 2.0, shape)
    if domain == "nonzero":
        return rng.uniform(0.5, 2.0, shape) * rng.choice([-1.0, 1.0], shape)
    values = rng.standard_normal(shape)
    if domain == "zero":
        values.reshape(-1)[1] = 0.0
    return values


def case_arrays(case, seed=0):
    """Host float64 inputs for ``case`` (the same ones for every test of that case)."""
    rng = np.random.default_rng(seed)
    return [draw(shape, case.domain(k), rng) for k, shape in enumerate(case.shapes)]


def as_outputs(result):
    """A result as a list of outputs (split returns a list)."""
    return list(result) if isinstance(result, (list, tuple)) else [result]


def np_logsumexp(x, axis=None, keepdims=False):
    m = np.max(x, axis=axis, keepdims=True)
    out = np.log(np.exp(x - m).sum(axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)


def np_softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def np_log_softmax(x, axis=-1):
    return x - np_logsumexp(x, axis=axis, keepdims=True)


def np_layer_norm(x, k, eps=1e-5):
    """``x`` normalised over its last ``k`` axes (biased variance)."""
    axes = tuple(range(x.ndim - k, x.ndim))
    return (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True) + eps)


C = OpCase
OP_CASES = [
    # ---- arithmetic, with broadcasting and Python / NumPy scalars
    C("add", lambda m, a, b: a + b, ((3, 4), (3, 4))),
    C("add-broadcast", lambda m, a, b: a + b, ((3, 1), (4,))),
    C("add-0d", lambda m, a, b: a + b, ((), (2, 3))),
    C("add-scalar", lambda m, a: a + 1, ((2, 3),)),
    C("sub-broadcast", lambda m, a, b: a - b, ((2, 1, 4), (3, 1))),
    C("rsub-scalar", lambda m, a: 1.5 - a, ((2, 3),)),
    C("mul-broadcast", lambda m, a, b: a * b, ((2, 1, 4), (3, 1))),
    C("mul-scalar", lambda m, a: 2.5 * a, ((2, 3),)),
    C("mul-numpy-scalar", lambda m, a: np.float32(2) * a, ((2, 3),)),
    C("div-broadcast", lambda m, a, b: a / b, ((3, 4), (4,)), domains=("any", "nonzero")),
    C("rdiv-scalar", lambda m, a: 3 / a, ((2, 3),), domains=("nonzero",)),
    C("neg", lambda m, a: -a, ((2, 3),)),
    C("pow-int", lambda m, a: a ** 3, ((2, 3),)),
    C("pow-fractional", lambda m, a: a ** 0.5, ((2, 3),), domains=("pos",)),
    C("pow-negative", lambda m, a: a ** -1.5, ((2, 3),), domains=("pos",)),
    C("pow-tensor", lambda m, a, b: a ** b, ((2, 3), (3,)), domains=("pos", "any")),
    C("rpow-scalar", lambda m, a: 2.0 ** a, ((2, 3),)),
    # ---- matmul
    C("matmul-1d-1d", lambda m, a, b: a @ b, ((4,), (4,))),
    C("matmul-2d-2d", lambda m, a, b: a @ b, ((3, 4), (4, 2))),
    C("matmul-2d-1d", lambda m, a, b: a @ b, ((3, 4), (4,))),
    C("matmul-1d-2d", lambda m, a, b: a @ b, ((4,), (4, 2))),
    C("matmul-1d-3d", lambda m, a, b: a @ b, ((3,), (2, 3, 2))),
    C("matmul-3d-1d", lambda m, a, b: a @ b, ((2, 2, 3), (3,))),
    C("matmul-3d-2d", lambda m, a, b: a @ b, ((2, 3, 4), (4, 2))),
    C("matmul-2d-3d", lambda m, a, b: a @ b, ((3, 4), (2, 4, 2))),
    C("matmul-batch-broadcast", lambda m, a, b: m.matmul(a, b), ((2, 1, 2, 3), (3, 3, 2))),
    # ---- elementwise
    C("exp", lambda m, a: m.exp(a), ((2, 3),)),
    C("log", lambda m, a: m.log(a), ((2, 3),), domains=("pos",)),
    C("sqrt", lambda m, a: m.sqrt(a), ((2, 3),), domains=("pos",)),
    C("abs", lambda m, a: m.abs(a), ((2, 3),), domains=("nonzero",)),
    C("clip", lambda m, a: m.clip(a, -0.5, 0.5), ((3, 4),)),
    C("clip-min-only", lambda m, a: m.clip(a, -0.2, None), ((3, 4),)),
    C("clamp-method", lambda m, a: a.clamp(max=0.3), ((3, 4),), ref=lambda a: np.clip(a, None, 0.3)),
    C("maximum", lambda m, a, b: m.maximum(a, b), ((3, 4), (4,))),
    C("maximum-scalar", lambda m, a: m.maximum(a, 0.1), ((3, 4),)),
    C("minimum", lambda m, a, b: m.minimum(a, b), ((3, 1), (2, 1, 4))),
    C("where", lambda m, a, b: m.where(a > b, a, b * 2), ((3, 4), (3, 4))),
    C("where-broadcast", lambda m, a, b: m.where(b > 0, a, b), ((3, 4), (4,))),
    C("where-scalar", lambda m, a: m.where(a > 0, a, 0.0), ((3, 4),)),
    # ---- reductions
    C("sum-all", lambda m, a: a.sum(), ((2, 3, 4),)),
    C("sum-axis", lambda m, a: a.sum(axis=1), ((2, 3, 4),)),
    C("sum-negative-axis-keepdims", lambda m, a: a.sum(axis=-1, keepdims=True), ((2, 3, 4),)),
    C("sum-tuple", lambda m, a: a.sum(axis=(0, 2)), ((2, 3, 4),)),
    C("sum-0d", lambda m, a: a.sum(), ((),)),
    C("mean-all", lambda m, a: a.mean(), ((2, 3, 4),)),
    C("mean-tuple-keepdims", lambda m, a: a.mean(axis=(0, -1), keepdims=True), ((2, 3, 4),)),
    C("max-all", lambda m, a: a.max(), ((3, 4),)),
    C("max-axis", lambda m, a: a.max(axis=0), ((3, 4),)),
    C("max-tuple-keepdims", lambda m, a: a.max(axis=(0, 2), keepdims=True), ((2, 3, 4),)),
    C("min-negative-axis", lambda m, a: a.min(axis=-1), ((2, 3, 4),)),
    C("var-all", lambda m, a: a.var(axis=None), ((3, 4),)),
    C("var-ddof", lambda m, a: a.var(axis=1, ddof=1), ((3, 4),)),
    C("var-correction", lambda m, a: m.var(a, axis=(0, 1), correction=1), ((2, 3, 4),),
      ref=lambda a: a.var(axis=(0, 1), ddof=1)),
    C("var-unbiased-keepdims", lambda m, a: a.var(axis=-1, keepdims=True, unbiased=True), ((3, 4),),
      ref=lambda a: a.var(axis=-1, keepdims=True, ddof=1)),
    C("std-all", lambda m, a: a.std(axis=None), ((3, 4),)),
    C("std-axis-ddof", lambda m, a: a.std(axis=0, ddof=1, keepdims=True), ((3, 4),)),
    C("std-unbiased", lambda m, a: m.std(a, axis=1, unbiased=False), ((3, 4),), ref=lambda a: a.std(axis=1)),
    C("prod-all", lambda m, a: a.prod(), ((2, 3),)),
    C("prod-axis", lambda m, a: a.prod(axis=1), ((3, 4),)),
    C("prod-tuple-keepdims", lambda m, a: a.prod(axis=(0, 2), keepdims=True), ((2, 3, 2),)),
    C("prod-with-zero", lambda m, a: a.prod(axis=-1), ((2, 4),), domains=("zero",)),
    # ---- softmax family
    C("softmax", lambda m, a: a.softmax(), ((3, 4),), ref=np_softmax),
    C("softmax-axis0", lambda m, a: m.softmax(a, axis=0), ((3, 4),), ref=lambda a: np_softmax(a, 0)),
    C("log_softmax", lambda m, a: a.log_softmax(dim=-1), ((3, 4),), ref=np_log_softmax),
    C("log_softmax-axis1", lambda m, a: m.log_softmax(a, axis=1), ((2, 3, 2),), ref=lambda a: np_log_softmax(a, 1)),
    C("logsumexp-all", lambda m, a: a.logsumexp(), ((3, 4),), ref=np_logsumexp),
    C("logsumexp-axis", lambda m, a: a.logsumexp(axis=-1), ((3, 4),), ref=lambda a: np_logsumexp(a, -1)),
    C("logsumexp-tuple-keepdims", lambda m, a: a.logsumexp(axis=(0, 2), keepdims=True), ((2, 3, 2),),
      ref=lambda a: np_logsumexp(a, (0, 2), keepdims=True)),
    # ---- layer norm (fused row kernels; PyTorch's biased variance, eps inside the square root)
    C("layer_norm-affine", lambda m, x, w, b: F.layer_norm(x, (5,), w, b), ((3, 2, 5), (5,), (5,)),
      ref=lambda x, w, b: np_layer_norm(x, 1) * w + b),
    C("layer_norm-2d-shape", lambda m, x: F.layer_norm(x, (3, 4), eps=1e-3), ((2, 3, 4),),
      ref=lambda x: np_layer_norm(x, 2, eps=1e-3)),
    C("layer_norm-weight-only", lambda m, x, w: F.layer_norm(x, (2, 3), w), ((4, 2, 3), (2, 3)),
      ref=lambda x, w: np_layer_norm(x, 2) * w),
    # ---- shape
    C("reshape", lambda m, a: a.reshape(4, -1), ((2, 3, 4),)),
    C("reshape-tuple", lambda m, a: a.reshape((6, 4)), ((2, 3, 4),)),
    C("view", lambda m, a: a.view(3, 8), ((2, 3, 4),), ref=lambda a: a.reshape(3, 8)),
    C("transpose", lambda m, a: a.transpose(), ((2, 3, 4),)),
    C("transpose-swap", lambda m, a: m.swapaxes(a, 0, -1), ((2, 3, 4),)),
    C("transpose-pair-torch", lambda m, a: a.transpose(0, 2), ((2, 3, 4),), ref=lambda a: a.swapaxes(0, 2)),
    C("T", lambda m, a: a.T, ((3, 4),)),
    C("permute", lambda m, a: a.permute(2, 0, 1), ((2, 3, 4),), ref=lambda a: a.transpose(2, 0, 1)),
    C("flatten", lambda m, a: a.flatten(), ((2, 3, 4),)),
    C("flatten-range", lambda m, a: a.flatten(1, 2), ((2, 3, 4),), ref=lambda a: a.reshape(2, 12)),
    C("squeeze", lambda m, a: a.squeeze(), ((1, 3, 1),)),
    C("squeeze-axis", lambda m, a: a.squeeze(axis=-1), ((1, 3, 1),)),
    C("unsqueeze", lambda m, a: a.unsqueeze(-1), ((2, 3),), ref=lambda a: a[..., None]),
    C("expand_dims", lambda m, a: m.expand_dims(a, 1), ((2, 3),)),
    C("expand", lambda m, a: a.expand(2, 3, 4), ((3, 1),), ref=lambda a: np.broadcast_to(a, (2, 3, 4))),
    C("expand-keep", lambda m, a: a.expand(2, -1, 4), ((3, 1),), ref=lambda a: np.broadcast_to(a, (2, 3, 4))),
    C("broadcast_to", lambda m, a: m.broadcast_to(a, (2, 3, 4)), ((4,),)),
    # ---- indexing (backward by scatter-add)
    C("index-int", lambda m, a: a[1], ((3, 4),)),
    C("index-negative-int", lambda m, a: a[-1, 2], ((3, 4),)),
    C("index-slice", lambda m, a: a[:, 1:3], ((3, 4),)),
    C("index-steps", lambda m, a: a[::2, ::-1], ((3, 4),)),
    C("index-none-ellipsis", lambda m, a: a[None, ..., 0], ((2, 3, 4),)),
    C("index-int-array-repeats", lambda m, a: a[[0, 2, 2, 0]], ((3, 4),)),
    C("index-int-array-2d", lambda m, a: a[np.array([[0, 1], [1, 1]])], ((3, 2),)),
    C("index-int-array-pairs", lambda m, a: a[[0, 2, 0], [1, 1, 1]], ((3, 4),)),
    C("index-mixed", lambda m, a: a[1:, [0, 0, 3]], ((3, 4),)),
    C("index-bool-mask", lambda m, a: a[a > 0], ((3, 4),)),
    C("index-bool-rows", lambda m, a: a[np.array([True, False, True])], ((3, 4),)),
    # ---- joining and splitting
    C("concat", lambda m, a, b: m.concat([a, b]), ((2, 3), (1, 3))),
    C("concat-negative-axis", lambda m, a, b, c: m.concat([a, b, c], axis=-1), ((2, 1), (2, 3), (2, 2))),
    C("stack", lambda m, a, b: m.stack([a, b]), ((2, 3), (2, 3))),
    C("stack-last", lambda m, a, b, c: m.stack([a, b, c], axis=-1), ((2, 3), (2, 3), (2, 3))),
    C("split-sections", lambda m, a: m.split(a, 2, axis=1), ((3, 4),)),
    C("split-indices", lambda m, a: a.split([1, 3], axis=0), ((4, 2),), ref=lambda a: np.split(a, [1, 3])),
    C("pad-int", lambda m, a: m.pad(a, 1), ((2, 3),), ref=lambda a: np.pad(a, 1)),
    C("pad-pairs-value", lambda m, a: m.pad(a, ((0, 1), (2, 0)), value=1.5), ((2, 3),),
      ref=lambda a: np.pad(a, ((0, 1), (2, 0)), constant_values=1.5)),
]
del C

CASE_IDS = [case.id for case in OP_CASES]
assert len(set(CASE_IDS)) == len(CASE_IDS), "op case ids must be unique"


def leaves(arrays, device, layout="contiguous"):
    """Leaf tensors from which ``view(leaf, layout)`` gives the op inputs with the values ``arrays``.

    For "transposed" and "strided" the leaf stores the values so that the view handed to the
    op is non-contiguous (``leaf.permute(...)`` / ``leaf[..., ::2]``).
    """
    result = []
    for a in arrays:
        if layout == "transposed" and a.ndim >= 2:
            a = np.ascontiguousarray(a.transpose(tuple(reversed(range(a.ndim)))))
        elif layout == "strided" and a.ndim >= 1:
            spread = np.zeros(a.shape[:-1] + (2 * a.shape[-1],))
            spread[..., ::2] = a
            a = spread
        result.append(gd.tensor(a, device=device, requires_grad=True))
    return result


def view(leaf, layout):
    """The op input made from ``leaf`` (see ``leaves``)."""
    if layout == "transposed" and leaf.ndim >= 2:
        return leaf.permute(tuple(reversed(range(leaf.ndim))))
    if layout == "strided" and leaf.ndim >= 1:
        return leaf[..., ::2]
    return leaf


def _gradcheck_params():
    """Every case contiguous, and with each layout that makes one of its inputs non-contiguous."""
    def non_contiguous(shape, layout):
        (leaf,) = leaves([np.zeros(shape)], "cpu", layout)
        return not view(leaf, layout).data.flags.c_contiguous

    params = []
    for case in OP_CASES:
        params.append(pytest.param(case, "contiguous", id=case.id))
        for layout in ("strided", "transposed"):
            if any(non_contiguous(shape, layout) for shape in case.shapes):
                params.append(pytest.param(case, layout, id=f"{case.id}-{layout}"))
    return params


@pytest.mark.parametrize("case, layout", _gradcheck_params())
def test_gradcheck(case, layout, device):
    base = leaves(case_arrays(case), device, layout)
    assert gd.autograd.gradcheck(lambda *ts: case.fn(gd, *(view(t, layout) for t in ts)), *base)


@pytest.mark.parametrize("case", OP_CASES, ids=CASE_IDS)
def test_forward_matches_numpy(case, device):
    arrays = case_arrays(case)
    outputs = as_outputs(case.fn(gd, *leaves(arrays, device)))
    expected = as_outputs(case.reference(*arrays))
    assert len(outputs) == len(expected)
    for out, ref in zip(outputs, expected):
        assert isinstance(out, gd.Tensor)
        assert out.shape == np.shape(ref)
        assert out.grad_fn is not None and out.requires_grad
        np.testing.assert_allclose(out.numpy(), ref, rtol=1e-12, atol=1e-12)


def test_gradcheck_detects_a_wrong_gradient():
    """gradcheck itself must fail when backward is wrong (a check that cannot fail is a defect)."""

    class WrongSquare(gd.autograd.Function):
        def forward(self, x):
            self.saved = (x,)
            return x * x

        def backward(self, g):
            return g * self.saved[0]  # should be 2 * x * g

    x = gd.tensor(np.linspace(0.5, 1.5, 4), requires_grad=True)
    with pytest.raises(gd.autograd.GradcheckError, match="input 0"):
        gd.autograd.gradcheck(lambda t: WrongSquare().apply(t), x)


def test_gradcheck_rejects_float32_and_inputs_without_grad():
    with pytest.raises(TypeError, match="float64"):
        gd.autograd.gradcheck(lambda t: t * 2, gd.ones(3, requires_grad=True))
    with pytest.raises(ValueError, match="requires grad"):
        gd.autograd.gradcheck(lambda t: t * 2, gd.ones(3, dtype="float64"))


def test_gradcheck_skips_outputs_that_are_not_differentiable(device):
    x = gd.tensor([0.1, 0.5, 0.3], dtype="float64", device=device, requires_grad=True)
    constant = gd.tensor([1.0, 2.0, 3.0], dtype="float64", device=device)
    assert gd.autograd.gradcheck(lambda t: (t.argmax(), constant * 2, t * 3, t.exp()), x)
    with pytest.raises(ValueError, match="no output that requires grad"):
        gd.autograd.gradcheck(lambda t: t.argmax(), x)
