"""gpudl end to end under the double: parity of training steps and planted GPU-path bugs.

Run as ``python -m tests.cupy_double.scenarios`` (``tests/test_cupy_double.py`` does): it installs
the double before gpudl imports CuPy, runs every scenario on ``cpu`` (NumPy backend) and ``cuda``
(CuPy backend on the double) and prints one JSON object: per scenario and device either the
result or the error (type and message).

Each planted bug is GPU-path code with one mistake a real GPU run would also reject (or, for the
raw index, silently read out of bounds); on the NumPy backend the same code runs fine.
"""
import importlib
import json
import sys
import traceback

from tests import cupy_double

cupy_double.install()

import numpy as np  # noqa: E402

import gpudl  # noqa: E402
from gpudl import nn, optim  # noqa: E402
from gpudl.autograd.function import Function  # noqa: E402


# ---------------------------------------------------------------- parity
def _mlp_step_sequence(device, dtype, steps=5):
    """Train a 2-layer MLP written with plain gpudl ops; return losses and final parameters."""
    rng = np.random.default_rng(0)
    x = gpudl.tensor(rng.standard_normal((16, 6)).astype(dtype), device=device)
    onehot = np.eye(3, dtype=dtype)[rng.integers(0, 3, 16)]
    target = gpudl.tensor(onehot, device=device)
    params = [gpudl.tensor(rng.standard_normal(shape).astype(dtype) * 0.5, device=device,
                           requires_grad=True) for shape in ((6, 8), (8,), (8, 3), (3,))]
    w1, b1, w2, b2 = params
    losses = []
    for _ in range(steps):
        hidden = gpudl.maximum(x @ w1 + b1, 0)
        logp = gpudl.log_softmax(hidden @ w2 + b2, dim=1)
        loss = -(logp * target).sum() / 16
        for p in params:
            p.grad = None
        loss.backward()
        with gpudl.no_grad():
            for p in params:
                p.sub_(p.grad * 0.1)
        losses.append(loss.item())
    return {"losses": losses, "params": [p.numpy().tolist() for p in params]}


def parity_mlp_float32(device):
    """MLP training steps in float32."""
    return _mlp_step_sequence(device, np.float32)


def parity_mlp_float64(device):
    """MLP training steps in float64."""
    return _mlp_step_sequence(device, np.float64)


def parity_cnn(device, steps=3):
    """Conv2d -> ReLU -> MaxPool2d -> Linear, fused cross-entropy, optim.SGD with momentum."""
    gpudl.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, device=device), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 3, device=device))
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    rng = np.random.default_rng(1)
    x = gpudl.tensor(rng.standard_normal((8, 1, 8, 8)).astype(np.float32), device=device)
    t = gpudl.tensor(rng.integers(0, 3, 8), device=device)
    losses = []
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(x), t)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return {"losses": losses, "params": [p.numpy().tolist() for p in model.parameters()]}


# ---------------------------------------------------------------- planted GPU-path bugs
def bug_host_gradient_into_kernel(device):
    """The gradient is copied to the host and handed to the fused SGD kernel."""
    w = gpudl.ones(4, device=device)
    grad = gpudl.full((4,), 0.5, device=device)
    w.backend.fused.sgd_update(w.data, grad.numpy(), None, lr=0.1)
    return w.numpy().tolist()


def bug_np_asarray_on_device_array(device):
    """Accuracy computed with ``np.asarray`` on the argmax array (no ``.get()``)."""
    logits = gpudl.tensor([[0.1, 2.0], [3.0, 0.5]], device=device)
    targets = np.array([1, 0])
    return float((np.asarray(logits.data.argmax(axis=1)) == targets).mean())


class _ExpNoOverflowWarning(Function):
    def forward(self, x):
        with self.xp.errstate(over="ignore"):  # cupy has no errstate
            return self.xp.exp(x)


def bug_function_cupy_lacks(device):
    """``xp.errstate`` inside a forward."""
    return _ExpNoOverflowWarning().apply(gpudl.ones(3, device=device)).numpy().tolist()


class _PositiveSum(Function):
    def forward(self, x):
        return self.xp.sum(x, axis=-1, where=x > 0)  # cupy.sum has no where=


def bug_keyword_cupy_lacks(device):
    """``xp.sum(..., where=)``."""
    return _PositiveSum().apply(gpudl.tensor([[1.0, -2.0, 3.0]], device=device)).numpy().tolist()


def bug_json_dump_of_0d_device_value(device):
    """A metric logged as ``x.data.mean()`` (a NumPy scalar on the CPU, a 0-d array on the GPU)."""
    x = gpudl.tensor([1.0, 2.0, 4.0], dtype=gpudl.float64, device=device)
    return json.dumps({"mean_activation": x.data.mean()})


def _cross_entropy_with(patched, device):
    fused_cupy = importlib.import_module("gpudl.backend.fused_cupy")
    name = patched.__name__.replace("_buggy", "")
    original = getattr(fused_cupy, name)
    setattr(fused_cupy, name, patched)
    try:
        rng = np.random.default_rng(0)
        logits = gpudl.tensor(rng.standard_normal((8, 4)).astype(np.float32), device=device,
                              requires_grad=True)
        targets = gpudl.tensor(rng.integers(0, 4, 8), device=device)
        loss = nn.functional.cross_entropy(logits, targets)
        loss.backward()
        return [loss.item(), logits.grad.numpy().tolist()]
    finally:
        setattr(fused_cupy, name, original)


def softmax_cross_entropy_backward_buggy(logits, log_sum_exp, targets, grad_loss, ignore_index=-100,
                                         label_smoothing=0.0):
    fused_cupy = importlib.import_module("gpudl.backend.fused_cupy")
    cupy = importlib.import_module("cupy")
    logits = cupy.ascontiguousarray(logits)
    lse = log_sum_exp.astype(np.float32, copy=False)
    gloss = grad_loss.astype(logits.dtype, copy=False)
    return fused_cupy.kernel("softmax_cross_entropy_backward")(
        logits, targets.astype(np.int64)[:, None], lse, gloss[:, None],  # lse: [N], not [N, 1]
        logits.shape[1], int(ignore_index), float(label_smoothing))


def bug_kernel_broadcasting(device):
    """The CuPy softmax-CE backward launches with ``lse`` of shape [N] instead of [N, 1]."""
    return _cross_entropy_with(softmax_cross_entropy_backward_buggy, device)


def softmax_cross_entropy_forward_buggy(logits, targets, ignore_index=-100, label_smoothing=0.0):
    fused_cupy = importlib.import_module("gpudl.backend.fused_cupy")
    cupy = importlib.import_module("cupy")
    logits = cupy.ascontiguousarray(logits)
    targets = targets.astype(np.int64)
    n, c = logits.shape
    row_max = logits.max(axis=1)
    sum_exp = cupy.empty(n, dtype=np.float32)
    fused_cupy.kernel("softmax_cross_entropy_sum_exp")(logits, row_max[:, None], axis=1,
                                                        out=sum_exp)
    loss = cupy.empty(n, dtype=logits.dtype)
    lse = cupy.empty(n, dtype=np.float32)
    fused_cupy.kernel("softmax_cross_entropy_loss")(logits, targets, row_max, sum_exp,
                                                    n, int(ignore_index),  # n_class given as N
                                                    float(label_smoothing), loss, lse)
    return loss, lse


def bug_raw_index_out_of_bounds(device):
    """The loss kernel gets the row count as ``n_class``: reads past the logits (silent on a GPU)."""
    return _cross_entropy_with(softmax_cross_entropy_forward_buggy, device)


SCENARIOS = {f.__name__: f for f in (
    parity_mlp_float32, parity_mlp_float64, parity_cnn, bug_host_gradient_into_kernel,
    bug_np_asarray_on_device_array, bug_function_cupy_lacks, bug_keyword_cupy_lacks,
    bug_json_dump_of_0d_device_value, bug_kernel_broadcasting, bug_raw_index_out_of_bounds)}


def run(names):
    """``{scenario: {device: {"ok": result} or {"error": [type, message]}}}``."""
    results = {}
    for name in names:
        results[name] = {}
        for device in ("cpu", "cuda"):
            try:
                results[name][device] = {"ok": SCENARIOS[name](device)}
            except Exception as exc:  # the error is the result
                results[name][device] = {"error": [type(exc).__name__, str(exc)],
                                         "where": traceback.format_exc(limit=-3)}
    return results


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1:] or list(SCENARIOS))))
