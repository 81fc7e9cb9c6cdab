"""Indexing: every index kind against NumPy, gradients scattered back (repeats accumulate),
index tensors, views, assignment and errors. (Gradient checks of indexing are in the op table.)"""
import numpy as np
import pytest

import gpudl as gd

VALUES = np.arange(24.0).reshape(2, 3, 4)
INDEXES = {
    "int": 1,
    "negative-int": (-1, -2),
    "slice": (slice(None), slice(1, 3)),
    "steps": (slice(None), slice(None, None, 2), slice(None, None, -1)),
    "none-ellipsis": (None, Ellipsis, 2),
    "ellipsis-middle": (0, Ellipsis, 1),
    "int-array-repeats": [1, 1, 0],
    "int-array-2d": (0, np.array([[0, 2], [2, 2]])),
    "int-arrays-paired": (np.array([0, 1, 1]), np.array([2, 0, 2])),
    "slice-and-array": (slice(None), [0, 0, 2], slice(1, None)),
    "bool-mask-full": VALUES % 5 == 0,
    "bool-mask-rows": (slice(None), np.array([True, False, True])),
}


@pytest.mark.parametrize("index", list(INDEXES.values()), ids=list(INDEXES))
def test_indexing_matches_numpy_and_scatters_gradients_back(index, device):
    x = gd.tensor(VALUES, device=device, requires_grad=True)
    out = x[index]
    expected = VALUES[index]
    assert out.shape == expected.shape
    np.testing.assert_array_equal(out.numpy(), expected)
    weights = np.random.default_rng(0).standard_normal(expected.shape)
    out.backward(gd.tensor(weights, device=device))
    scattered = np.zeros_like(VALUES)
    np.add.at(scattered, index, weights)  # every element picked k times gets k contributions
    np.testing.assert_allclose(x.grad.numpy(), scattered)


def test_repeated_indices_accumulate(device):
    x = gd.tensor([10.0, 20.0, 30.0], device=device, requires_grad=True)
    x[[2, 0, 2, 2]].sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 0.0, 3.0])


def test_tensor_indices_work_like_arrays(device):
    x = gd.tensor(VALUES, device=device, requires_grad=True)
    rows = gd.tensor([1, 0, 1], device=device)
    mask = gd.tensor(VALUES[0] > 5, device=device)
    np.testing.assert_array_equal(x[rows].numpy(), VALUES[[1, 0, 1]])
    np.testing.assert_array_equal(x[0][mask].numpy(), VALUES[0][VALUES[0] > 5])
    np.testing.assert_array_equal(x[:, gd.tensor(2, device=device)].numpy(), VALUES[:, 2])
    x[0][mask].sum().backward()
    np.testing.assert_array_equal(x.grad.numpy()[0], (VALUES[0] > 5).astype(float))
    np.testing.assert_array_equal(x.grad.numpy()[1], 0.0)


def test_basic_indexing_is_a_view_sharing_the_version_counter(device):
    base = gd.tensor(VALUES, device=device)
    view = base[0, 1:]
    with gd.no_grad():
        view.fill_(-1.0)
    assert base.numpy()[0, 1:].tolist() == [[-1.0] * 4] * 2
    x = gd.tensor([1.0, 2.0, 3.0], device=device, requires_grad=True)
    y = x.exp()
    head = y[:2]
    with gd.no_grad():
        head.mul_(0.0)  # writes into y, which Exp saved
    with pytest.raises(RuntimeError, match="Exp"):
        y.sum().backward()


def test_advanced_indexing_copies(device):
    base = gd.tensor(VALUES, device=device)
    picked = base[[0]]
    with gd.no_grad():
        picked.fill_(0.0)
    np.testing.assert_array_equal(base.numpy(), VALUES)


def test_setitem_with_scalars_and_tensors(device):
    t = gd.zeros(2, 3, device=device)
    t[0] = 1.0
    t[1, [0, 2]] = gd.tensor([5.0, 6.0], device=device)
    assert t.tolist() == [[1.0, 1.0, 1.0], [5.0, 0.0, 6.0]]
    assert t._version[0] == 2


@pytest.mark.parametrize("index, pattern", [
    (5, r"shape \(2, 3, 4\).*out of bounds"),
    ([0, 4], r"int64 array of shape \(2,\).*shape \(2, 3, 4\)"),
    (np.array([True, False, True]), r"bool array of shape \(3,\).*shape \(2, 3, 4\)"),
    (1.5, r"\[1.5\].*shape \(2, 3, 4\)"),
    ((0, 0, 0, 0), r"shape \(2, 3, 4\)"),
], ids=["int", "int-array", "bool-mask", "float", "too-many"])
def test_bad_indices_name_the_index_and_the_shape(index, pattern, device):
    x = gd.tensor(VALUES, device=device, requires_grad=True)
    with pytest.raises(IndexError, match=pattern):
        x[index]


def test_split_parts_are_views_sharing_the_version_counter(device):
    x = gd.tensor([0.1, 0.2, 0.3, 0.4], device=device, requires_grad=True)
    y = x.exp()
    first, _ = y.split(2)
    with gd.no_grad():
        first.zero_()  # writes into y, which Exp saved
    assert y.tolist()[:2] == [0.0, 0.0]
    with pytest.raises(RuntimeError, match="Exp"):
        y.sum().backward()
