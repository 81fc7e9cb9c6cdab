"""Losses: values against NumPy formulas (PyTorch's definitions), reductions, gradient checks, edge cases."""
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


def reduce(values, reduction):
    return {"mean": values.mean(), "sum": values.sum(), "none": values}[reduction]


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


REGRESSION = {
    "mse_loss": (F.mse_loss, lambda x, y: (x - y) ** 2),
    "l1_loss": (F.l1_loss, lambda x, y: np.abs(x - y)),
    "huber_loss": (lambda x, y, reduction: F.huber_loss(x, y, reduction, delta=0.7),
                   lambda x, y: np.where(np.abs(x - y) < 0.7, 0.5 * (x - y) ** 2, 0.7 * (np.abs(x - y) - 0.35))),
    "binary_cross_entropy": (F.binary_cross_entropy,
                             lambda p, y: -(y * np.log(p) + (1 - y) * np.log(1 - p))),
    "binary_cross_entropy_with_logits": (F.binary_cross_entropy_with_logits,
                                         lambda x, y: -(y * np.log(sigmoid(x)) + (1 - y) * np.log(1 - sigmoid(x)))),
}


def regression_inputs(name):
    x, y = rand(3, 4), rand(3, 4, seed=1)
    if name == "binary_cross_entropy":
        return sigmoid(x), sigmoid(y)  # probabilities, and soft targets in (0, 1)
    if name == "binary_cross_entropy_with_logits":
        return x, sigmoid(y)
    return x, y


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", list(REGRESSION))
def test_elementwise_losses_match_their_formulas_and_gradcheck(device, name, reduction):
    function, formula = REGRESSION[name]
    x, y = regression_inputs(name)
    out = function(t(x, device), t(y, device), reduction=reduction)
    np.testing.assert_allclose(to_numpy(out), reduce(formula(x, y), reduction), rtol=1e-10)
    assert gradcheck(lambda x, y: function(x, y, reduction=reduction), t(x, device, True), t(y, device, True))


def test_loss_modules_match_the_functions(device):
    x, y = t(rand(3, 4), device), t(rand(3, 4, seed=1), device)
    assert nn.MSELoss(reduction="sum")(x, y).item() == F.mse_loss(x, y, "sum").item()
    assert nn.L1Loss()(x, y).item() == F.l1_loss(x, y).item()
    assert nn.HuberLoss(delta=0.5)(x, y).item() == F.huber_loss(x, y, delta=0.5).item()
    with pytest.raises(ValueError, match="reduction must be 'mean', 'sum' or 'none', got 'avg'"):
        nn.MSELoss(reduction="avg")


def test_regression_losses_refuse_silent_broadcasting(device):
    with pytest.raises(ValueError, match=r"target shape \(4,\) differs from input shape \(4, 1\)"):
        F.mse_loss(gd.zeros(4, 1, device=device), gd.zeros(4, device=device))


def test_binary_cross_entropy_clamps_logs_at_minus_100(device):
    p = t(np.array([0.0, 1.0, 0.0, 1.0]), device, requires_grad=True)
    y = t(np.array([1.0, 0.0, 0.0, 1.0]), device)
    loss = F.binary_cross_entropy(p, y, reduction="none")
    assert to_numpy(loss).tolist() == [100.0, 100.0, 0.0, 0.0]
    loss.sum().backward()
    grad = to_numpy(p.grad)
    assert np.isfinite(grad).all()
    np.testing.assert_allclose(grad, [-1e12, 1e12, 0.0, 0.0])  # (p - y) / max(p (1 - p), 1e-12), as PyTorch


def test_binary_cross_entropy_weight(device):
    p, y = sigmoid(rand(2, 3)), (rand(2, 3, seed=1) > 0).astype(float)
    w = np.array([1.0, 2.0, 0.5])
    out = nn.BCELoss(weight=t(w, device))(t(p, device), t(y, device))
    expected = (w * -(y * np.log(p) + (1 - y) * np.log(1 - p))).mean()
    assert out.item() == pytest.approx(expected, rel=1e-12)


def test_bce_with_logits_is_stable_for_huge_logits(device):
    x = t(np.array([1e4, -1e4, 1e4, -1e4, 0.0]), device, requires_grad=True)
    y = t(np.array([1.0, 0.0, 0.0, 1.0, 1.0]), device)
    loss = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    np.testing.assert_allclose(to_numpy(loss), [0.0, 0.0, 1e4, 1e4, np.log(2)], rtol=1e-12)
    loss.sum().backward()
    np.testing.assert_allclose(to_numpy(x.grad), [0.0, 0.0, 1.0, -1.0, -0.5])  # sigmoid(x) - y


def test_bce_with_logits_pos_weight(device):
    x, y = rand(4, 3), (rand(4, 3, seed=1) > 0).astype(float)
    pos_weight = np.array([1.0, 3.0, 0.5])
    loss = nn.BCEWithLogitsLoss(pos_weight=t(pos_weight, device))(t(x, device), t(y, device))
    expected = -(pos_weight * y * np.log(sigmoid(x)) + (1 - y) * np.log(1 - sigmoid(x))).mean()
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    assert gradcheck(lambda x, y, w: F.binary_cross_entropy_with_logits(x, y, pos_weight=w),
                     t(x, device, True), t(sigmoid(rand(4, 3, seed=2)), device, True), t(pos_weight, device, True))


def nll_reference(log_probs, target, weight, ignore_index, reduction):
    w = np.ones(log_probs.shape[1]) if weight is None else weight
    valid = target != ignore_index
    safe = np.where(valid, target, 0)
    picked = np.take_along_axis(log_probs, safe[:, None], axis=1)[:, 0]
    weights = w[safe] * valid
    losses = -picked * weights
    return {"none": losses, "sum": losses.sum(), "mean": losses.sum() / weights.sum()}[reduction]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("shape", [(5, 4), (3, 4, 2)])
def test_nll_loss_ignores_targets_and_weights_classes(device, reduction, weighted, shape):
    x = rand(*shape)
    target = np.random.default_rng(1).integers(0, 4, (shape[0],) + shape[2:])
    target.reshape(-1)[1] = -100
    weight = np.array([1.0, 2.0, 0.5, 1.5]) if weighted else None
    out = F.nll_loss(t(x, device), t(target, device), None if weight is None else t(weight, device),
                     reduction=reduction)
    np.testing.assert_allclose(to_numpy(out), nll_reference(x, target, weight, -100, reduction), rtol=1e-12)
    assert gradcheck(lambda x: F.nll_loss(x, t(target, device), None if weight is None else t(weight, device),
                                          reduction=reduction), t(x, device, True))


def test_nll_loss_target_errors(device):
    with pytest.raises(IndexError, match=r"nll_loss target 4 is out of bounds: valid range is \[0, 4\)"):
        F.nll_loss(gd.zeros(2, 4, device=device), t(np.array([0, 4]), device))
        gd.backend.backend_of(gd.zeros(1, device=device).data).fused.raise_pending_device_errors()
    with pytest.raises(ValueError, match="does not fit input"):
        F.nll_loss(gd.zeros(2, 4, device=device), t(np.array([0, 1, 2]), device))


def test_cross_entropy_equals_nll_of_log_softmax(device):
    x, target = rand(6, 5), np.array([0, 4, 2, -100, 1, 1])
    log_probs = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    expected = nll_reference(log_probs, target, None, -100, "mean")
    assert F.cross_entropy(t(x, device), t(target, device)).item() == pytest.approx(expected, rel=1e-12)
    assert nn.CrossEntropyLoss()(t(x, device), t(target, device)).item() == pytest.approx(expected, rel=1e-12)
    assert F.softmax_cross_entropy(t(x, device), t(target, device)).item() == pytest.approx(expected, rel=1e-12)
    weight = np.array([1.0, 0.5, 2.0, 1.0, 3.0])
    weighted = nn.CrossEntropyLoss(weight=t(weight, device))(t(x, device), t(target, device))
    assert weighted.item() == pytest.approx(nll_reference(log_probs, target, weight, -100, "mean"), rel=1e-12)
    assert gradcheck(lambda x: F.cross_entropy(x, t(target, device)), t(x, device, True))
    assert gradcheck(lambda x: F.cross_entropy(x, t(target, device), t(weight, device)), t(x, device, True))


def test_penalties(device):
    a, b = t(np.array([1.0, -2.0]), device, True), t(np.array([[3.0], [-0.5]]), device, True)
    assert F.l1_penalty([a, b]).item() == pytest.approx(6.5)
    assert F.l2_penalty([a, b]).item() == pytest.approx(1 + 4 + 9 + 0.25)
    assert gradcheck(lambda a, b: F.l1_penalty([a, b]) + F.l2_penalty([a, b]), a, b)
    model = nn.Linear(3, 2)
    expected = sum((p.numpy().astype(np.float64) ** 2).sum() for p in model.parameters())
    assert F.l2_penalty(model.parameters()).item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="no parameters"):
        F.l1_penalty([])


def test_functional_reexports_every_op():
    for name in ("relu", "leaky_relu", "elu", "sigmoid", "tanh", "softplus", "gelu", "silu", "softmax",
                 "log_softmax", "linear", "conv2d", "max_pool2d", "avg_pool2d", "batch_norm", "layer_norm",
                 "embedding", "dropout", "mse_loss", "l1_loss", "huber_loss", "nll_loss", "binary_cross_entropy",
                 "binary_cross_entropy_with_logits", "cross_entropy", "softmax_cross_entropy"):
        assert callable(getattr(F, name)), name
