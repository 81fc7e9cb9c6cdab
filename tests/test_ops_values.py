"""Op behaviour beyond the table in test_ops_gradcheck.py: numerical stability, ties and kinks,
no-grad results (comparisons, argmax), argument aliases, error messages, and property tests."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gpudl as gd

INF = float("inf")


def t64(values, device, requires_grad=True):
    return gd.tensor(np.asarray(values, dtype=np.float64), device=device, requires_grad=requires_grad)


# ------------------------------------------------------------------ softmax family: stability
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_family_is_stable_for_huge_and_infinite_logits(dtype, device):
    logits = np.array([[1e4, -1e4, -INF, 1e4 - 1.0],
                       [-1e4, -1e4 + 2.0, -INF, -1e4 + 1.0]])
    x = gd.tensor(logits, dtype=dtype, device=device, requires_grad=True)
    lse_expected = np.array([1e4 + np.log1p(np.exp(-1.0)), -1e4 + 2.0 + np.log1p(np.exp(-1.0) + np.exp(-2.0))])
    lse = x.logsumexp(axis=-1)
    np.testing.assert_allclose(lse.numpy(), lse_expected, rtol=1e-6)
    shifted = logits - lse_expected[:, None]
    log_sm = x.log_softmax(axis=-1).numpy()
    finite = np.isfinite(logits)
    np.testing.assert_allclose(log_sm[finite], shifted[finite], rtol=1e-5, atol=1e-3)
    assert np.all(log_sm[~finite] == -INF)
    sm = x.softmax(axis=-1).numpy()
    np.testing.assert_allclose(sm, np.exp(shifted), atol=1e-6)
    assert np.all(np.isfinite(sm)) and sm[0, 2] == 0.0
    np.testing.assert_allclose(sm.sum(axis=-1), 1.0, rtol=1e-6)
    for result in (lse.sum(), (x.softmax(axis=-1) * gd.ones_like(x)).sum(), x.log_softmax(axis=-1)[:, :2].sum()):
        (grad,) = gd.autograd.grad(result, x)
        assert np.all(np.isfinite(grad.numpy())), "gradients of the stable ops must be finite"


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_logsumexp_of_an_all_minus_inf_row_is_minus_inf_not_nan(device):
    x = gd.tensor([[-INF, -INF], [0.0, 0.0]], device=device)
    np.testing.assert_allclose(x.logsumexp(axis=1).numpy(), [-INF, np.log(2.0)])


def test_softmax_axes_and_defaults(device):
    x = t64(np.arange(6.0).reshape(2, 3), device)
    np.testing.assert_allclose(x.softmax().numpy().sum(axis=-1), [1.0, 1.0])
    np.testing.assert_allclose(gd.softmax(x, dim=0).numpy().sum(axis=0), [1.0, 1.0, 1.0])
    np.testing.assert_allclose(x.log_softmax(axis=0).numpy(), np.log(x.softmax(axis=0).numpy()))


# ------------------------------------------------------------------ no-grad results
def test_comparisons_return_bool_tensors_outside_the_graph(device):
    x = t64([1.0, 2.0, 3.0], device)
    y = gd.tensor([3.0, 2.0, 1.0], dtype="float64", device=device)
    cases = {
        "==": (x == y, [False, True, False]), "!=": (x != y, [True, False, True]),
        "<": (x < y, [True, False, False]), "<=": (x <= y, [True, True, False]),
        ">": (x > 2, [False, False, True]), ">=": (x >= 2.0, [False, True, True]),
        "and": ((x > 1) & (y > 1), [False, True, False]), "or": ((x > 2) | (y > 2), [True, False, True]),
        "not": (~(x > 1), [True, False, False]),
    }
    for name, (result, expected) in cases.items():
        assert result.dtype == np.bool_, name
        assert not result.requires_grad and result.grad_fn is None, name
        assert result.tolist() == expected, name
    assert (x.reshape(3, 1) < y).shape == (3, 3)
    zero_d = gd.tensor(1.0, device=device) == 1.0
    assert zero_d.shape == () and zero_d.item() is True and isinstance(zero_d.data, type(x.data))


def test_isfinite_isnan_any_all(device):
    x = gd.tensor([[1.0, INF], [np.nan, 0.0]], device=device)
    assert gd.isfinite(x).tolist() == [[True, False], [False, True]]
    assert x.isnan().tolist() == [[False, False], [True, False]]
    assert (x == 0).any().item() is True and (x == 0).all().item() is False
    assert (x > 0.5).any(axis=1).tolist() == [True, False]
    assert gd.all(gd.isfinite(x), dim=0, keepdim=True).tolist() == [[False, False]]


def test_argmax_argmin_values_ties_and_no_grad(device):
    x = t64([[1.0, 5.0, 5.0], [7.0, -2.0, -2.0]], device)
    assert x.argmax().item() == 3
    assert x.argmax(axis=1).tolist() == [1, 0], "ties resolve to the first maximum"
    assert x.argmin(axis=1).tolist() == [0, 1], "ties resolve to the first minimum"
    assert x.argmin(dim=0, keepdim=True).tolist() == [[0, 1, 1]]
    assert x.argmax(axis=-2).tolist() == [1, 0, 0]
    for result in (x.argmax(), x.argmax(axis=0), gd.argmin(x, axis=1)):
        assert result.dtype == np.int64 and not result.requires_grad and result.grad_fn is None
    with pytest.raises(ValueError, match="empty"):
        gd.zeros(0, device=device).argmax()


# ------------------------------------------------------------------ kinks and ties
def test_max_min_split_the_gradient_between_ties(device):
    x = t64([[1.0, 3.0, 3.0], [2.0, 0.0, 2.0]], device)
    (gx,) = gd.autograd.grad(x.max(axis=1).sum(), x)
    np.testing.assert_allclose(gx.numpy(), [[0, 0.5, 0.5], [0.5, 0, 0.5]])
    (gx,) = gd.autograd.grad(x.min(), x)
    np.testing.assert_allclose(gx.numpy(), [[0, 0, 0], [0, 1, 0]])


def test_maximum_minimum_split_ties_and_clip_passes_at_the_bounds(device):
    x = t64([-1.0, 0.0, 2.0], device)
    (gx,) = gd.autograd.grad(gd.maximum(x, 0.0).sum(), x)
    np.testing.assert_allclose(gx.numpy(), [0.0, 0.5, 1.0])
    (gx,) = gd.autograd.grad(gd.minimum(x, 0.0).sum(), x)
    np.testing.assert_allclose(gx.numpy(), [1.0, 0.5, 0.0])
    (gx,) = gd.autograd.grad(x.clip(-1.0, 1.0).sum(), x)
    np.testing.assert_allclose(gx.numpy(), [1.0, 1.0, 0.0])
    (gx,) = gd.autograd.grad(x.abs().sum(), x)
    np.testing.assert_allclose(gx.numpy(), [-1.0, 0.0, 1.0])


def test_prod_gradient_with_zeros(device):
    x = t64([[2.0, 0.0, 3.0], [0.0, 0.0, 5.0]], device)
    (gx,) = gd.autograd.grad(x.prod(axis=1).sum(), x)
    np.testing.assert_allclose(gx.numpy(), [[0.0, 6.0, 0.0], [0.0, 0.0, 0.0]])


def test_pow_at_zero_base_and_zero_exponent(device):
    x = t64([0.0, 2.0], device)
    (gx,) = gd.autograd.grad((x ** 2).sum(), x)
    np.testing.assert_allclose(gx.numpy(), [0.0, 4.0])
    (gx,) = gd.autograd.grad((x ** 0).sum(), x)
    np.testing.assert_array_equal(gx.numpy(), [0.0, 0.0])
    e = t64([1.5, 1.5], device)
    (ge,) = gd.autograd.grad((x.detach() ** e).sum(), e)
    np.testing.assert_allclose(ge.numpy(), [0.0, 2.0 ** 1.5 * np.log(2.0)])
    (ge,) = gd.autograd.grad((0.0 ** e).sum(), e)
    np.testing.assert_array_equal(ge.numpy(), [0.0, 0.0])


def test_split_with_decreasing_indices_matches_numpy_and_backpropagates(device):
    values = np.arange(5.0)
    x = t64(values, device)
    parts = x.split([3, 1], axis=0)  # NumPy's vocabulary: cut indices
    assert [p.tolist() for p in parts] == [a.tolist() for a in np.split(values, [3, 1])]
    sum(p.sum() for p in parts).backward()  # the first and last parts overlap on elements 1 and 2
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 2.0, 2.0, 1.0, 1.0])


# ------------------------------------------------------------------ argument conventions
def test_axis_dim_keepdims_keepdim_aliases(device):
    x = t64(np.arange(24.0).reshape(2, 3, 4), device, requires_grad=False)
    for name in ("sum", "mean", "max", "min", "var", "std", "prod", "logsumexp"):
        numpy_style = getattr(x, name)(axis=(0, 2), keepdims=True)
        population = {"correction": 0} if name in ("var", "std") else {}  # dim= alone divides by n - 1
        torch_style = getattr(x, name)(dim=[0, 2], keepdim=True, **population)
        assert numpy_style.shape == (1, 3, 1), name
        np.testing.assert_allclose(numpy_style.numpy(), torch_style.numpy(), err_msg=name)
    with pytest.raises(TypeError, match="sum: axis= .NumPy's vocabulary. cannot be mixed with dim="):
        x.sum(axis=0, dim=0)


def test_var_std_ddof_correction_unbiased(device):
    data = np.array([[1.0, 4.0, 2.0, 8.0], [3.0, 3.0, 5.0, 1.0]])
    x = t64(data, device, requires_grad=False)
    np.testing.assert_allclose(x.var(axis=None).item(), data.var())      # NumPy's vocabulary: ddof=0
    np.testing.assert_allclose(x.var().item(), data.var(ddof=1))          # PyTorch's: correction=1
    np.testing.assert_allclose(x.var(1).numpy(), data.var(axis=1, ddof=1))
    np.testing.assert_allclose(x.var(axis=1, ddof=1).numpy(), data.var(axis=1, ddof=1))
    np.testing.assert_allclose(x.var(axis=1, correction=1).numpy(), data.var(axis=1, ddof=1))
    np.testing.assert_allclose(x.var(axis=1, unbiased=True).numpy(), data.var(axis=1, ddof=1))
    np.testing.assert_allclose(x.var(axis=1, unbiased=False).numpy(), data.var(axis=1))
    np.testing.assert_allclose(x.std(axis=0, ddof=1).numpy(), data.std(axis=0, ddof=1))
    np.testing.assert_allclose(gd.std(x, correction=0).item(), data.std())
    with pytest.raises(TypeError, match="only one of"):
        x.var(ddof=1, unbiased=True)


def test_integer_reductions_follow_numpy(device):
    x = gd.tensor([[1, 2], [3, 4]], device=device)
    assert x.sum().item() == 10 and x.sum().dtype == np.int64
    assert x.mean().item() == 2.5 and x.mean(axis=0).tolist() == [2.0, 3.0]
    assert x.max(axis=1).tolist() == [2, 4] and x.prod().item() == 24


# ------------------------------------------------------------------ error messages
SHAPE_ERRORS = [
    ("matmul", lambda d: gd.zeros(2, 3, device=d) @ gd.zeros(2, 3, device=d), r"matmul.*\(2, 3\).*\(2, 3\)"),
    ("matmul-batch", lambda d: gd.zeros(2, 2, 3, device=d) @ gd.zeros(3, 3, 2, device=d),
     r"matmul.*\(2, 2, 3\).*\(3, 3, 2\)"),
    ("matmul-0d", lambda d: gd.zeros((), device=d) @ gd.zeros(2, device=d), r"matmul.*\(\).*\(2,\)"),
    ("add", lambda d: gd.zeros(2, device=d) + gd.zeros(3, device=d), r"add.*\(2,\).*\(3,\)"),
    ("mul", lambda d: gd.zeros(2, 3, device=d) * gd.zeros(2, device=d), r"mul.*\(2, 3\).*\(2,\)"),
    ("maximum", lambda d: gd.maximum(gd.zeros(2, device=d), gd.zeros(3, device=d)), r"maximum.*\(2,\).*\(3,\)"),
    ("where", lambda d: gd.where(gd.zeros(2, device=d) > 0, gd.zeros(2, device=d), gd.zeros(3, device=d)),
     r"where.*\(3,\)"),
    ("compare", lambda d: gd.zeros(2, device=d) < gd.zeros(3, device=d), r"less.*\(2,\).*\(3,\)"),
    ("broadcast_to", lambda d: gd.zeros(3, device=d).broadcast_to(2, 2), r"broadcast_to.*\(3,\).*\(2, 2\)"),
    ("expand", lambda d: gd.zeros(2, 3, device=d).expand(4, 3), r"\(2, 3\).*\(4, 3\)"),
    ("reshape", lambda d: gd.zeros(2, 3, device=d).reshape(4, 2), r"reshape.*\(2, 3\).*\(4, 2\)"),
    ("reshape-infer", lambda d: gd.zeros(2, 3, device=d).reshape(-1, 4), r"reshape.*\(2, 3\).*\(-1, 4\)"),
    ("concat", lambda d: gd.concat([gd.zeros(2, 3, device=d), gd.zeros(3, 2, device=d)]),
     r"concat.*\(2, 3\).*\(3, 2\)"),
    ("stack", lambda d: gd.stack([gd.zeros(2, device=d), gd.zeros(3, device=d)]), r"stack.*\(2,\).*\(3,\)"),
    ("split", lambda d: gd.zeros(2, 3, device=d).split(2, axis=1), r"split.*length 3.*2"),
    ("squeeze", lambda d: gd.zeros(2, 3, device=d).squeeze(axis=0), r"squeeze.*\(2, 3\)"),
    ("permute", lambda d: gd.zeros(2, 3, device=d).permute(0, 0), r"permute.*\(0, 0\).*\(2, 3\)"),
    ("pad", lambda d: gd.pad(gd.zeros(2, 3, device=d), ((1, 1),)), r"pad.*\(2, 3\)"),
]


@pytest.mark.parametrize("name, call, pattern", SHAPE_ERRORS, ids=[e[0] for e in SHAPE_ERRORS])
def test_bad_shapes_give_a_value_error_naming_the_op_and_shapes(name, call, pattern, device):
    with pytest.raises(ValueError, match=pattern):
        call(device)


AXIS_ERRORS = ["sum", "mean", "max", "min", "var", "std", "prod", "logsumexp", "softmax", "log_softmax",
               "argmax", "argmin", "any", "all", "split", "concat", "stack", "squeeze", "unsqueeze", "transpose",
               "flatten"]


@pytest.mark.parametrize("op", AXIS_ERRORS)
def test_out_of_range_axis_names_the_op_and_the_axis(op, device):
    x = gd.zeros(2, 3, device=device)
    calls = {
        "split": lambda: x.split(1, axis=5), "concat": lambda: gd.concat([x, x], axis=5),
        "stack": lambda: gd.stack([x, x], axis=5), "unsqueeze": lambda: x.unsqueeze(5),
        "transpose": lambda: x.transpose(0, 5), "flatten": lambda: x.flatten(0, 5),
    }
    call = calls.get(op, lambda: getattr(x, op)(axis=5) if hasattr(x, op) else getattr(gd, op)(x, axis=5))
    with pytest.raises(ValueError, match=rf"{op}: axis 5 .*out of range"):
        call()


def test_repeated_axis_and_non_int_axis_are_errors(device):
    x = gd.zeros(2, 3, device=device)
    with pytest.raises(ValueError, match="sum: repeated axis"):
        x.sum(axis=(0, -2))
    with pytest.raises(ValueError, match="mean: axis 1.0"):
        x.mean(axis=1.0)


def test_other_argument_errors(device):
    x = gd.zeros(2, 3, device=device)
    with pytest.raises(ValueError, match="clip: at least one"):
        x.clip()
    with pytest.raises(ValueError, match="max: cannot reduce an empty tensor"):
        gd.zeros(0, device=device).max()
    with pytest.raises(TypeError, match="str"):
        x + "a"
    with pytest.raises(TypeError, match="at least one operand must be a tensor"):
        gd.add(1.0, 2.0)


# ------------------------------------------------------------------ properties (hypothesis)
PROPERTY_SETTINGS = settings(max_examples=25, deadline=None,
                             suppress_health_check=[HealthCheck.function_scoped_fixture])


@PROPERTY_SETTINGS
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3),
       seed=st.integers(0, 2 ** 16))
def test_broadcast_add_mul_gradients_sum_back_to_each_input(shapes, seed, device):
    rng = np.random.default_rng(seed)
    (shape_a, shape_b), out_shape = shapes.input_shapes, shapes.result_shape
    a_np, b_np, g_np = rng.standard_normal(shape_a), rng.standard_normal(shape_b), rng.standard_normal(out_shape)
    a, b = t64(a_np, device), t64(b_np, device)
    out = a * b + a
    assert out.shape == out_shape
    np.testing.assert_allclose(out.numpy(), a_np * b_np + a_np)
    out.backward(gd.tensor(g_np, device=device))

    def sum_to(grad, shape):
        lead = grad.ndim - len(shape)
        grad = grad.sum(axis=tuple(range(lead)))
        return grad.sum(axis=tuple(k for k, n in enumerate(shape) if n == 1), keepdims=True).reshape(shape)

    assert a.grad.shape == shape_a and b.grad.shape == shape_b
    np.testing.assert_allclose(a.grad.numpy(), sum_to(g_np * (np.broadcast_to(b_np, out_shape) + 1), shape_a))
    np.testing.assert_allclose(b.grad.numpy(), sum_to(g_np * np.broadcast_to(a_np, out_shape), shape_b))


@PROPERTY_SETTINGS
@given(shape=hnp.array_shapes(min_dims=1, max_dims=4, max_side=4), data=st.data())
def test_permute_and_reshape_round_trips(shape, data, device):
    perm = data.draw(st.permutations(range(len(shape))))
    values = np.arange(float(np.prod(shape))).reshape(shape)
    x = t64(values, device)
    inverse = np.argsort(perm).tolist()
    permuted = x.permute(perm)
    np.testing.assert_array_equal(permuted.numpy(), values.transpose(perm))
    flat = permuted.reshape(-1)
    back = flat.reshape(permuted.shape).permute(inverse)
    np.testing.assert_array_equal(back.numpy(), values)
    np.testing.assert_array_equal(x.T.T.numpy(), values)
    weights = np.random.default_rng(len(shape)).standard_normal(flat.shape)
    (flat * gd.tensor(weights, device=device)).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), weights.reshape(permuted.shape).transpose(inverse))
