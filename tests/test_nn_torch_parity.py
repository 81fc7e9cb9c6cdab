"""Side by side with PyTorch (skipped when it is not installed): a model's weights move through
state_dict() as NumPy arrays and give the same outputs, gradients and running statistics."""
import numpy as np
import pytest

import gpudl as gd
from gpudl import nn
from gpudl.nn import functional as F

torch = pytest.importorskip("torch", reason="PyTorch is not installed: no side-by-side check")


def cnn(m):
    return m.Sequential(
        m.Conv2d(2, 4, 3, stride=1, padding=1), m.BatchNorm2d(4), m.ReLU(), m.MaxPool2d(2),
        m.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), bias=False), m.AvgPool2d(2, 1, 1),
        m.Flatten(), m.Linear(6 * 3 * 3, 5), m.LayerNorm(5), m.GELU(), m.Linear(5, 3))


def test_state_dict_exchange_gives_pytorchs_outputs_gradients_and_statistics():
    torch.manual_seed(0)
    reference = cnn(torch.nn).double()
    model = cnn(nn).double()
    assert list(model.state_dict()) == list(reference.state_dict())
    model.load_state_dict({k: v.numpy() for k, v in reference.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((4, 2, 8, 8))
    target = np.array([0, 2, 1, 2])
    for step in range(2):  # training mode: batch statistics, running-statistics updates
        out_t = reference(torch.tensor(x + step))
        out_g = model(gd.tensor(x + step))
        np.testing.assert_allclose(out_g.numpy(), out_t.detach().numpy(), rtol=1e-9, atol=1e-12)
        torch.nn.functional.cross_entropy(out_t, torch.tensor(target)).backward()
        F.cross_entropy(out_g, gd.tensor(target)).backward()
    grads = dict(model.named_parameters())
    for name, p in reference.named_parameters():
        np.testing.assert_allclose(grads[name].grad.numpy(), p.grad.numpy(), rtol=1e-8, atol=1e-12, err_msg=name)
    state = model.state_dict()
    for name, value in reference.state_dict().items():
        np.testing.assert_allclose(state[name].numpy(), value.numpy(), rtol=1e-10, err_msg=name)
    reference.eval(), model.eval()
    np.testing.assert_allclose(model(gd.tensor(x)).numpy(), reference(torch.tensor(x)).detach().numpy(), rtol=1e-9)


def test_max_pool_ties_match_pytorch():
    x = np.round(np.random.default_rng(1).standard_normal((2, 3, 7, 7)))  # many ties
    for kernel, stride, padding in [(2, 2, 0), (3, 1, 1), (3, 2, 1)]:
        xt = torch.tensor(x, requires_grad=True)
        torch.nn.functional.max_pool2d(xt, kernel, stride, padding).sum().backward()
        xg = gd.tensor(x, requires_grad=True)
        F.max_pool2d(xg, kernel, stride, padding).sum().backward()
        np.testing.assert_array_equal(xg.grad.numpy(), xt.grad.numpy())


@pytest.mark.parametrize("name, args", [
    ("binary_cross_entropy", lambda r: (np.array([0.0, 1.0, 0.3, 1e-50, 1.0]), np.array([1.0, 0.0, 0.6, 1.0, 1.0]))),
    ("binary_cross_entropy_with_logits", lambda r: (np.array([1e4, -1e4, 3.0, -40.0, 0.0]), r.random(5))),
    ("huber_loss", lambda r: (r.standard_normal(6) * 2, r.standard_normal(6))),
    ("l1_loss", lambda r: (r.standard_normal(6), r.standard_normal(6))),
    ("mse_loss", lambda r: (r.standard_normal(6), r.standard_normal(6))),
])
def test_elementwise_losses_match_pytorch(name, args):
    x, y = args(np.random.default_rng(0))
    for reduction in ("mean", "sum", "none"):
        xt = torch.tensor(x, requires_grad=True)
        getattr(torch.nn.functional, name)(xt, torch.tensor(y), reduction=reduction).sum().backward()
        xg = gd.tensor(x, requires_grad=True)
        out = getattr(F, name)(xg, gd.tensor(y), reduction=reduction)
        out.sum().backward()
        expected = getattr(torch.nn.functional, name)(torch.tensor(x), torch.tensor(y), reduction=reduction)
        np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-12)
        np.testing.assert_allclose(xg.grad.numpy(), xt.grad.numpy(), rtol=1e-12)


def test_nll_and_weighted_cross_entropy_match_pytorch():
    rng = np.random.default_rng(0)
    x, target, weight = rng.standard_normal((6, 4, 2)), rng.integers(0, 4, (6, 2)), rng.random(4) + 0.5
    target[1, 0] = -100
    for reduction in ("mean", "sum", "none"):
        for fn in ("nll_loss", "cross_entropy"):
            expected = getattr(torch.nn.functional, fn)(torch.tensor(x), torch.tensor(target), torch.tensor(weight),
                                                         reduction=reduction)
            out = getattr(F, fn)(gd.tensor(x), gd.tensor(target), gd.tensor(weight), reduction=reduction)
            np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-12)


def test_default_initialisation_draws_from_pytorchs_distributions():
    # same bounds as PyTorch's own layers (values differ: another generator)
    for ours, theirs in [(nn.Linear(50, 20), torch.nn.Linear(50, 20)), (nn.Conv2d(3, 8, 5), torch.nn.Conv2d(3, 8, 5))]:
        for name, p in theirs.named_parameters():
            bound = 1 / np.sqrt(np.prod(p.shape[1:]) if name == "weight" else np.prod(theirs.weight.shape[1:]))
            assert np.abs(p.detach().numpy()).max() <= bound
            assert np.abs(dict(ours.named_parameters())[name].numpy()).max() <= bound
