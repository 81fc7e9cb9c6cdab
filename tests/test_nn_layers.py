"""Layers: values against direct NumPy references, gradient checks in float64, PyTorch's rules and errors."""
import math

import numpy as np
import pytest

import gpudl as gd
from gpudl import nn
from gpudl.autograd import gradcheck
from gpudl.nn import functional as F
from tests.conftest import to_numpy


def t(array, device, requires_grad=False):
    return gd.tensor(np.asarray(array), device=device, requires_grad=requires_grad)


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


# ----------------------------------------------------------------------------- Linear
def test_linear_matches_affine_map_for_batched_inputs(device):
    layer = nn.Linear(4, 3, device=device, dtype="float64")
    x = rand(2, 5, 4)
    expected = x @ to_numpy(layer.weight).T + to_numpy(layer.bias)
    np.testing.assert_allclose(to_numpy(layer(t(x, device))), expected, rtol=1e-12)
    assert layer(t(x[0, 0], device)).shape == (3,)


@pytest.mark.parametrize("bias", [True, False])
def test_linear_gradcheck(device, bias):
    x = t(rand(2, 3, 4), device, requires_grad=True)
    w = t(rand(5, 4, seed=1), device, requires_grad=True)
    b = t(rand(5, seed=2), device, requires_grad=True) if bias else None
    assert gradcheck(lambda x, w, *b: F.linear(x, w, *b), x, w, *([b] if bias else []))


def test_linear_errors_name_shapes_and_dtypes(device):
    layer = nn.Linear(4, 3, device=device)
    with pytest.raises(ValueError, match=r"input of shape \(2, 5\) does not end in in_features=4"):
        layer(gd.zeros(2, 5, device=device))
    with pytest.raises(TypeError, match="input has dtype float64 but weight has dtype float32"):
        layer(gd.zeros(2, 4, dtype="float64", device=device))


# ----------------------------------------------------------------------------- default initialisation
@pytest.mark.parametrize("make, fan_in", [(lambda: nn.Linear(300, 200), 300),
                                          (lambda: nn.Conv2d(16, 64, (3, 5)), 16 * 15)])
def test_default_init_is_pytorchs_uniform_bound(make, fan_in):
    layer = make()
    bound = 1 / math.sqrt(fan_in)
    for p in (layer.weight, layer.bias):
        values = p.numpy()
        assert np.abs(values).max() <= bound
        assert np.abs(values).max() > 0.95 * bound
    weight = layer.weight.numpy()
    assert abs(weight.std() - bound / math.sqrt(3)) < 0.02 * bound / math.sqrt(3)
    assert abs(weight.mean()) < 0.02 * bound


def test_a_seed_gives_the_same_model_on_every_device(device):
    gd.manual_seed(5)
    on_device = nn.Conv2d(2, 3, 3, device=device)
    gd.manual_seed(5)
    on_host = nn.Conv2d(2, 3, 3)
    np.testing.assert_array_equal(to_numpy(on_device.weight), on_host.weight.numpy())
    np.testing.assert_array_equal(to_numpy(on_device.bias), on_host.bias.numpy())


# ----------------------------------------------------------------------------- Conv2d
def conv_reference(x, w, b, stride, padding, dilation, groups=1):
    """Direct nested-loop cross-correlation."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding[0], padding[0]), (padding[1], padding[1])))
    oh = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (wd + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    out = np.zeros((n, o, oh, ow))
    for b_ in range(n):
        for oc in range(o):
            g = oc // (o // groups)
            for y in range(oh):
                for z in range(ow):
                    total = 0.0 if b is None else b[oc]
                    for ic in range(cg):
                        for i in range(kh):
                            for j in range(kw):
                                total += w[oc, ic, i, j] * xp[b_, g * cg + ic, y * stride[0] + i * dilation[0],
                                                              z * stride[1] + j * dilation[1]]
                    out[b_, oc, y, z] = total
    return out


CONV_CASES = [  # (stride, padding, dilation, groups, bias)
    ((1, 1), (0, 0), (1, 1), 1, True),
    ((2, 1), (1, 2), (1, 1), 1, True),
    ((1, 2), (2, 1), (2, 1), 1, False),
    ((2, 2), (1, 1), (1, 2), 2, True),
]


@pytest.mark.parametrize("stride, padding, dilation, groups, bias", CONV_CASES)
def test_conv2d_matches_nested_loop_reference(device, stride, padding, dilation, groups, bias):
    x, w, b = rand(2, 4, 7, 6), rand(6, 4 // groups, 3, 2, seed=1), rand(6, seed=2)
    out = F.conv2d(t(x, device), t(w, device), t(b, device) if bias else None, stride, padding, dilation, groups)
    np.testing.assert_allclose(to_numpy(out), conv_reference(x, w, b if bias else None, stride, padding, dilation,
                                                            groups), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("stride, padding, dilation, groups, bias", CONV_CASES)
def test_conv2d_gradcheck(device, stride, padding, dilation, groups, bias):
    x = t(rand(2, 4, 6, 5), device, requires_grad=True)
    w = t(rand(4, 4 // groups, 3, 2, seed=1), device, requires_grad=True)
    b = [t(rand(4, seed=2), device, requires_grad=True)] if bias else []
    assert gradcheck(lambda x, w, *b: F.conv2d(x, w, *(b or [None]), stride, padding, dilation, groups), x, w, *b)


def test_conv2d_layer_reused_in_one_graph_and_interleaved_inference(device):
    # the same layer twice in a graph, and an inference call between forward and backward, must not
    # share scratch columns with the pending backward
    conv = nn.Conv2d(3, 3, 3, padding=1, device=device, dtype="float64")
    x = t(rand(2, 3, 5, 5), device, requires_grad=True)
    assert gradcheck(lambda x, w: F.conv2d(F.conv2d(x, w, None, 1, 1), w, None, 1, 1), x, conv.weight)
    y = conv(x).sum()
    with gd.no_grad():
        conv(t(rand(2, 3, 5, 5, seed=9), device))
    y.backward()
    # d(sum conv(x))/dW[o, c, i, j] is the sum of the padded input's window at tap (i, j), for every o
    padded = np.pad(rand(2, 3, 5, 5), ((0, 0), (0, 0), (1, 1), (1, 1)))
    taps = np.array([[padded[:, :, i:i + 5, j:j + 5].sum(axis=(0, 2, 3)) for j in range(3)] for i in range(3)])
    np.testing.assert_allclose(to_numpy(conv.weight.grad), np.broadcast_to(taps.transpose(2, 0, 1), (3, 3, 3, 3)),
                               rtol=1e-10)


def test_conv2d_same_padding_unbatched_input_and_errors(device):
    conv = nn.Conv2d(2, 3, (3, 4), padding="same", device=device, dtype="float64")
    x = rand(2, 6, 7)
    out = conv(t(x, device))
    assert out.shape == (3, 6, 7)
    # 'same' pads (1, 1) rows and (1, 2) columns: compare with an explicit pad + valid conv
    padded = np.pad(x[None], ((0, 0), (0, 0), (1, 1), (1, 2)))
    np.testing.assert_allclose(to_numpy(out), conv_reference(padded, to_numpy(conv.weight), to_numpy(conv.bias),
                                                             (1, 1), (0, 0), (1, 1))[0], rtol=1e-10)
    with pytest.raises(ValueError, match="has 3 channels, but weight of shape"):
        conv(gd.zeros(1, 3, 6, 7, dtype="float64", device=device))
    with pytest.raises(ValueError, match="smaller than the kernel"):
        nn.Conv2d(2, 3, 5, device=device)(gd.zeros(1, 2, 3, 3, device=device))
    with pytest.raises(ValueError, match="padding='same' is not supported for strided"):
        nn.Conv2d(2, 3, 3, stride=2, padding="same")


# ----------------------------------------------------------------------------- pooling
def pool_reference(x, kernel, stride, padding, dilation, mode, count_include_pad=True):
    n, c, h, w = x.shape
    fill = -np.inf if mode == "max" else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2), constant_values=fill)
    oh = (h + 2 * padding[0] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    ow = (w + 2 * padding[1] - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    out = np.zeros((n, c, oh, ow))
    for y in range(oh):
        for z in range(ow):
            window = xp[:, :, y * stride[0]:y * stride[0] + dilation[0] * (kernel[0] - 1) + 1:dilation[0],
                        z * stride[1]:z * stride[1] + dilation[1] * (kernel[1] - 1) + 1:dilation[1]]
            if mode == "max":
                out[:, :, y, z] = window.max(axis=(2, 3))
            else:
                top, left = y * stride[0] - padding[0], z * stride[1] - padding[1]
                count = (kernel[0] * kernel[1] if count_include_pad else
                         (min(top + kernel[0], h) - max(top, 0)) * (min(left + kernel[1], w) - max(left, 0)))
                out[:, :, y, z] = window.sum(axis=(2, 3)) / count
    return out


POOL_CASES = [  # kernel, stride, padding, dilation
    ((2, 2), (2, 2), (0, 0), (1, 1)),
    ((3, 3), (1, 1), (1, 1), (1, 1)),   # overlapping windows
    ((3, 2), (2, 1), (1, 1), (1, 1)),
    ((2, 2), (1, 3), (1, 0), (2, 2)),
]


@pytest.mark.parametrize("kernel, stride, padding, dilation", POOL_CASES)
def test_max_pool2d_values_and_gradcheck(device, kernel, stride, padding, dilation):
    x = rand(2, 3, 7, 6)
    out = F.max_pool2d(t(x, device), kernel, stride, padding, dilation)
    np.testing.assert_array_equal(to_numpy(out), pool_reference(x, kernel, stride, padding, dilation, "max"))
    assert gradcheck(lambda x: F.max_pool2d(x, kernel, stride, padding, dilation), t(x, device, True))


@pytest.mark.parametrize("kernel, stride, padding, dilation", [c for c in POOL_CASES if c[3] == (1, 1)])
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool2d_values_and_gradcheck(device, kernel, stride, padding, dilation, count_include_pad):
    x = rand(2, 3, 7, 6)
    out = F.avg_pool2d(t(x, device), kernel, stride, padding, count_include_pad=count_include_pad)
    np.testing.assert_allclose(to_numpy(out), pool_reference(x, kernel, stride, padding, dilation, "avg",
                                                             count_include_pad), rtol=1e-12)
    assert gradcheck(lambda x: F.avg_pool2d(x, kernel, stride, padding, count_include_pad=count_include_pad),
                     t(x, device, True))


@pytest.mark.parametrize("kernel, stride", [(2, 2), (3, 1)])
def test_max_pool_ties_route_the_gradient_to_the_first_maximum(device, kernel, stride):
    x = t(np.zeros((1, 1, 4, 4)), device, requires_grad=True)  # every window is one big tie
    out = F.max_pool2d(x, kernel, stride)
    out.backward(gd.ones(out.shape, dtype="float64", device=device))
    expected = np.zeros((4, 4))
    for y in range(out.shape[2]):
        for z in range(out.shape[3]):
            expected[y * stride, z * stride] += 1  # the window's top-left element, and only it
    np.testing.assert_array_equal(to_numpy(x.grad)[0, 0], expected)


def test_pool_modules_defaults_and_errors(device):
    x = gd.randn(2, 3, 8, 8, device=device)
    assert nn.MaxPool2d(2)(x).shape == (2, 3, 4, 4)
    assert nn.AvgPool2d(3, stride=1, padding=1)(x).shape == (2, 3, 8, 8)
    assert nn.MaxPool2d(2)(gd.randn(3, 8, 8, device=device)).shape == (3, 4, 4)
    with pytest.raises(ValueError, match="at most half the kernel"):
        nn.MaxPool2d(2, padding=2)(x)
    with pytest.raises(ValueError, match="expected a 4-D input"):
        nn.AvgPool2d(2)(gd.randn(8, 8, device=device))


# ----------------------------------------------------------------------------- batch norm
def batch_norm_reference(batches, momentum, eps=1e-5):
    """PyTorch's rule: normalise with the biased batch variance, track the unbiased one."""
    running_mean, running_var = np.zeros(batches[0].shape[1]), np.ones(batches[0].shape[1])
    outputs = []
    for k, x in enumerate(batches, 1):
        axes = (0,) + tuple(range(2, x.ndim))
        mean, var = x.mean(axis=axes), x.var(axis=axes)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        outputs.append((x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps))
        factor = 1 / k if momentum is None else momentum
        count = x.size // x.shape[1]
        running_mean = (1 - factor) * running_mean + factor * mean
        running_var = (1 - factor) * running_var + factor * var * count / (count - 1)
    return outputs, running_mean, running_var


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("layer_class, shape", [(nn.BatchNorm1d, (6, 3)), (nn.BatchNorm1d, (4, 3, 5)),
                                                 (nn.BatchNorm2d, (4, 3, 2, 5))])
def test_batch_norm_training_follows_pytorchs_running_statistics(device, momentum, layer_class, shape):
    layer = layer_class(3, momentum=momentum, device=device, dtype="float64")
    batches = [rand(*shape, seed=k) * (k + 1) + k for k in range(3)]
    outputs, running_mean, running_var = batch_norm_reference(batches, momentum)
    for x, expected in zip(batches, outputs):
        np.testing.assert_allclose(to_numpy(layer(t(x, device))), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(to_numpy(layer.running_mean), running_mean, rtol=1e-12)
    np.testing.assert_allclose(to_numpy(layer.running_var), running_var, rtol=1e-12)
    assert int(layer.num_batches_tracked.item()) == 3
    layer.eval()
    x = batches[0]
    expected = (x - running_mean.reshape((1, 3) + (1,) * (x.ndim - 2))) / np.sqrt(
        running_var.reshape((1, 3) + (1,) * (x.ndim - 2)) + 1e-5)
    np.testing.assert_allclose(to_numpy(layer(t(x, device))), expected, rtol=1e-10)
    assert int(layer.num_batches_tracked.item()) == 3


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(5, 3), (3, 3, 2, 2)])
def test_batch_norm_gradcheck(device, training, shape):
    x = t(rand(*shape), device, requires_grad=True)
    w = t(rand(3, seed=1), device, requires_grad=True)
    b = t(rand(3, seed=2), device, requires_grad=True)
    mean, var = t(rand(3, seed=3), device), t(np.abs(rand(3, seed=4)) + 0.5, device)
    assert gradcheck(lambda x, w, b: F.batch_norm(x, mean, var, w, b, training=training), x, w, b)


def test_batch_norm_options(device):
    plain = nn.BatchNorm2d(3, affine=False, track_running_stats=False, device=device)
    assert list(plain.parameters()) == [] and list(plain.state_dict()) == []
    x = gd.randn(4, 3, 2, 2, device=device) * 3 + 1
    plain.eval()  # no running statistics: batch statistics in eval mode too
    out = to_numpy(plain(x))
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(out.var(axis=(0, 2, 3)), 1, atol=1e-3)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchNorm1d(3, device=device)(gd.randn(1, 3, device=device))
    with pytest.raises(ValueError, match=r"BatchNorm2d\(3\): input of shape \(2, 4, 2, 2\) has 4 channels"):
        nn.BatchNorm2d(3, device=device)(gd.randn(2, 4, 2, 2, device=device))
    with pytest.raises(ValueError, match="expected a 4-D input"):
        nn.BatchNorm2d(3, device=device)(gd.randn(2, 3, device=device))


def test_batch_norm_float16_accumulates_statistics_in_float32(device):
    layer = nn.BatchNorm1d(2, device=device, dtype="float16")
    x = 1000 + rand(64, 2)  # in float16 a sum of these overflows and the variance is lost
    out = layer(t(x.astype(np.float16), device))
    assert out.dtype == np.float16 and layer.running_var.dtype == np.float16
    x16 = x.astype(np.float16).astype(np.float64)
    expected = (x16 - x16.mean(axis=0)) / np.sqrt(x16.var(axis=0) + 1e-5)
    np.testing.assert_allclose(to_numpy(out).astype(np.float64), expected, atol=2e-2)
    np.testing.assert_allclose(to_numpy(layer.running_mean).astype(np.float64), 0.1 * x16.mean(axis=0), rtol=1e-3)


# ----------------------------------------------------------------------------- layer norm
@pytest.mark.parametrize("normalized_shape", [(5,), (3, 5)])
def test_layer_norm_values_and_gradcheck(device, normalized_shape):
    x = rand(2, 3, 5)
    layer = nn.LayerNorm(normalized_shape, device=device, dtype="float64")
    axes = tuple(range(3 - len(normalized_shape), 3))
    expected = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True) + 1e-5)
    np.testing.assert_allclose(to_numpy(layer(t(x, device))), expected, rtol=1e-10)
    w = t(rand(*normalized_shape, seed=1), device, requires_grad=True)
    b = t(rand(*normalized_shape, seed=2), device, requires_grad=True)
    assert gradcheck(lambda x, w, b: F.layer_norm(x, normalized_shape, w, b), t(x, device, True), w, b)
    assert gradcheck(lambda x: F.layer_norm(x, normalized_shape), t(x, device, True))
    with pytest.raises(ValueError, match="does not end in normalized_shape"):
        layer(gd.zeros(2, 4, device=device, dtype="float64"))


# ----------------------------------------------------------------------------- embedding
def test_embedding_lookup_gradient_and_padding_row(device):
    layer = nn.Embedding(5, 3, padding_idx=1, device=device, dtype="float64")
    assert not to_numpy(layer.weight)[1].any()
    indices = t(np.array([[0, 1, 4], [4, 1, 0]]), device)
    out = layer(indices)
    np.testing.assert_array_equal(to_numpy(out), to_numpy(layer.weight)[[[0, 1, 4], [4, 1, 0]]])
    (out * t(rand(2, 3, 3), device)).sum().backward()
    grad = to_numpy(layer.weight.grad)
    g = rand(2, 3, 3)
    np.testing.assert_allclose(grad[0], g[0, 0] + g[1, 2])  # repeated indices accumulate
    assert not grad[1].any() and not grad[2].any()           # padding row and unused row: no gradient
    weight = t(rand(5, 3), device, requires_grad=True)
    assert gradcheck(lambda w: F.embedding(indices, w), weight)


def test_embedding_index_errors(device):
    layer = nn.Embedding(5, 3, device=device)
    with pytest.raises(IndexError, match=r"7 is out of bounds: valid range is \[0, 5\)"):
        layer(t(np.array([0, 7]), device))
        gd.backend.backend_of(layer.weight.data).fused.raise_pending_device_errors()
    with pytest.raises(TypeError, match="must be integers"):
        layer(gd.zeros(2, device=device))


# ----------------------------------------------------------------------------- small modules
def test_flatten_identity_dropout_modules(device):
    x = gd.randn(2, 3, 4, 5, device=device)
    assert nn.Flatten()(x).shape == (2, 60)
    assert nn.Flatten(0, 2)(x).shape == (24, 5)
    assert nn.Identity(7, k=1)(x) is x
    drop = nn.Dropout(0.5)
    y = to_numpy(drop(gd.ones(1000, device=device)))
    assert set(np.unique(y)) == {0.0, 2.0} and 350 < (y == 0).sum() < 650
    assert drop.eval()(x) is x
    with pytest.raises(ValueError, match="probability"):
        nn.Dropout(1.5)


@pytest.mark.parametrize("module, function", [
    (nn.ReLU(), gd.relu), (nn.LeakyReLU(0.2), lambda x: gd.leaky_relu(x, 0.2)), (nn.ELU(0.5), lambda x: gd.elu(x, 0.5)),
    (nn.Sigmoid(), gd.sigmoid), (nn.Tanh(), gd.tanh), (nn.Softplus(2.0, 10.0), lambda x: gd.softplus(x, 2.0, 10.0)),
    (nn.GELU(), gd.gelu), (nn.GELU("tanh"), lambda x: gd.gelu(x, "tanh")), (nn.SiLU(), gd.silu),
    (nn.Softmax(dim=0), lambda x: gd.softmax(x, 0)), (nn.LogSoftmax(dim=1), lambda x: gd.log_softmax(x, 1)),
])
def test_activation_modules_call_their_functions(device, module, function):
    x = gd.randn(3, 4, device=device) * 3
    np.testing.assert_array_equal(to_numpy(module(x)), to_numpy(function(x)))


def test_activation_values_spot_check():
    x = gd.tensor([-2.0, 0.0, 3.0])
    assert nn.LeakyReLU(0.1)(x).numpy().tolist() == pytest.approx([-0.2, 0.0, 3.0])
    assert nn.Softmax(dim=0)(x).numpy().sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="approximate"):
        nn.GELU("fast")


def test_float16_inference_matches_float32(device):
    gd.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                          nn.AvgPool2d(2), nn.Flatten(), nn.Linear(16, 3), nn.LayerNorm(3)).to(device).eval()
    x = gd.randn(5, 2, 8, 8, device=device)
    expected = to_numpy(model(x))
    with gd.no_grad():
        out = model.half()(x.half())
    assert out.dtype == np.float16
    np.testing.assert_allclose(to_numpy(out).astype(np.float32), expected, atol=2e-2)
