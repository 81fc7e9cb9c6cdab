"""Tensor creation, factories, seeding, conversion to NumPy / Python, devices, and NumPy interop."""
import numpy as np
import pytest

import gpudl as gd


# ------------------------------------------------------------------ gpudl.tensor and factories
def test_tensor_copies_its_data_and_takes_device_and_requires_grad(device):
    source = np.array([1.0, 2.0], dtype=np.float32)
    t = gd.tensor(source, device=device, requires_grad=True)
    source[0] = 99.0
    assert t.tolist() == [1.0, 2.0]
    assert t.requires_grad and t.is_leaf and t.shape == (2,) and t.ndim == 1 and t.size == 2
    assert t.device == device and str(t.device).startswith(device)
    u = gd.tensor(t, device=device)  # from a tensor: a copy, not in the graph
    assert not u.requires_grad and u.tolist() == [1.0, 2.0]


def test_tensor_from_nested_lists_and_scalars(device):
    t = gd.tensor([[1, 2, 3], [4, 5, 6]], device=device)
    assert t.shape == (2, 3) and t.dtype == np.int64 and t.tolist() == [[1, 2, 3], [4, 5, 6]]
    s = gd.tensor(2.5, device=device)
    assert s.shape == () and s.dtype == np.float32 and s.item() == 2.5
    with pytest.raises(TypeError, match="cannot make a tensor"):
        gd.tensor(["a", "b"])


def test_integer_tensors_cannot_require_grad(device):
    with pytest.raises(RuntimeError, match="floating-point.*int64"):
        gd.tensor([1, 2], device=device, requires_grad=True)
    with pytest.raises(RuntimeError, match="floating-point"):
        gd.arange(3, device=device).requires_grad_()
    with pytest.raises(RuntimeError, match="floating-point"):
        gd.zeros(2, dtype="int32", device=device, requires_grad=True)


@pytest.mark.parametrize("factory, fill", [(gd.zeros, 0.0), (gd.ones, 1.0)])
def test_zeros_and_ones(factory, fill, device):
    t = factory(2, 3, device=device)
    assert t.shape == (2, 3) and t.dtype == np.float32 and not t.requires_grad
    np.testing.assert_array_equal(t.numpy(), np.full((2, 3), fill))
    assert factory((4,), dtype="float64", device=device).shape == (4,)
    assert factory([2, 2], device=device, requires_grad=True).requires_grad
    assert factory(device=device).shape == ()


def test_full_empty_and_like_factories(device):
    assert gd.full((2, 2), 1.5, device=device).dtype == np.float32
    assert gd.full((2,), 7, device=device).dtype == np.int64
    np.testing.assert_array_equal(gd.full((2,), 7, dtype="float64", device=device).numpy(), [7.0, 7.0])
    e = gd.empty(3, 2, device=device)
    assert e.shape == (3, 2) and e.dtype == np.float32
    ref = gd.ones(2, 3, dtype="float64", device=device)
    for like, value in ((gd.zeros_like, 0.0), (gd.ones_like, 1.0)):
        t = like(ref)
        assert t.shape == (2, 3) and t.dtype == np.float64 and t.device == ref.device
        np.testing.assert_array_equal(t.numpy(), np.full((2, 3), value))
        assert like(ref, dtype="float16").dtype == np.float16
    with pytest.raises(ValueError, match="negative dimension"):
        gd.zeros(2, -1)


def test_arange(device):
    t = gd.arange(5, device=device)
    assert t.dtype == np.int64 and t.tolist() == [0, 1, 2, 3, 4]
    assert gd.arange(2, 8, 3, device=device).tolist() == [2, 5]
    f = gd.arange(0, 1, 0.25, device=device)
    assert f.dtype == np.float32
    np.testing.assert_allclose(f.numpy(), [0, 0.25, 0.5, 0.75])
    assert gd.arange(3, dtype="float64", device=device).dtype == np.float64
    with pytest.raises(ValueError, match="step"):
        gd.arange(0, 3, 0)


def test_rand_and_randn(device):
    u = gd.rand(1000, device=device)
    n = gd.randn(20, 50, dtype="float64", device=device)
    assert u.dtype == np.float32 and u.shape == (1000,) and n.dtype == np.float64 and n.shape == (20, 50)
    values = u.numpy()
    assert values.min() >= 0.0 and values.max() < 1.0 and 0.4 < values.mean() < 0.6
    assert abs(n.numpy().mean()) < 0.2 and 0.8 < n.numpy().std() < 1.2
    assert gd.randn(2, device=device, requires_grad=True).requires_grad


def test_manual_seed_makes_random_tensors_repeatable(device):
    gd.manual_seed(123)
    first = [gd.rand(4, device=device).numpy(), gd.randn(2, 2, device=device).numpy(),
             gd.randint(0, 10, (5,), device=device).numpy()]
    gd.manual_seed(123)
    second = [gd.rand(4, device=device).numpy(), gd.randn(2, 2, device=device).numpy(),
              gd.randint(0, 10, (5,), device=device).numpy()]
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    gd.manual_seed(124)
    assert not np.array_equal(gd.rand(4, device=device).numpy(), first[0])
    with pytest.raises(ValueError, match="seed"):
        gd.manual_seed(-1)


# ------------------------------------------------------------------ conversion
def test_numpy_is_always_a_detached_host_copy(device):
    x = gd.tensor([1.0, 2.0], device=device, requires_grad=True)
    host = x.numpy()
    assert isinstance(host, np.ndarray) and host.dtype == np.float32
    host[0] = 50.0
    assert x.tolist() == [1.0, 2.0]
    y = x * 2
    assert isinstance(y.numpy(), np.ndarray)  # a tensor in the graph converts too


def test_item_and_python_number_conversions(device):
    assert gd.tensor(3.5, device=device).item() == 3.5
    assert isinstance(gd.tensor([[7]], device=device).item(), int)
    assert float(gd.tensor([2.0], device=device)) == 2.0 and int(gd.tensor(4, device=device)) == 4
    assert bool(gd.tensor(1.0, device=device)) is True
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        gd.tensor([1.0, 2.0], device=device).item()
    with pytest.raises(ValueError, match="ambiguous"):
        bool(gd.tensor([1.0, 2.0], device=device))
    assert [1, 2, 3][gd.tensor(1, device=device)] == 2  # __index__


def test_array_protocol_on_cpu():
    x = gd.tensor([1.0, 2.0], requires_grad=True, device="cpu")
    as_array = np.asarray(x)
    assert isinstance(as_array, np.ndarray) and as_array.dtype == np.float32
    as_array[0] = 10.0
    assert x.tolist() == [1.0, 2.0], "np.asarray must not expose the tensor's storage"
    assert np.array(x, dtype=np.float64).dtype == np.float64
    assert x.__array__(dtype=np.float16, copy=True).dtype == np.float16
    np.testing.assert_array_equal(np.array(x, copy=True), [1.0, 2.0])
    with pytest.raises(ValueError, match="copy"):
        np.array(x, copy=False)


def test_array_protocol_refuses_gpu_tensors(device):
    if device == "cpu":
        pytest.skip("only a GPU tensor refuses the implicit conversion")
    with pytest.raises(TypeError, match=r"\.numpy\(\)"):
        np.asarray(gd.ones(2, device=device))


def test_ndarray_on_the_left_dispatches_to_gpudl():
    x = gd.tensor([1.0, 2.0], requires_grad=True, device="cpu")  # NumPy operands live on the host
    for result in (np.array([3.0, 4.0], dtype=np.float32) * x, np.float32(2) + x, np.ones(2, np.float32) @ x,
                   np.array([1.0, 1.0], dtype=np.float32) - x, np.float32(8) / x):
        assert isinstance(result, gd.Tensor) and result.grad_fn is not None and result.dtype == np.float32
    (np.array([3.0, 4.0], dtype=np.float32) * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 4.0])


def test_to_and_cpu(device):
    x = gd.tensor([1.0, 2.0], device=device, requires_grad=True)
    assert x.to(device) is x and x.to(dtype=x.dtype) is x
    host = x.cpu()
    assert host.device == "cpu" and host.tolist() == [1.0, 2.0]
    assert x.to(gd.float64).dtype == np.float64  # a dtype as the first argument, as PyTorch
    moved = x.to("cpu", dtype="float64")
    assert moved.device == "cpu" and moved.dtype == np.float64
    moved.sum().backward()  # differentiable
    np.testing.assert_allclose(x.grad.numpy(), [1.0, 1.0])
    with pytest.raises(ValueError, match="unknown device"):
        x.to("tpu")


def test_op_mixing_devices_names_both(device):
    if device == "cpu":
        pytest.skip("needs a GPU to have two devices")
    on_gpu = gd.ones(2, device=device)
    on_cpu = gd.ones(2, device="cpu")
    for op in (lambda a, b: a + b, lambda a, b: a @ b, lambda a, b: gd.concat([a, b])):
        with pytest.raises(RuntimeError, match=r"cpu.*cuda:0|cuda:0.*cpu"):
            op(on_gpu, on_cpu)


def test_shape_facts_len_iteration_and_repr(device):
    t = gd.arange(6, device=device).reshape(2, 3)
    assert len(t) == 2 and t.numel() == 6 and t.dim() == 2
    rows = [row.tolist() for row in t]
    assert rows == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(TypeError, match="0-d"):
        len(gd.tensor(1.0, device=device))
    x = gd.ones(2, device=device, requires_grad=True)
    assert "requires_grad=True" in repr(x)
    assert "grad_fn=Mul" in repr(x * 2)
    assert repr(gd.tensor([1, 2], device=device)).startswith("tensor([1, 2]")


def test_clone_has_its_own_storage_and_is_differentiable(device):
    x = gd.tensor([1.0, 2.0], device=device, requires_grad=True)
    y = x.clone()
    assert y.grad_fn is not None
    (y * 3).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 3.0])
    with gd.no_grad():
        y.fill_(0.0)
    assert x.tolist() == [1.0, 2.0]
