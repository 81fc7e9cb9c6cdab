"""The NumPy/PyTorch rule (dim=/keepdim= speak PyTorch, axis=/keepdims= NumPy), the PyTorch-named tensor API
(size(), numel(), sort, topk, median, gather, chunk, cumsum/cumprod) and their gradients."""
import numpy as np
import pytest

import gpudl as gd

DATA = np.array([[3.0, 1.0, 4.0, 1.0, 5.0],
                 [9.0, 2.0, 6.0, 5.0, 3.0],
                 [5.0, 8.0, 9.0, 7.0, 9.0]])


def t64(values, device, requires_grad=False):
    return gd.tensor(np.asarray(values, dtype=np.float64), device=device, requires_grad=requires_grad)


# ----------------------------------------------------------------------------- max / min
@pytest.mark.parametrize("name, pick, arg", [("max", np.max, np.argmax), ("min", np.min, np.argmin)])
def test_max_min_with_a_dim_return_named_values_and_indices(name, pick, arg, device):
    x = t64(DATA, device)
    for call in (lambda f: f(x, dim=1), lambda f: f(x, 1), lambda f: f(x, -1)):
        for f in (getattr(gd, name), lambda *a, **k: getattr(a[0], name)(*a[1:], **k)):
            out = call(f)
            assert type(out).__name__ == name and out._fields == ("values", "indices")
            values, indices = out
            np.testing.assert_array_equal(values.numpy(), pick(DATA, axis=1))
            np.testing.assert_array_equal(indices.numpy(), arg(DATA, axis=1))   # the first extreme on ties
            assert indices.dtype == np.int64 and indices.device == x.device
    kept = getattr(x, name)(dim=0, keepdim=True)
    assert kept.values.shape == kept.indices.shape == (1, 5)
    numpy_style = getattr(x, name)(axis=1)
    assert isinstance(numpy_style, gd.Tensor)
    np.testing.assert_array_equal(numpy_style.numpy(), pick(DATA, axis=1))
    assert getattr(x, name)(axis=0, keepdims=True).shape == (1, 5)
    assert getattr(x, name)().item() == pick(DATA)                  # no dim: the value over all elements
    np.testing.assert_array_equal(getattr(x, name)(dim=(0, 1)).numpy(), pick(DATA))  # a tuple: values


def test_max_of_two_tensors_is_the_elementwise_maximum(device):
    a, b = t64([1.0, 5.0], device), t64([3.0, 2.0], device)
    assert gd.max(a, b).tolist() == [3.0, 5.0] and a.min(b).tolist() == [1.0, 2.0]


def test_max_dim_gradient_goes_to_the_first_maximum_and_axis_shares_it(device):
    x = t64([[2.0, 7.0, 7.0]], device, requires_grad=True)
    x.max(dim=1).values.sum().backward()
    assert x.grad.tolist() == [[0.0, 1.0, 0.0]]
    x.grad = None
    x.max(axis=1).sum().backward()
    assert x.grad.tolist() == [[0.0, 0.5, 0.5]]


def test_mixing_vocabularies_is_a_type_error(device):
    x = t64(DATA, device)
    calls = [lambda: x.max(axis=1, keepdim=True), lambda: x.sum(dim=1, keepdims=True), lambda: x.max(1, axis=0),
             lambda: gd.var(x, axis=0, keepdim=True), lambda: x.sort(dim=0, axis=1), lambda: x.median(1, keepdims=True),
             lambda: gd.cat([x, x], dim=0, axis=0), lambda: x.argmax(axis=1, keepdim=True),
             lambda: x.split(2, dim=1, axis=1), lambda: x.cumsum(dim=1, axis=1)]
    for call in calls:
        with pytest.raises(TypeError, match="NumPy's vocabulary. cannot be mixed with"):
            call()


# ----------------------------------------------------------------------------- var / std
def test_var_std_divide_by_n_minus_1_with_dim_and_by_n_with_axis(device):
    x = t64(DATA, device)
    np.testing.assert_allclose(x.var(dim=1).numpy(), DATA.var(axis=1, ddof=1))
    np.testing.assert_allclose(x.var(1).numpy(), DATA.var(axis=1, ddof=1))
    np.testing.assert_allclose(gd.std(x, 0).numpy(), DATA.std(axis=0, ddof=1))
    np.testing.assert_allclose(x.std().item(), DATA.std(ddof=1))           # no vocabulary: PyTorch
    np.testing.assert_allclose(x.var(axis=1).numpy(), DATA.var(axis=1))
    np.testing.assert_allclose(x.std(axis=None).item(), DATA.std())
    np.testing.assert_allclose(x.var(dim=1, correction=0).numpy(), DATA.var(axis=1))
    np.testing.assert_allclose(x.var(1, False).numpy(), DATA.var(axis=1))  # PyTorch's positional unbiased
    np.testing.assert_allclose(x.std(axis=1, ddof=1).numpy(), DATA.std(axis=1, ddof=1))


# ----------------------------------------------------------------------------- sort / argsort / topk / median
def test_sort_follows_pytorch_without_axis_and_numpy_with_it(device):
    x = t64(DATA, device)
    values, indices = x.sort()                       # no argument: PyTorch, the last dim
    np.testing.assert_array_equal(values.numpy(), np.sort(DATA, axis=-1))
    np.testing.assert_array_equal(indices.numpy(), np.argsort(DATA, axis=-1, kind="stable"))
    assert type(x.sort(0)).__name__ == "sort"
    np.testing.assert_array_equal(gd.sort(x, dim=0).values.numpy(), np.sort(DATA, axis=0))
    down = x.sort(dim=1, descending=True)
    np.testing.assert_array_equal(down.values.numpy(), -np.sort(-DATA, axis=1))
    assert down.indices.tolist()[0] == [4, 2, 0, 1, 3]     # ties (the two 1s) keep their order
    numpy_style = x.sort(axis=1)
    assert isinstance(numpy_style, gd.Tensor)
    np.testing.assert_array_equal(numpy_style.numpy(), np.sort(DATA, axis=1))
    np.testing.assert_array_equal(x.sort(axis=None).numpy(), np.sort(DATA, axis=None))
    np.testing.assert_array_equal(x.argsort(dim=1).numpy(), np.argsort(DATA, axis=1, kind="stable"))
    np.testing.assert_array_equal(DATA.reshape(-1)[x.argsort(axis=None).numpy()], np.sort(DATA, axis=None))


def test_topk(device):
    x = t64(DATA, device)
    values, indices = x.topk(2)
    assert values.tolist() == [[5.0, 4.0], [9.0, 6.0], [9.0, 9.0]]
    assert indices.tolist() == [[4, 2], [0, 2], [2, 4]]    # ties: the first one first
    smallest = gd.topk(x, 3, dim=0, largest=False)
    assert type(smallest).__name__ == "topk" and smallest.values.tolist()[0] == [3.0, 1.0, 4.0, 1.0, 3.0]
    assert x.topk(0).values.shape == (3, 0)
    with pytest.raises(ValueError, match=r"topk: k must be an integer in \[0, 5\] for dim -1 of shape \(3, 5\), got 6"):
        x.topk(6)


def test_median_is_the_lower_middle_value(device):
    even = t64([[4.0, 1.0, 3.0, 2.0], [7.0, 5.0, 6.0, 8.0]], device)
    values, indices = even.median(dim=1)
    assert values.tolist() == [2.0, 6.0] and indices.tolist() == [3, 2]
    assert even.median(1, keepdim=True).values.shape == (2, 1)
    assert even.median().item() == 4.0                    # over all 8 values: the lower of 4 and 5
    numpy_style = gd.median(even, axis=1)
    assert isinstance(numpy_style, gd.Tensor) and numpy_style.tolist() == [2.0, 6.0]
    assert even.median(axis=0, keepdims=True).shape == (1, 4)
    odd = t64([5.0, 1.0, 3.0], device)
    assert odd.median().item() == 3.0 and odd.median(0).indices.item() == 2
    with_nan = t64([[1.0, np.nan, 3.0], [1.0, 2.0, 3.0]], device)
    got = with_nan.median(dim=1)
    assert np.isnan(got.values.tolist()[0]) and got.indices.tolist() == [1, 1]
    with pytest.raises(ValueError, match=r"median: dim 1 of shape \(2, 0\) is empty"):
        gd.zeros(2, 0, device=device).median(1)


def test_gather_follows_pytorch_and_accumulates_repeats(device):
    x = t64([[1.0, 2.0], [3.0, 4.0]], device, requires_grad=True)
    index = gd.tensor([[0, 0], [1, 0]], device=device)
    out = gd.gather(x, 1, index)
    assert out.tolist() == [[1.0, 1.0], [4.0, 3.0]]
    out.sum().backward()
    assert x.grad.tolist() == [[2.0, 0.0], [1.0, 1.0]]
    with pytest.raises(ValueError, match="gather: index must be an integer tensor with 2 dims"):
        gd.gather(x, 1, gd.tensor([0, 1], device=device))


# ----------------------------------------------------------------------------- split / chunk / cat / stack / squeeze
def test_split_takes_a_piece_size_with_dim_and_a_count_with_axis(device):
    x = t64(np.arange(10.0), device)
    assert [p.tolist() for p in x.split(4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]          # PyTorch: size
    assert [p.shape for p in gd.split(x, 4, dim=0)] == [(4,), (4,), (2,)]
    assert [p.shape for p in x.split([3, 7])] == [(3,), (7,)]                                # sizes
    assert [p.shape for p in x.split(5, axis=0)] == [(2,)] * 5                               # NumPy: count
    assert [p.shape for p in x.split([3, 7], axis=0)] == [(3,), (4,), (3,)]                  # cut indices
    with pytest.raises(ValueError, match=r"split: piece sizes \[3, 3\] must be non-negative and sum to the length 10"):
        x.split([3, 3])
    assert [p.shape for p in x.chunk(3)] == [(4,), (4,), (2,)]
    assert [p.shape for p in gd.chunk(t64(np.zeros((2, 6)), device), 4, dim=1)] == [(2, 2)] * 3


def test_cat_stack_with_dim(device):
    a, b = t64(np.zeros((2, 3)), device), t64(np.ones((2, 3)), device)
    assert gd.cat([a, b], dim=1).shape == (2, 6) and gd.cat([a, b], 1).shape == (2, 6)
    assert gd.concat([a, b], axis=-1).shape == (2, 6) and gd.cat([a, b]).shape == (4, 3)
    assert gd.stack([a, b], dim=1).shape == (2, 2, 3) and gd.stack([a, b], axis=2).shape == (2, 3, 2)
    assert gd.stack((a, b)).shape == (2, 2, 3)


def test_squeeze_of_a_longer_dim_is_a_no_op_with_dim_and_an_error_with_axis(device):
    x = t64(np.zeros((2, 1, 3)), device)
    assert x.squeeze(0).shape == (2, 1, 3) and x.squeeze(dim=1).shape == (2, 3) and x.squeeze().shape == (2, 3)
    with pytest.raises(ValueError, match="squeeze: axis 0 of shape"):
        x.squeeze(axis=0)


# ----------------------------------------------------------------------------- size / numel / dim
def test_size_is_numpys_count_and_pytorchs_shape(device):
    x = gd.zeros(2, 3, 4, device=device)
    assert x.size == 24 and isinstance(x.size, int) and x.size * 2 == 48        # NumPy's element count
    assert x.size() == (2, 3, 4) and x.size(0) == 2 and x.size(-1) == 4         # PyTorch's size()
    assert x.numel() == x.nelement() == 24 and x.dim() == x.ndimension() == 3
    with pytest.raises(IndexError, match=r"size\(3\): dim out of range for a tensor of shape \(2, 3, 4\)"):
        x.size(3)


# ----------------------------------------------------------------------------- cumsum / cumprod
def test_cumsum_cumprod_values(device):
    x = t64(DATA, device)
    np.testing.assert_array_equal(gd.cumsum(x, 1).numpy(), np.cumsum(DATA, axis=1))
    np.testing.assert_array_equal(x.cumsum(dim=0).numpy(), np.cumsum(DATA, axis=0))
    np.testing.assert_array_equal(x.cumprod(-1).numpy(), np.cumprod(DATA, axis=-1))
    np.testing.assert_array_equal(gd.cumsum(x, axis=None).numpy(), np.cumsum(DATA))     # NumPy: flattens
    assert gd.cumsum(gd.tensor([1, 2, 3], device=device), 0).dtype == np.int64
    with pytest.raises(TypeError, match="cumsum: dim is required"):
        x.cumsum()


@pytest.mark.parametrize("zeros", [(), (2,), (0,), (4,), (1, 3)], ids=["none", "middle", "first", "last", "two"])
def test_cumprod_gradient_with_zeros(zeros, device):
    values = np.array([[0.7, -1.3, 0.9, 1.6, -0.8], [1.1, 0.6, -1.4, 0.5, 1.2]])
    values[0, list(zeros)] = 0.0
    x = t64(values, device, requires_grad=True)
    assert gd.autograd.gradcheck(lambda t: gd.cumprod(t, dim=1), x)
    assert gd.autograd.gradcheck(lambda t: t.cumprod(axis=0), x)


# ----------------------------------------------------------------------------- gradient checks
GRADCHECKS = {
    "max-dim": lambda t: t.max(dim=1),
    "min-dim-keepdim": lambda t: gd.min(t, 0, keepdim=True),
    "amax": lambda t: gd.amax(t, dim=(0, 1)),
    "sort": lambda t: t.sort(dim=1, descending=True),
    "sort-axis-none": lambda t: t.sort(axis=None),
    "topk": lambda t: t.topk(2, dim=0),
    "median-dim": lambda t: t.median(dim=1),
    "median-all": lambda t: t.median(),
    "gather": lambda t: gd.gather(t, 0, gd.tensor([[0, 2, 2, 1], [2, 2, 0, 0]], device=t.device)),
    "cumsum": lambda t: t.cumsum(dim=1),
    "cumsum-flat": lambda t: gd.cumsum(t, axis=None),
    "chunk": lambda t: t.chunk(2, dim=1),
    "split-sizes": lambda t: t.split([1, 2], dim=0),
}


@pytest.mark.parametrize("name", list(GRADCHECKS))
def test_gradcheck(name, device):
    values = np.random.default_rng(1).permutation(12).reshape(3, 4) * 0.37 - 2.0   # distinct: no ties
    x = t64(values, device, requires_grad=True)
    assert gd.autograd.gradcheck(GRADCHECKS[name], x)


# ----------------------------------------------------------------------------- against PyTorch itself
def test_same_results_as_pytorch():
    torch = pytest.importorskip("torch")
    data = np.array([[3.0, 1.0, 4.0, 1.0, 5.0, 9.0], [2.0, 6.0, 5.0, 3.0, 5.0, 8.0]])
    x, tx = gd.tensor(data), torch.tensor(data)
    for name, call in [("max", lambda m: m.max(1)), ("min", lambda m: m.min(dim=0, keepdim=True)),
                       ("median", lambda m: m.median(1)),
                       ("sort", lambda m: m.sort(dim=1, descending=True, stable=True)),
                       ("topk", lambda m: m.topk(3))]:
        ours, theirs = call(x), call(tx)
        np.testing.assert_array_equal(ours.values.numpy(), theirs.values.numpy(), err_msg=name)
        if name != "median":      # PyTorch leaves the index of a repeated median unspecified
            np.testing.assert_array_equal(ours.indices.numpy(), theirs.indices.numpy(), err_msg=name)
    np.testing.assert_allclose(x.var(1).numpy(), tx.var(1).numpy())
    np.testing.assert_allclose(x.std().item(), tx.std().item())
    assert [p.shape for p in x.split(4, 1)] == [tuple(p.shape) for p in tx.split(4, 1)]
    assert [p.shape for p in x.chunk(4, 1)] == [tuple(p.shape) for p in tx.chunk(4, 1)]
    assert x.size() == tuple(tx.size()) and x.size(1) == tx.size(1) and x.median().item() == tx.median().item()
    np.testing.assert_allclose(x.cumprod(1).numpy(), tx.cumprod(1).numpy())


# ----------------------------------------------------------------------------- from_numpy, as_tensor, cuda, device
def test_from_numpy_shares_memory_on_the_cpu():
    array = np.arange(4.0, dtype=np.float32)
    t = gd.from_numpy(array)
    assert t.device == "cpu" and t.dtype == np.float32
    array[0] = 9.0
    t.data[1] = 7.0
    assert t.tolist() == [9.0, 7.0, 2.0, 3.0] and array[1] == 7.0
    with pytest.raises(TypeError, match="from_numpy: expected a NumPy array, got list"):
        gd.from_numpy([1.0])


def test_as_tensor_avoids_copies_where_it_can(device):
    array = np.arange(3.0)
    shared = gd.as_tensor(array)
    assert shared.data is array                          # a host array stays where it is, shared
    assert gd.as_tensor(array, dtype="float32").dtype == np.float32
    moved = gd.as_tensor(array, device=device)
    assert moved.device == device and moved.tolist() == [0.0, 1.0, 2.0]
    t = gd.ones(2, device=device)
    assert gd.as_tensor(t) is t and gd.as_tensor(t, dtype="float64").dtype == np.float64
    assert gd.as_tensor([1, 2], device=device).dtype == np.int64


def test_cuda_queries_and_device_objects():
    from gpudl import backend
    assert gd.cuda.is_available() == backend.cupy_gpu_usable()
    assert (gd.cuda.device_count() > 0) == gd.cuda.is_available()
    assert gd.device("cuda:0") == gd.device("cuda", 0) == "cuda:0" and str(gd.device("cuda", 1)) == "cuda:1"
    assert gd.device("cpu") == "cpu" and isinstance(gd.device("cpu"), gd.Device)
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        gd.device("gpu")
    if gd.cuda.is_available():
        assert gd.cuda.current_device() == 0 and isinstance(gd.cuda.get_device_name(), str)
        gd.cuda.synchronize()
    else:
        with pytest.raises(gd.BackendError, match=r"gpudl.cuda.synchronize\(\): no usable CUDA GPU"):
            gd.cuda.synchronize()


# ----------------------------------------------------------------------------- adaptive pooling
ADAPTIVE = [((7, 5), (3, 2)), ((6, 4), (3, 2)), ((5, 5), 1), ((6, 7), (None, 3)), ((4, 4), (6, 5))]


@pytest.mark.parametrize("in_hw, out", ADAPTIVE, ids=[f"{a}->{b}" for a, b in ADAPTIVE])
def test_adaptive_pools_values_and_gradients(in_hw, out, device):
    from gpudl import nn
    rng = np.random.default_rng(3)
    data = rng.permutation(2 * 3 * in_hw[0] * in_hw[1]).reshape(2, 3, *in_hw) * 0.1   # distinct values
    x = gd.tensor(data, dtype="float64", device=device, requires_grad=True)
    expected_hw = tuple(n if o is None else o for n, o in zip(in_hw, out if isinstance(out, tuple) else (out, out)))
    for layer, pick in ((nn.AdaptiveAvgPool2d(out), np.mean), (nn.AdaptiveMaxPool2d(out), np.max)):
        y = layer(x)
        assert y.shape == (2, 3, *expected_hw)
        reference = np.empty((2, 3, *expected_hw))
        for i in range(expected_hw[0]):          # PyTorch's windows, written out as a reference
            for j in range(expected_hw[1]):
                rows = slice(i * in_hw[0] // expected_hw[0], -(-(i + 1) * in_hw[0] // expected_hw[0]))
                cols = slice(j * in_hw[1] // expected_hw[1], -(-(j + 1) * in_hw[1] // expected_hw[1]))
                reference[:, :, i, j] = pick(data[:, :, rows, cols], axis=(2, 3))
        np.testing.assert_allclose(y.numpy(), reference, rtol=1e-12)
        assert gd.autograd.gradcheck(layer, x)
    assert nn.AdaptiveAvgPool2d(out)(x[0]).shape == (3, *expected_hw)     # [C, H, W] input


def test_adaptive_pool_errors():
    from gpudl import nn
    with pytest.raises(ValueError, match="adaptive_avg_pool2d: output_size must hold positive integers"):
        nn.AdaptiveAvgPool2d(0)(gd.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match=r"adaptive_max_pool2d: expected a 4-D input .* got shape \(4, 4\)"):
        nn.AdaptiveMaxPool2d(2)(gd.zeros(4, 4))


def test_adaptive_pools_match_pytorch():
    torch = pytest.importorskip("torch")
    import gpudl.nn.functional as F
    data = np.random.default_rng(0).standard_normal((2, 3, 7, 5))
    for ours, theirs, size in ((F.adaptive_avg_pool2d, torch.nn.functional.adaptive_avg_pool2d, (3, 2)),
                               (F.adaptive_max_pool2d, torch.nn.functional.adaptive_max_pool2d, (4, 3))):
        np.testing.assert_allclose(ours(gd.tensor(data), size).numpy(), theirs(torch.tensor(data), size).numpy(),
                                   rtol=1e-12)


# ----------------------------------------------------------------------------- nn.utils
def test_nn_utils_clipping(device):
    from gpudl import nn
    a = gd.zeros(2, device=device, requires_grad=True)
    b = gd.zeros(1, device=device, requires_grad=True)
    a.grad, b.grad = gd.tensor([3.0, 0.0], device=device), gd.tensor([4.0], device=device)
    total = nn.utils.clip_grad_norm_([a, b], max_norm=1.0)
    assert isinstance(total, gd.Tensor) and total.ndim == 0 and total.item() == pytest.approx(5.0)
    np.testing.assert_allclose(a.grad.numpy(), [0.6, 0.0], rtol=1e-5)
    np.testing.assert_allclose(b.grad.numpy(), [0.8], rtol=1e-5)
    b.grad = gd.tensor([-3.0], device=device)
    nn.utils.clip_grad_value_(b, 0.5)
    assert b.grad.tolist() == [-0.5]


# ----------------------------------------------------------------------------- names PyTorch scripts use
def test_pytorch_method_and_dtype_names(device):
    a, b = gd.tensor([1.0, 2.0, 3.0], device=device), gd.tensor([3.0, 2.0, 1.0], device=device)
    assert a.eq(b).tolist() == [False, True, False] and gd.ne(a, b).tolist() == [True, False, True]
    assert a.lt(b).tolist() == [True, False, False] and a.le(b).tolist() == [True, True, False]
    assert a.gt(2.0).tolist() == [False, False, True] and gd.ge(a, b).tolist() == [False, True, True]
    grid = gd.zeros(3, 1, device=device)
    assert a.view_as(grid).shape == (3, 1) and a.reshape_as(grid).shape == (3, 1)
    assert a.type(gd.long).dtype == np.int64 and a.type() == "float32" and a.type("float64").dtype == np.float64
    assert a.type_as(gd.zeros(1, dtype=gd.double)).dtype == np.float64
    assert (gd.float, gd.double, gd.half, gd.long, gd.int, gd.short, gd.bool) == \
        (np.float32, np.float64, np.float16, np.int64, np.int32, np.int16, np.bool_)
    line = gd.linspace(0, 1, 5, device=device)
    assert line.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0] and line.dtype == np.float32 and line.device == device
    with pytest.raises(ValueError, match="linspace: steps must be a non-negative integer, got -1"):
        gd.linspace(0, 1, -1)


def test_sin_cos_values_and_gradients(device):
    x = t64([0.3, -1.2, 2.5], device, requires_grad=True)
    np.testing.assert_allclose(gd.sin(x).detach().numpy(), np.sin([0.3, -1.2, 2.5]))
    np.testing.assert_allclose(x.cos().detach().numpy(), np.cos([0.3, -1.2, 2.5]))
    assert gd.autograd.gradcheck(gd.sin, x) and gd.autograd.gradcheck(lambda t: t.cos(), x)


def test_load_accepts_weights_only(tmp_path, device):
    path = tmp_path / "weights.pth"
    gd.save({"w": gd.ones(2, device=device)}, path)
    assert gd.load(path, weights_only=True)["w"].tolist() == [1.0, 1.0]


def test_pytorch_compositions(device):
    x = t64([[1.0, -2.0, 3.0], [0.0, 4.0, -5.0]], device)
    assert gd.mm(x, x.t()).shape == (2, 2) and x.t().shape == (3, 2) and gd.t(x[0]).shape == (3,)
    assert gd.bmm(x.reshape(1, 2, 3), x.reshape(1, 3, 2)).shape == (1, 2, 2)
    with pytest.raises(ValueError, match=r"mm: expected two 2-D tensors, got shapes \(2, 3\) and \(3,\)"):
        gd.mm(x, x[0])
    with pytest.raises(ValueError, match="bmm: expected 3-D tensors with the same batch size"):
        gd.bmm(x, x)
    assert x.masked_fill(x < 0, 0.0).tolist() == [[1.0, 0.0, 3.0], [0.0, 4.0, 0.0]]
    with pytest.raises(TypeError, match="masked_fill: mask must be a bool tensor"):
        x.masked_fill(x, 0.0)
    np.testing.assert_array_equal(x.repeat(2, 1, 2).numpy(), np.tile(x.numpy(), (2, 1, 2)))
    assert x.norm().item() == pytest.approx(np.sqrt(55.0)) and x.norm(1, dim=1).tolist() == [6.0, 9.0]
    assert x.norm(float("inf"), dim=0).tolist() == [1.0, 4.0, 5.0]
    np.testing.assert_allclose(gd.norm(x, 3, dim=1, keepdim=True).numpy(), np.cbrt([[36.0], [189.0]]))
    assert x.contiguous() is x and x.t().contiguous().data.flags.c_contiguous
    assert gd.numel(x) == 6 and gd.is_tensor(x) and not gd.is_tensor(x.numpy())
    perm = gd.randperm(6, device=device)
    assert sorted(perm.tolist()) == list(range(6)) and perm.dtype == np.int64 and perm.device == device
    with gd.inference_mode():
        assert not (gd.ones(1, requires_grad=True) * 2).requires_grad


COMPOSITIONS = {
    "mm": lambda t: gd.mm(t, t.t()),
    "bmm": lambda t: gd.bmm(t.reshape(1, 3, 4), t.reshape(1, 4, 3)),
    "masked_fill": lambda t: t.masked_fill(t > 0, 2.0),
    "repeat": lambda t: t.repeat(2, 1, 3),
    "norm2-dim": lambda t: t.norm(dim=1),
    "norm2-zero-row": lambda t: (t * gd.tensor([[0.0], [1.0], [1.0]], dtype="float64", device=t.device)).norm(dim=1),
    "norm3": lambda t: gd.norm(t, 3),
    "norm-inf": lambda t: t.norm(float("inf"), dim=0),
}


@pytest.mark.parametrize("name", list(COMPOSITIONS))
def test_composition_gradcheck(name, device):
    values = np.random.default_rng(2).permutation(12).reshape(3, 4) * 0.29 - 1.7
    assert gd.autograd.gradcheck(COMPOSITIONS[name], t64(values, device, requires_grad=True))
