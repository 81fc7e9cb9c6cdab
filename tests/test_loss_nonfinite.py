"""NaN and ±inf through every loss: PyTorch's values and gradients (or, where PyTorch refuses
the input, a clear error). Side by side with PyTorch: these run in CI's parity pass (.venv-torch)."""
import numpy as np
import pytest

import gpudl as gd
from gpudl import nn

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # inf and NaN are the point here

NAN, INF = float("nan"), float("inf")
# each row holds one special value among ordinary ones, so a row's loss shows how it spreads
SCORES = np.array([[NAN, 0.5, -1.0], [INF, 0.2, 0.1], [-INF, 1.0, 2.0], [0.3, -0.7, 1.5], [INF, -INF, 0.0]])
TARGETS = np.array([1, 0, 2, 2, 0])
REGRESSION_TARGETS = np.array([[0.1, NAN, 0.0], [1.0, INF, -1.0], [0.5, 0.5, 0.5], [-INF, 0.0, 1.0],
                               [0.0, 0.0, 0.0]])
PROBABILITIES = np.array([[0.0, 0.5, 1.0], [0.2, 0.9, 0.1], [NAN, 0.3, 0.4], [1.0, 1.0, 0.0], [0.5, 0.5, 0.5]])
BINARY_TARGETS = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.5], [1.0, 0.0, 0.0]])

CASES = {  # name: (inputs, target, keyword arguments)
    "mse_loss": (SCORES, REGRESSION_TARGETS, {}),
    "l1_loss": (SCORES, REGRESSION_TARGETS, {}),
    "huber_loss": (SCORES, REGRESSION_TARGETS, {"delta": 0.7}),
    "binary_cross_entropy_with_logits": (SCORES, BINARY_TARGETS, {}),
    "binary_cross_entropy": (PROBABILITIES, BINARY_TARGETS, {}),
    "binary_cross_entropy (finite)": (np.nan_to_num(PROBABILITIES, nan=0.25), BINARY_TARGETS, {}),
    "cross_entropy": (SCORES, TARGETS, {}),
    "cross_entropy smoothed": (SCORES, TARGETS, {"label_smoothing": 0.1}),
    "nll_loss": (SCORES, TARGETS, {}),
    "softmax_cross_entropy": (SCORES, TARGETS, {}),
}
TORCH_NAME = {"softmax_cross_entropy": "cross_entropy"}
SHIFTED_SOFTMAX = {"cross_entropy", "softmax_cross_entropy"}


def run(loss_function, tensor, name, reduction):
    """The loss, its input's gradient, or ``("error", message)``."""
    inputs, target, options = CASES[name]
    x = tensor(inputs, True)
    t = tensor(target, False)
    try:
        loss = loss_function(x, t, reduction=reduction, **options)
        loss.sum().backward()
    except (RuntimeError, ValueError) as exc:
        return "error", str(exc)
    return loss.detach().numpy(), x.grad.numpy()


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("name", list(CASES))
def test_losses_treat_nan_and_inf_as_pytorch_does(name, reduction):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed: no side-by-side check")

    def ours(values, requires_grad):
        dtype = "int64" if values.dtype.kind == "i" else "float64"
        return gd.tensor(values, dtype=dtype, requires_grad=requires_grad)

    def theirs(values, requires_grad):
        return torch.tensor(values, requires_grad=requires_grad)

    function = name.split(" ")[0]
    got = run(getattr(nn.functional, function), ours, name, reduction)
    want = run(getattr(torch.nn.functional, TORCH_NAME.get(function, function)), theirs, name, reduction)
    if isinstance(want[0], str):
        # PyTorch checks the range on the host; gpudl does not stop to look (no host sync inside a
        # step) but a NaN probability gives a NaN loss, never a finite one
        assert isinstance(got[0], str) or np.isnan(got[0]).any(), f"PyTorch refuses ({want[1]}); gpudl: {got[0]}"
        return
    assert not isinstance(got[0], str), f"gpudl raised {got[1]}"
    np.testing.assert_allclose(got[0], want[0], rtol=1e-12, atol=1e-15, equal_nan=True)
    rows = np.ones(len(SCORES), dtype=bool)
    if function in SHIFTED_SOFTMAX:
        # a known difference: gpudl's softmax shifts by the row max with an infinite max replaced by 0
        # (kernels/softmax_cross_entropy.cuh), so a row with a +inf logit has a NaN gradient at the +inf
        # and 0 elsewhere, where PyTorch's (inf - inf) is NaN across the row; the losses agree
        rows = ~np.isposinf(SCORES).any(axis=1)
        assert np.isnan(got[1][np.isposinf(SCORES)]).all() and np.isnan(want[1][~rows]).all()
    np.testing.assert_allclose(got[1][rows], want[1][rows], rtol=1e-12, atol=1e-15, equal_nan=True)


def test_a_nan_score_spoils_only_its_own_row_of_the_loss():
    x = gd.tensor(SCORES, dtype="float64", requires_grad=True)
    loss = nn.functional.cross_entropy(x, gd.tensor(TARGETS), reduction="none")
    values = loss.numpy()
    assert np.isnan(values[0]) and np.isfinite(values[3])
    loss.sum().backward()
    assert np.isnan(x.grad.numpy()[0]).all() and np.isfinite(x.grad.numpy()[3]).all()
