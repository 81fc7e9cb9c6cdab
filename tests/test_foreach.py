"""Multi-tensor ("foreach") optimizer updates: the host's one-pass kernels (backend/native_foreach)
against the per-tensor kernels, and the optimizers' ``foreach=`` against tensor-by-tensor steps,
bit for bit."""
import numpy as np
import pytest

import gpudl
from gpudl import optim
from gpudl.backend import fused_native, host_compiler, native_foreach, native_kernels

DTYPES = ["float16", "float32", "float64"]
# a matrix past the OpenMP threshold (so the threads split one tensor), a bias, an odd shape, an
# empty tensor and a small matrix: the split falls inside and between tensors
SHAPES = [(3 * native_kernels.PARALLEL_MIN_CHEAP // 700, 700), (512,), (7, 3), (0,), (10, 33)]

native = pytest.mark.skipif(not host_compiler.shutil.which(host_compiler.compiler()),
                            reason=f"no C++ compiler {host_compiler.compiler()!r}: the native kernels cannot be built")


def arrays(dtype, count, seed=0, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(shape).astype(dtype) for shape in shapes] for _ in range(count)]


def copies(columns):
    return [[a.copy() for a in column] for column in columns]


def assert_identical(got, expected):
    for got_column, expected_column in zip(got, expected):
        for g, e in zip(got_column, expected_column):
            assert g.dtype == e.dtype and g.shape == e.shape
            np.testing.assert_array_equal(g, e)


SGD_CASES = [dict(lr=0.1), dict(lr=0.1, weight_decay=0.01),
             dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01),
             dict(lr=0.05, momentum=0.9, nesterov=True, first_step=True),
             dict(lr=0.05, momentum=0.9, nesterov=True)]
ADAM_CASES = [dict(step=1), dict(step=7, lr=0.01, weight_decay=0.1),
              dict(step=3, lr=0.01, weight_decay=0.1, decoupled=True),
              dict(step=5, lr=0.02, weight_decay=0.05, amsgrad=True)]


@native
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SGD_CASES)
def test_native_sgd_foreach_is_bit_identical_to_the_per_tensor_kernel(dtype, case):
    params, grads, buffers = arrays(dtype, 3)
    expected_params, expected_buffers = copies([params, buffers])
    with_momentum = case.get("momentum", 0.0) != 0.0
    for k, p in enumerate(expected_params):
        fused_native.sgd_update(p, grads[k], expected_buffers[k] if with_momentum else None, **case)
    native_foreach.sgd_foreach(params, grads, buffers if with_momentum else None, **case)
    assert_identical([params, buffers], [expected_params, expected_buffers])


@native
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ADAM_CASES)
def test_native_adam_foreach_is_bit_identical_to_the_per_tensor_kernel(dtype, case):
    params, grads, exp_avgs, exp_avg_sqs, maxima = arrays(dtype, 5)
    exp_avg_sqs = [np.abs(v) for v in exp_avg_sqs]
    maxima = [np.abs(v) for v in maxima]
    expected = copies([params, exp_avgs, exp_avg_sqs, maxima])
    amsgrad = case.get("amsgrad", False)
    for k in range(len(params)):
        fused_native.adam_update(expected[0][k], grads[k], expected[1][k], expected[2][k],
                                 expected[3][k] if amsgrad else None, **case)
    native_foreach.adam_foreach(params, grads, exp_avgs, exp_avg_sqs, maxima if amsgrad else None, **case)
    assert_identical([params, exp_avgs, exp_avg_sqs, maxima], expected)


@native
def test_native_foreach_runs_mixed_dtypes_and_layouts_like_the_per_tensor_kernel():
    """float32 and float64 tensors in one call, plus a transposed (non-C-contiguous) parameter,
    which takes the per-tensor kernel."""
    single, double = arrays("float32", 3, seed=1), arrays("float64", 3, seed=2)
    transposed = [np.ascontiguousarray(a[0].T).T for a in arrays("float64", 3, seed=3, shapes=[(40, 30)])]
    params, grads, buffers = ([*s, *d, t] for s, d, t in zip(single, double, transposed))
    assert not params[-1].flags.c_contiguous
    expected_params, expected_buffers = copies([params, buffers])
    case = dict(lr=0.05, momentum=0.9, dampening=0.2, weight_decay=0.1)
    for k, p in enumerate(expected_params):
        fused_native.sgd_update(p, grads[k], expected_buffers[k], **case)
    native_foreach.sgd_foreach(params, grads, buffers, **case)
    assert_identical([params, buffers], [expected_params, expected_buffers])


@native
def test_native_foreach_errors_are_the_per_tensor_ones():
    params, grads = arrays("float32", 2)
    with pytest.raises(ValueError, match="momentum != 0 needs a momentum_buffer"):
        native_foreach.sgd_foreach(params, grads, None, lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="amsgrad=True needs max_exp_avg_sq"):
        native_foreach.adam_foreach(params, grads, params, grads, None, step=1, amsgrad=True)
    with pytest.raises(TypeError, match="sgd: expected a float16/float32/float64 array, got int32"):
        native_foreach.sgd_foreach([np.zeros(3, np.int32)], [np.zeros(3, np.int32)], None, lr=0.1)


# ------------------------------------------------------------------------------------------------
# the optimizers: foreach=None/True (one multi-tensor update per group) against foreach=False

OPTIMIZERS = [
    (optim.SGD, dict(lr=0.1)),
    (optim.SGD, dict(lr=0.05, momentum=0.9, weight_decay=0.01)),
    (optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, maximize=True)),
    (optim.Adam, dict(lr=0.01)),
    (optim.Adam, dict(lr=0.01, weight_decay=0.1, amsgrad=True, maximize=True)),
    (optim.AdamW, dict(lr=0.01, weight_decay=0.1)),
    (optim.Adagrad, dict(lr=0.1)),
    (optim.RMSprop, dict(lr=0.01, momentum=0.5, eps=1e-3)),  # eps 1e-8 is 0 in float16
]
IDS = ["SGD", "SGD-momentum", "SGD-nesterov-maximize", "Adam", "Adam-amsgrad-maximize", "AdamW", "Adagrad",
       "RMSprop"]


def model_params(device, dtypes, seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(33, 20), (20,), (5, 33), (5,)]
    return [gpudl.tensor(rng.standard_normal(shape), dtype=dtype, device=device, requires_grad=True)
            for shape, dtype in zip(shapes, dtypes)]


def train(cls, kwargs, params, steps=4, skip=None, **extra):
    """``steps`` steps of a fixed quadratic-ish loss; parameter ``skip`` gets no gradient on odd steps."""
    opt = cls(params, **kwargs, **extra)
    for t in range(steps):
        opt.zero_grad()
        loss = None
        for k, p in enumerate(params):
            if skip == k and t % 2:
                continue
            term = ((p.float() * (0.5 + k)) ** 2).sum() + p.float().sum() * (0.1 * t)
            loss = term if loss is None else loss + term
        loss.backward()
        opt.step()
    return opt


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls, kwargs", OPTIMIZERS, ids=IDS)
def test_foreach_steps_are_bit_identical_to_per_tensor_steps(cls, kwargs, dtype, device):
    runs = {}
    for foreach in (None, True, False):
        params = model_params(device, [dtype] * 4)
        opt = train(cls, kwargs, params, foreach=foreach)
        assert opt.param_groups[0]["foreach"] is foreach
        runs[foreach] = [p.numpy() for p in params]
    for foreach in (None, True):
        assert_identical([runs[foreach]], [runs[False]])


@pytest.mark.parametrize("cls, kwargs", OPTIMIZERS, ids=IDS)
def test_mixed_dtypes_and_a_parameter_skipping_steps(cls, kwargs, device):
    """One group of float16/32/64 tensors where the third gets no gradient every other step (its
    Adam step count falls behind: its own bias corrections)."""
    dtypes = ["float32", "float64", "float16", "float32"]
    runs = {}
    for foreach in (True, False):
        params = model_params(device, dtypes)
        opt = train(cls, kwargs, params, steps=5, skip=2, foreach=foreach)
        runs[foreach] = ([p.numpy() for p in params], opt.state)
    assert_identical([runs[True][0]], [runs[False][0]])
    if cls in (optim.Adam, optim.AdamW):
        assert [runs[True][1][k]["step"] for k in range(4)] == [5, 5, 3, 5]


def test_a_parameter_without_grad_is_left_alone(device):
    a, b = model_params(device, ["float32"] * 2)
    before = b.numpy()
    opt = optim.SGD([a, b], lr=0.1, momentum=0.9)
    (a.float() ** 2).sum().backward()
    version = b._version[0]
    opt.step()
    np.testing.assert_array_equal(b.numpy(), before)
    assert b._version[0] == version and 1 not in opt.state


@pytest.mark.parametrize("cls, kwargs", OPTIMIZERS[1:6], ids=IDS[1:6])
def test_state_dict_round_trip_between_foreach_and_per_tensor(cls, kwargs, device):
    """State saved by a multi-tensor optimizer continues identically in a per-tensor one."""
    params = model_params(device, ["float32"] * 4)
    opt = train(cls, kwargs, params, steps=2, foreach=True)
    saved = opt.state_dict()
    assert saved["param_groups"][0]["foreach"] is True
    resumed_params = [p.detach().clone().requires_grad_() for p in params]
    resumed = cls(resumed_params, **kwargs, foreach=False)
    resumed.load_state_dict(saved)
    assert resumed.param_groups[0]["foreach"] is True  # hyperparameters come from the saved state
    resumed.param_groups[0]["foreach"] = False
    for optimizer, tensors in ((opt, params), (resumed, resumed_params)):
        optimizer.zero_grad()
        sum(((p.float() * 1.5) ** 2).sum() for p in tensors).backward()
        optimizer.step()
    assert_identical([[p.numpy() for p in resumed_params]], [[p.numpy() for p in params]])


def test_foreach_per_group_and_bad_values():
    a, b = model_params("cpu", ["float32"] * 2)
    opt = optim.Adam([{"params": [a], "foreach": False}, {"params": [b]}], foreach=True)
    assert [group["foreach"] for group in opt.param_groups] == [False, True]
    with pytest.raises(ValueError, match="Adam: foreach must be None, True or False, got 'yes'"):
        optim.Adam([a], foreach="yes")


@pytest.mark.parametrize("cls, kwargs", OPTIMIZERS, ids=IDS)
def test_foreach_trajectory_matches_pytorch_foreach(cls, kwargs, torch):
    """The same group stepped by gpudl and by PyTorch, both with ``foreach=True``, in float64."""
    params = model_params("cpu", ["float64"] * 4)
    reference = [torch.tensor(p.numpy(), requires_grad=True) for p in params]
    ours = cls(params, **kwargs, foreach=True)
    theirs = getattr(torch.optim, cls.__name__)(reference, **kwargs, foreach=True)
    for t in range(4):
        for optimizer, tensors in ((ours, params), (theirs, reference)):
            optimizer.zero_grad()
            sum(((p * (0.5 + k)) ** 2).sum() + p.sum() * (0.1 * t) for k, p in enumerate(tensors)).backward()
            optimizer.step()
    for p, r in zip(params, reference):
        np.testing.assert_allclose(p.numpy(), r.detach().numpy(), rtol=1e-12, atol=1e-14)
