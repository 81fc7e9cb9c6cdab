"""In-place ops under autograd: PyTorch's values and gradients for every input, ±inf and NaN included.

The PyTorch side-by-side tests skip without torch (CI runs them in the parity environment,
``.venv-torch``); the fixed-value tests run everywhere.
"""
import tracemalloc

import numpy as np
import pytest

import gpudl as gd

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # inf and NaN are the point here

SPECIAL = np.array([-np.inf, -2.0, -0.5, 0.0, 0.5, 2.0, np.inf, np.nan])
OTHER = np.array([1.5, 0.0, np.inf, np.nan, -1.0, 3.0, 0.0, 2.0])
WEIGHTS = np.array([0.3, -1.2, 0.7, 2.0, -0.4, 1.1, 0.9, -2.5])


def leaf(values, device):
    return gd.tensor(np.asarray(values, dtype=np.float64), requires_grad=True, device=device)


def assert_same(ours, theirs):
    np.testing.assert_allclose(ours, theirs, rtol=1e-14, atol=0, equal_nan=True)


# ------------------------------------------------------------------ fixed values (no PyTorch needed)
def test_fill_replaces_infinities_and_sends_an_explicit_zero_gradient(device):
    x = leaf([1.0, 2.0, 3.0], device)
    y = (gd.log(x - 1) * 1).fill_(5)  # log(0) = -inf: 0 * -inf + 5 would be NaN
    np.testing.assert_array_equal(y.numpy(), [5.0, 5.0, 5.0])
    y.sum().backward()
    # the zero gradient reaches log, whose backward makes 0 / 0 at x = 1: PyTorch's [nan, 0, 0]
    assert_same(x.grad.numpy(), [np.nan, 0.0, 0.0])


@pytest.mark.parametrize("op", ["zero_", "copy_"])
def test_zero_and_copy_overwrite_nan_and_inf(op, device):
    x = leaf([0.0, -1.0, 2.0], device)
    y = gd.log(x)  # -inf, nan, log 2
    if op == "zero_":
        y.zero_()
        expected = [0.0, 0.0, 0.0]
    else:
        y.copy_(gd.tensor([7.0, 8.0, 9.0], dtype="float64", device=device))
        expected = [7.0, 8.0, 9.0]
    np.testing.assert_array_equal(y.numpy(), expected)
    y.sum().backward()
    # the explicit zero reaches log's backward, g / x: 0 / 0 is NaN, as in PyTorch
    assert_same(x.grad.numpy(), [np.nan, 0.0, 0.0])


def test_copy_sends_the_summed_gradient_to_a_broadcast_source_in_its_dtype(device):
    x = leaf(np.zeros((2, 3)), device)
    source = gd.tensor([1.0, 2.0, 3.0], dtype="float32", requires_grad=True, device=device)
    y = (x * 2).copy_(source)
    assert y.dtype == np.float64
    (y * gd.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype="float64", device=device)).sum().backward()
    assert source.grad.dtype == np.float32
    np.testing.assert_array_equal(source.grad.numpy(), [5.0, 7.0, 9.0])
    np.testing.assert_array_equal(x.grad.numpy(), np.zeros((2, 3)))


def test_fill_with_a_0d_tensor_sends_it_the_summed_gradient(device):
    x = leaf([1.0, 2.0], device)
    value = gd.tensor(3.0, dtype="float64", requires_grad=True, device=device)
    y = (x * 1).fill_(value)
    np.testing.assert_array_equal(y.numpy(), [3.0, 3.0])
    (y * y).sum().backward()
    np.testing.assert_allclose(value.grad.numpy(), 12.0)  # d/dv (2 v^2) = 4 v
    with pytest.raises(RuntimeError, match=r"fill_: the value must be a number or a 0-d tensor.*\(2,\)"):
        (x * 1).fill_(gd.ones(2, dtype="float64", device=device))


def test_copy_from_a_source_that_does_not_broadcast_names_both_shapes(device):
    y = leaf([1.0, 2.0, 3.0], device) * 1
    with pytest.raises(RuntimeError, match=r"copy_: a source of shape \(2,\) does not broadcast to the shape \(3,\)"):
        y.copy_(gd.ones(2, dtype="float64", device=device))


def test_fill_and_copy_gradchecks(device):
    def filled(x, v):
        return (x * 1.5).fill_(v) * x

    def copied(x, s):
        return (x * 1.5).copy_(s) * x

    x = leaf([-0.8, 0.1, 1.3], device)
    assert gd.autograd.gradcheck(filled, x, leaf(0.4, device))
    assert gd.autograd.gradcheck(copied, x, leaf([0.7], device))  # broadcast source


@pytest.mark.parametrize("name, op, reads_old", [
    ("fill_", lambda y, o: y.fill_(2.0), False),
    ("zero_", lambda y, o: y.zero_(), False),
    ("copy_", lambda y, o: y.copy_(o), False),
    ("add_", lambda y, o: y.add_(o), False),
    ("div_", lambda y, o: y.div_(o), False),
    ("mul_ by a constant", lambda y, o: y.mul_(o), False),
    ("mul_ by a tensor that requires grad", lambda y, o: y.mul_(o * 1), True),
])
def test_inplace_under_autograd_copies_the_old_values_only_when_backward_needs_them(name, op, reads_old):
    n = 1 << 18  # 2 MiB of float64
    x = gd.ones(n, dtype="float64", requires_grad=True)
    other = gd.full((n,), 2.0, dtype="float64", requires_grad="tensor that" in name)
    y = x * 1
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        op(y, other)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    nbytes = n * 8
    # the result is computed out of place (one array); a copy of the old values is a second one
    # (a third for ``o * 1`` in the last case)
    assert peak < (3.5 if reads_old else 1.5) * nbytes, f"{name}: peak {peak / nbytes:.2f}x the tensor"
    if reads_old:
        assert peak > 2.5 * nbytes


# ------------------------------------------------------------------ side by side with PyTorch
INPLACE = {
    "fill_": lambda t, o: t.fill_(5.0),
    "fill_ nan": lambda t, o: t.fill_(float("nan")),
    "fill_ 0-d tensor": lambda t, o: t.fill_(o[3]),
    "zero_": lambda t, o: t.zero_(),
    "copy_": lambda t, o: t.copy_(o),
    "copy_ broadcast": lambda t, o: t.copy_(o[5:6]),
    "add_": lambda t, o: t.add_(o),
    "add_ alpha": lambda t, o: t.add_(o, alpha=-2.0),
    "sub_": lambda t, o: t.sub_(o),
    "mul_": lambda t, o: t.mul_(o),
    "mul_ scalar": lambda t, o: t.mul_(0.0),
    "div_": lambda t, o: t.div_(o),
    "div_ scalar": lambda t, o: t.div_(0.0),
    "clamp_": lambda t, o: t.clamp_(-1.0, 1.0),
    "clamp_ min": lambda t, o: t.clamp_(min=0.0),
    "clamp_ crossed bounds": lambda t, o: t.clamp_(1.0, -1.0),
}
BEFORE = {"mul": lambda t: t * 2.0, "exp": lambda t: t.exp(), "abs": lambda t: t.abs()}


@pytest.mark.parametrize("before", sorted(BEFORE))
@pytest.mark.parametrize("name", sorted(INPLACE))
def test_inplace_values_and_gradients_match_pytorch(name, before):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed: no side-by-side check")

    def run(tensor):
        x = tensor(SPECIAL.copy(), requires_grad=True)
        other = tensor(OTHER.copy(), requires_grad=True)
        y = BEFORE[before](x)
        INPLACE[name](y, other)
        values = y.detach().numpy()
        try:
            (y * tensor(WEIGHTS)).sum().backward()
        except RuntimeError as exc:  # exp saves its output: then both must refuse
            assert "in-place" in str(exc) or "inplace" in str(exc)
            return values, "refused", None
        grad = other.grad
        return values, x.grad.numpy(), None if grad is None else grad.numpy()

    ours = run(lambda v, requires_grad=False: gd.tensor(v, dtype="float64", requires_grad=requires_grad))
    theirs = run(lambda v, requires_grad=False: torch.tensor(v, dtype=torch.float64, requires_grad=requires_grad))
    assert_same(ours[0], theirs[0])
    if isinstance(theirs[1], str) or isinstance(ours[1], str):
        assert ours[1] == theirs[1]
        return
    assert_same(ours[1], theirs[1])
    if theirs[2] is None:
        assert ours[2] is None or not np.any(ours[2])
    else:
        assert_same(ours[2], theirs[2])


@pytest.mark.parametrize("name", sorted(INPLACE))
def test_inplace_without_autograd_matches_pytorch(name):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed: no side-by-side check")
    ours = gd.tensor(SPECIAL.copy(), dtype="float64")
    theirs = torch.tensor(SPECIAL.copy(), dtype=torch.float64)
    INPLACE[name](ours, gd.tensor(OTHER.copy(), dtype="float64"))
    INPLACE[name](theirs, torch.tensor(OTHER.copy(), dtype=torch.float64))
    assert_same(ours.numpy(), theirs.numpy())
