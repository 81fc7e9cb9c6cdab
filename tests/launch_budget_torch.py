"""PyTorch eager's op count for the training steps whose launch budgets tests/test_launches.py
states: the same models, sizes, loss and optimizer (cross-entropy, SGD momentum 0.9, float32,
batch 4), one step after a warm-up step, counted from PyTorch's op list (torch.profiler, CPU).

The count is a proxy for CUDA kernel launches: the innermost aten ops that compute something
(an op whose callees compute nothing counts once; one that calls computing ops counts as those).
View, allocation and metadata ops (``view``, ``t``, ``empty``, ``resolve_conj``, a no-op ``to``,
...) count nothing, as the CuPy double counts no views and no ``empty``. On CUDA, PyTorch runs LSTM/GRU as one
cuDNN call per layer, which this CPU count cannot show (it counts the CPU implementation's ops).

Run it with the PyTorch venv: ``.venv-torch/bin/python tests/launch_budget_torch.py``.
"""
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

FEATURES, CLASSES, BATCH = 5, 3, 4
NO_KERNEL = {"aten::view", "aten::reshape", "aten::t", "aten::transpose", "aten::expand", "aten::as_strided",
             "aten::empty", "aten::empty_strided", "aten::empty_like", "aten::detach", "aten::alias",
             "aten::unsqueeze", "aten::squeeze", "aten::slice", "aten::select", "aten::permute",
             "aten::_unsafe_view", "aten::resize_", "aten::lift_fresh", "aten::flatten", "aten::contiguous",
             "aten::numpy_T", "aten::_reshape_alias", "aten::split", "aten::unbind", "aten::narrow",
             "aten::chunk", "aten::unsafe_split", "aten::result_type", "aten::set_", "aten::resolve_conj",
             "aten::resolve_neg", "aten::to", "aten::cudnn_is_acceptable", "aten::as_strided_",
             "aten::_has_compatible_shallow_copy_type", "aten::is_same_size", "aten::size", "aten::stride",
             "aten::expand_as", "aten::view_as", "aten::mT", "aten::unsafe_chunk"}


class LSTMClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn, self.fc = nn.LSTM(FEATURES, 5, batch_first=True), nn.Linear(5, CLASSES)

    def forward(self, x):
        return self.fc(self.rnn(x)[1][0][-1])


class GRUClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn, self.fc = nn.GRU(FEATURES, 5, batch_first=True), nn.Linear(5, CLASSES)

    def forward(self, x):
        return self.fc(self.rnn(x)[1][-1])


MODELS = {
    "mlp": (lambda: nn.Sequential(nn.Flatten(), nn.Linear(FEATURES, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(),
                                  nn.Linear(6, CLASSES)), (BATCH, FEATURES)),
    "cnn": (lambda: nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(),
                                  nn.Conv2d(2, 3, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(),
                                  nn.Linear(3 * 2 * 2, 6), nn.ReLU(), nn.Linear(6, CLASSES)), (BATCH, 1, 8, 8)),
    "lstm": (LSTMClassifier, (BATCH, 3, FEATURES)),
    "gru": (GRUClassifier, (BATCH, 3, FEATURES)),
}


def compute_ops(event):
    """The innermost computing aten ops under ``event`` (itself, if none of its callees computes)."""
    inner = [op for child in event.cpu_children for op in compute_ops(child)]
    if inner or not event.name.startswith("aten::") or event.name in NO_KERNEL:
        return inner
    return [event.name]


def leaf_compute_ops(events):
    """:func:`compute_ops` of every outermost event."""
    return [op for event in events if event.cpu_parent is None for op in compute_ops(event)]


def count(name):
    """``(number of leaf compute ops, their names)`` of one training step of model ``name``."""
    make, shape = MODELS[name]
    torch.manual_seed(0)
    model = make()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, foreach=False)
    x, t = torch.randn(*shape), torch.tensor([0, 2, 1, 2])

    def step():
        loss = nn.functional.cross_entropy(model(x), t)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    ops = leaf_compute_ops(prof.events())
    return len(ops), ops


if __name__ == "__main__":
    for model_name in MODELS:
        n, names = count(model_name)
        print(f"{model_name}: {n} leaf compute aten ops per step")
