"""Optimizers: trajectories against float64 NumPy references written from PyTorch's documented
update rules (torch.optim.SGD/Adagrad/RMSprop/Adam/AdamW), param groups, state dicts, errors."""
import math

import numpy as np
import pytest

import gpudl
from gpudl import optim

STEPS = 6
TARGET = np.array([[0.5, -1.0, 2.0], [0.0, 1.5, -0.5]])
WEIGHT = np.array([[1.0, 0.5, 2.0], [0.2, 1.0, 3.0]])
START = np.array([[1.0, 2.0, -1.0], [0.3, -0.7, 0.1]])


def loss_scale(t):
    """A per-step factor so that successive gradients differ in more than the parameter."""
    return 1.0 + 0.5 * math.sin(t)


def reference_grad(p, t):
    """d/dp of loss_scale(t) * sum(WEIGHT * (p - TARGET)^2)."""
    return 2.0 * loss_scale(t) * WEIGHT * (p - TARGET)


# ------------------------------------------------------------------ float64 references (PyTorch's rules)
def ref_sgd(p, g, st, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False):
    g = -g if maximize else g
    if weight_decay:
        g = g + weight_decay * p
    if momentum:
        st["b"] = g.copy() if "b" not in st else momentum * st["b"] + (1 - dampening) * g
        g = g + momentum * st["b"] if nesterov else st["b"]
    return p - lr * g


def ref_adagrad(p, g, st, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10,
                maximize=False):
    st["t"] = st.get("t", 0) + 1
    g = -g if maximize else g
    if weight_decay:
        g = g + weight_decay * p
    clr = lr / (1 + (st["t"] - 1) * lr_decay)
    st["sum"] = st.get("sum", np.full_like(p, initial_accumulator_value)) + g * g
    return p - clr * g / (np.sqrt(st["sum"]) + eps)


def ref_rmsprop(p, g, st, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
                maximize=False):
    g = -g if maximize else g
    if weight_decay:
        g = g + weight_decay * p
    st["v"] = alpha * st.get("v", 0.0) + (1 - alpha) * g * g
    if centered:
        st["g_avg"] = alpha * st.get("g_avg", 0.0) + (1 - alpha) * g
        avg = np.sqrt(st["v"] - st["g_avg"] ** 2) + eps
    else:
        avg = np.sqrt(st["v"]) + eps
    if momentum > 0:
        st["b"] = momentum * st.get("b", 0.0) + g / avg
        return p - lr * st["b"]
    return p - lr * g / avg


def ref_adam(p, g, st, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False,
             decoupled=False):
    b1, b2 = betas
    st["t"] = t = st.get("t", 0) + 1
    g = -g if maximize else g
    if weight_decay and decoupled:
        p = p * (1 - lr * weight_decay)
    elif weight_decay:
        g = g + weight_decay * p
    st["m"] = b1 * st.get("m", 0.0) + (1 - b1) * g
    st["v"] = b2 * st.get("v", 0.0) + (1 - b2) * g * g
    m_hat = st["m"] / (1 - b1 ** t)
    if amsgrad:  # PyTorch keeps the max of the raw second moment and bias-corrects it at each step
        st["v_max"] = np.maximum(st.get("v_max", 0.0), st["v"])
        v_hat = st["v_max"] / (1 - b2 ** t)
    else:
        v_hat = st["v"] / (1 - b2 ** t)
    return p - lr * m_hat / (np.sqrt(v_hat) + eps)


def ref_adamw(p, g, st, weight_decay=1e-2, **kw):
    return ref_adam(p, g, st, weight_decay=weight_decay, decoupled=True, **kw)


CASES = [
    (optim.SGD, ref_sgd, dict(lr=0.1)),
    (optim.SGD, ref_sgd, dict(lr=0.05, momentum=0.9)),
    (optim.SGD, ref_sgd, dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.1)),
    (optim.SGD, ref_sgd, dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.05)),
    (optim.SGD, ref_sgd, dict(lr=0.02, momentum=0.5, weight_decay=0.1, maximize=True)),
    (optim.Adagrad, ref_adagrad, dict()),
    (optim.Adagrad, ref_adagrad, dict(lr=0.1, lr_decay=0.05, weight_decay=0.1, initial_accumulator_value=0.2)),
    (optim.Adagrad, ref_adagrad, dict(lr=0.1, weight_decay=0.1, maximize=True)),
    (optim.RMSprop, ref_rmsprop, dict()),
    (optim.RMSprop, ref_rmsprop, dict(lr=0.01, alpha=0.9, momentum=0.7, weight_decay=0.1)),
    (optim.RMSprop, ref_rmsprop, dict(lr=0.01, alpha=0.9, momentum=0.5, centered=True, eps=1e-4)),
    (optim.RMSprop, ref_rmsprop, dict(lr=0.01, centered=True, maximize=True)),
    (optim.Adam, ref_adam, dict()),
    (optim.Adam, ref_adam, dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    (optim.Adam, ref_adam, dict(lr=0.05, weight_decay=0.1, amsgrad=True)),
    (optim.Adam, ref_adam, dict(lr=0.05, maximize=True)),
    (optim.AdamW, ref_adamw, dict()),
    (optim.AdamW, ref_adamw, dict(lr=0.05, weight_decay=0.2, amsgrad=True)),
]
CASE_IDS = [f"{cls.__name__}-" + "-".join(f"{k}={v}" for k, v in kw.items()) for cls, _, kw in CASES]


def make_param(device, dtype="float64", start=START):
    return gpudl.tensor(start, dtype=dtype, device=device, requires_grad=True)


def backward_loss(p, t):
    """Set p.grad through autograd: loss_scale(t) * sum(WEIGHT * (p - TARGET)^2)."""
    target = gpudl.tensor(TARGET, dtype=p.dtype, device=p.device)
    weight = gpudl.tensor(WEIGHT, dtype=p.dtype, device=p.device)
    loss = (weight * (p - target) ** 2).sum() * loss_scale(t)
    loss.backward()
    return loss


def run_reference(reference, kwargs, start=START, steps=STEPS):
    p, state, trajectory = start.astype(np.float64), {}, []
    for t in range(steps):
        p = reference(p, reference_grad(p, t), state, **kwargs)
        trajectory.append(p)
    return trajectory


def run_gpudl(cls, kwargs, device, dtype="float64", steps=STEPS):
    p = make_param(device, dtype)
    opt = cls([p], **kwargs)
    trajectory = []
    for t in range(steps):
        opt.zero_grad()
        backward_loss(p, t)
        opt.step()
        trajectory.append(p.numpy())
    return trajectory, p, opt


@pytest.mark.parametrize("cls, reference, kwargs", CASES, ids=CASE_IDS)
def test_trajectory_matches_pytorch_rule_in_float64(cls, reference, kwargs, device):
    got, p, _ = run_gpudl(cls, kwargs, device)
    expected = run_reference(reference, kwargs)
    for t, (a, b) in enumerate(zip(got, expected)):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13, err_msg=f"step {t + 1}")
    assert not np.allclose(got[-1], START)  # the parameter really moved
    assert p.dtype == np.float64 and p.device == device


@pytest.mark.parametrize("case", [1, 3, 7, 10, 14, 17], ids=[CASE_IDS[k] for k in (1, 3, 7, 10, 14, 17)])
def test_float32_parameters_stay_float32_and_follow_the_reference(case, device):
    cls, reference, kwargs = CASES[case]
    got, p, opt = run_gpudl(cls, kwargs, device, dtype="float32")
    np.testing.assert_allclose(got[-1], run_reference(reference, kwargs)[-1], rtol=2e-5, atol=2e-6)
    assert p.dtype == np.float32
    for entry in opt.state_dict()["state"].values():
        for value in entry.values():
            if isinstance(value, gpudl.Tensor):
                assert value.dtype == np.float32 and value.device == device


def test_adam_defaults_are_pytorch_defaults():
    p = make_param("cpu")
    adam, adamw = optim.Adam([p]), optim.AdamW([p.detach().requires_grad_()])
    expected = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False,
                    foreach=None)
    assert adam.defaults == expected
    assert adamw.defaults == {**expected, "weight_decay": 1e-2}
    assert optim.Adagrad([make_param("cpu")]).defaults == dict(
        lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10, maximize=False,
        foreach=None)
    assert optim.RMSprop([make_param("cpu")]).defaults == dict(
        lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, maximize=False,
        foreach=None)


def test_param_groups_use_their_own_hyperparameters(device):
    a, b = make_param(device), make_param(device, start=-START)
    opt = optim.SGD([{"params": [a]}, {"params": b, "lr": 0.01, "weight_decay": 0.2}], lr=0.1, momentum=0.9)
    assert opt.param_groups[1]["momentum"] == 0.9 and opt.param_groups[0]["weight_decay"] == 0.0
    for t in range(STEPS):
        opt.zero_grad()
        backward_loss(a, t)
        backward_loss(b, t)
        opt.step()
    np.testing.assert_allclose(a.numpy(), run_reference(ref_sgd, dict(lr=0.1, momentum=0.9))[-1], rtol=1e-12)
    expected_b = run_reference(ref_sgd, dict(lr=0.01, momentum=0.9, weight_decay=0.2), start=-START)[-1]
    np.testing.assert_allclose(b.numpy(), expected_b, rtol=1e-12)


def test_add_param_group_is_stepped_with_its_settings(device):
    a, b = make_param(device), make_param(device)
    opt = optim.Adam([a], lr=0.05)
    opt.add_param_group({"params": [b], "lr": 0.2, "amsgrad": True})
    assert opt.param_groups[1]["betas"] == (0.9, 0.999)
    for t in range(STEPS):
        opt.zero_grad()
        backward_loss(a, t)
        backward_loss(b, t)
        opt.step()
    np.testing.assert_allclose(b.numpy(), run_reference(ref_adam, dict(lr=0.2, amsgrad=True))[-1], rtol=1e-11)
    assert set(opt.state) == {0, 1} and "max_exp_avg_sq" in opt.state[1]


def test_parameters_without_grad_are_skipped(device):
    a, frozen = make_param(device), make_param(device)
    opt = optim.SGD([a, frozen], lr=0.1, momentum=0.9)
    backward_loss(a, 0)
    opt.step()
    np.testing.assert_array_equal(frozen.numpy(), START)
    assert not np.array_equal(a.numpy(), START)
    assert list(opt.state) == [0]


def test_zero_grad(device):
    p = make_param(device)
    opt = optim.SGD([p], lr=0.1)
    backward_loss(p, 0)
    grad = p.grad
    opt.zero_grad(set_to_none=False)
    assert p.grad is grad and np.array_equal(grad.numpy(), np.zeros_like(START))
    opt.zero_grad()
    assert p.grad is None


def test_step_runs_the_closure_and_returns_its_loss(device):
    p = make_param(device)
    opt = optim.SGD([p], lr=0.1)

    def closure():
        opt.zero_grad()
        return backward_loss(p, 0)

    with gpudl.no_grad():  # the closure still records its graph
        loss = opt.step(closure)
    assert loss.item() == pytest.approx(float(np.sum(WEIGHT * (START - TARGET) ** 2)))
    np.testing.assert_allclose(p.numpy(), ref_sgd(START, reference_grad(START, 0), {}, lr=0.1))


def test_step_updates_in_place_and_bumps_the_version(device):
    p = make_param(device)
    opt = optim.RMSprop([p], momentum=0.5, centered=True)
    data = p.data
    y = p * p  # saves p for backward
    backward_loss(p, 0)
    opt.step()
    state = {name: value for name, value in opt.state[0].items() if name != "step"}
    backward_loss(p, 1)
    opt.step()
    assert p.data is data
    assert all(opt.state[0][name] is value for name, value in state.items())
    with pytest.raises(RuntimeError):
        y.sum().backward()


@pytest.mark.parametrize("cls, reference, kwargs", [
    (optim.SGD, ref_sgd, dict(lr=0.05, momentum=0.9, nesterov=True)),
    (optim.Adagrad, ref_adagrad, dict(lr=0.1, lr_decay=0.01)),
    (optim.RMSprop, ref_rmsprop, dict(momentum=0.5, centered=True)),
    (optim.Adam, ref_adam, dict(lr=0.05, amsgrad=True)),
    (optim.AdamW, ref_adamw, dict(lr=0.05)),
], ids=["SGD", "Adagrad", "RMSprop", "Adam", "AdamW"])
def test_state_dict_round_trip_continues_identically(cls, reference, kwargs, device):
    p = make_param(device)
    opt = cls([p], **kwargs)
    for t in range(3):
        opt.zero_grad()
        backward_loss(p, t)
        opt.step()
    saved = opt.state_dict()
    assert list(saved["state"]) == [0] and saved["param_groups"][0]["params"] == [0]
    assert all(isinstance(v, (gpudl.Tensor, int)) for v in saved["state"][0].values())
    q = make_param(device, start=p.numpy())
    resumed = cls([q], lr=123.0)  # hyperparameters come back from the state dict
    resumed.load_state_dict(saved)
    assert resumed.param_groups[0]["lr"] == kwargs.get("lr", opt.defaults["lr"])
    for t in range(3, STEPS):
        for param, o in ((p, opt), (q, resumed)):
            o.zero_grad()
            backward_loss(param, t)
            o.step()
    np.testing.assert_array_equal(q.numpy(), p.numpy())
    np.testing.assert_allclose(p.numpy(), run_reference(reference, kwargs)[-1], rtol=1e-11)


def test_loaded_state_is_a_copy_on_the_parameters_device_and_dtype(device):
    p = make_param("cpu")
    opt = optim.Adam([p])
    backward_loss(p, 0)
    opt.step()
    q = make_param(device, dtype="float32")
    resumed = optim.Adam([q])
    resumed.load_state_dict(opt.state_dict())
    exp_avg = resumed.state[0]["exp_avg"]
    assert exp_avg is not opt.state[0]["exp_avg"] and gpudl.backend.device_of(exp_avg) == device
    assert exp_avg.dtype == np.float32 and resumed.state[0]["step"] == 1


def test_load_state_dict_rejects_a_different_model():
    a, b = make_param("cpu"), make_param("cpu")
    opt = optim.SGD([a, b], lr=0.1, momentum=0.9)
    backward_loss(a, 0)
    backward_loss(b, 0)
    opt.step()
    saved = opt.state_dict()
    with pytest.raises(ValueError, match="group 0 has 2 parameters in the saved state but 1 here"):
        optim.SGD([make_param("cpu")], lr=0.1).load_state_dict(saved)
    with pytest.raises(ValueError, match="1 parameter groups, this optimizer has 2"):
        optim.SGD([{"params": [make_param("cpu")]}, {"params": [make_param("cpu")]}], lr=0.1).load_state_dict(saved)
    other = [gpudl.zeros(3, dtype="float64", requires_grad=True), make_param("cpu")]
    with pytest.raises(ValueError, match=r"'momentum_buffer' of parameter 0 has shape \(2, 3\) but the parameter "
                                         r"has shape \(3,\)"):
        optim.SGD(other, lr=0.1).load_state_dict(saved)
    with pytest.raises(ValueError, match="keys 'state' and 'param_groups'"):
        opt.load_state_dict({"state": {}})


def test_bad_parameters_are_clear_errors():
    p = make_param("cpu")
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(TypeError, match="iterable of tensors"):
        optim.SGD(p, lr=0.1)
    with pytest.raises(ValueError, match="not a leaf"):
        optim.SGD([p * 2], lr=0.1)
    with pytest.raises(TypeError, match="parameter 1 is a ndarray"):
        optim.Adam([p, START])
    with pytest.raises(TypeError, match="dtype int64"):
        optim.Adam([gpudl.tensor([1, 2])])
    with pytest.raises(ValueError, match="more than once"):
        optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1)
    with pytest.raises(ValueError, match=r"unknown hyperparameter\(s\) \['momentum'\]"):
        optim.Adam([{"params": [p], "momentum": 0.9}])
    with pytest.raises(TypeError, match="not a set"):
        optim.Adam({p})


@pytest.mark.parametrize("make, message", [
    (lambda p: optim.SGD([p], lr=-0.1), "invalid learning rate lr=-0.1"),
    (lambda p: optim.SGD([p], lr=0.1, nesterov=True), "nesterov=True needs momentum > 0 and dampening == 0"),
    (lambda p: optim.SGD([p], lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "dampening == 0"),
    (lambda p: optim.Adam([p], betas=(0.9, 1.0)), r"invalid betas=\(0.9, 1.0\)"),
    (lambda p: optim.AdamW([p], eps=-1.0), "invalid eps=-1.0"),
    (lambda p: optim.Adagrad([p], lr_decay=-1), "invalid lr_decay=-1"),
    (lambda p: optim.RMSprop([p], momentum=-0.5), "invalid momentum=-0.5"),
    (lambda p: optim.RMSprop([{"params": [p], "alpha": -1}]), "invalid alpha=-1"),
])
def test_bad_hyperparameters_are_clear_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make(make_param("cpu"))


# ------------------------------------------------------------------ gradient clipping
def params_with_grads(device, *grads):
    params = []
    for g in grads:
        p = gpudl.zeros(*np.shape(g), dtype="float64", device=device, requires_grad=True)
        p.grad = gpudl.tensor(np.asarray(g, dtype=np.float64), device=device)
        params.append(p)
    return params


GRADS = (np.array([[3.0, -4.0], [1.0, 0.5]]), np.array([-2.0, 6.0, 0.0]))


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf, "inf"])
def test_clip_grad_norm_scales_by_the_total_norm(norm_type, device):
    params = params_with_grads(device, *GRADS)
    flat = np.concatenate([g.ravel() for g in GRADS])
    order = float(norm_type)
    expected = np.abs(flat).max() if order == math.inf else np.sum(np.abs(flat) ** order) ** (1 / order)
    total = optim.clip_grad_norm_(params, max_norm=1.5, norm_type=norm_type)
    assert isinstance(total, gpudl.Tensor) and total.shape == () and total.device == device
    assert total.item() == pytest.approx(expected, rel=1e-12)
    for p, g in zip(params, GRADS):
        np.testing.assert_allclose(p.grad.numpy(), g * 1.5 / (expected + 1e-6), rtol=1e-12)


def test_clip_grad_norm_leaves_small_gradients_alone(device):
    params = params_with_grads(device, *GRADS)
    params.append(gpudl.zeros(2, device=device, requires_grad=True))  # no grad: ignored
    total = optim.clip_grad_norm_(params, max_norm=100.0)
    assert total.item() == pytest.approx(np.sqrt(sum(np.sum(g ** 2) for g in GRADS)), rel=1e-12)
    for p, g in zip(params, GRADS):
        np.testing.assert_array_equal(p.grad.numpy(), g)


def test_clip_grad_norm_of_one_float32_tensor_and_of_none(device):
    p = gpudl.zeros(2, device=device, requires_grad=True)
    p.grad = gpudl.tensor([3.0, 4.0], device=device)
    total = optim.clip_grad_norm_(p, 1.0)
    assert total.dtype == np.float32 and total.item() == pytest.approx(5.0)
    np.testing.assert_allclose(p.grad.numpy(), [0.6, 0.8], rtol=1e-6)
    assert optim.clip_grad_norm_([gpudl.zeros(2, requires_grad=True)], 1.0).item() == 0.0


def test_clip_grad_norm_nonfinite(device):
    params = params_with_grads(device, [1.0, np.nan])
    with pytest.raises(RuntimeError, match="total norm of order 2.0 of the gradients is nan"):
        optim.clip_grad_norm_(params, 1.0, error_if_nonfinite=True)
    assert math.isnan(optim.clip_grad_norm_(params, 1.0).item())
    with pytest.raises(ValueError, match="norm_type must be positive"):
        optim.clip_grad_norm_(params, 1.0, norm_type=0)


def test_clip_grad_value_(device):
    params = params_with_grads(device, *GRADS)
    optim.clip_grad_value_(params, 2.5)
    for p, g in zip(params, GRADS):
        np.testing.assert_array_equal(p.grad.numpy(), np.clip(g, -2.5, 2.5))
    with pytest.raises(ValueError, match="clip_value must be >= 0"):
        optim.clip_grad_value_(params, -1)
