"""The GPU path checked to the last launch, through the CuPy test double (tests/cupy_double).

- Every ``ElementwiseKernel``/``ReductionKernel`` launch that training the MLP, CNN, LSTM and GRU
  makes (dropout, every optimizer, activation and loss, float16/32/64, an activation on a strided
  view) is a signature listed in ``kernel_specs.SIGNATURES``, which the NVRTC check compiles; a
  launch that is not is named, as the ``Signature`` to add.
- Launch and sync budgets: a training step of each model makes no device-to-host synchronisation
  unless the loss is read, and no more device operations than its budget (README, "Checking on a
  GPU", compares them with PyTorch eager).

Runs only under the double (it records the launches); elsewhere it skips with the reason.
"""
import collections

import pytest

import gpudl as gd
from gpudl import models, nn, optim
from gpudl.backend.kernel_specs import KERNELS, SIGNATURES, Signature

try:
    from tests import cupy_double
    _DOUBLE = cupy_double.installed()
except ImportError:
    _DOUBLE = False

pytestmark = pytest.mark.skipif(
    not _DOUBLE, reason="needs the CuPy test double, which records launches (GPUDL_BACKEND=cupy "
                        "GPUDL_CUPY_DOUBLE=1 python -m pytest -p tests.cupy_double.pytest_plugin)")

F = nn.functional


# ------------------------------------------------------------------ listed signatures vs launches
def _params(spec):
    """``(name, raw)`` of each in and out parameter of a kernel spec."""
    words = [p.split() for p in f"{spec['in_params']}, {spec['out_params']}".split(",")]
    return [(w[-1], w[0] == "raw") for w in words]


def launch_of(spec, sig):
    """The launch the double records for kernel ``spec`` launched as ``sig`` (the configuration
    the NVRTC check compiles: tests/kernels/nvrtc_check.py)."""
    reduction = spec["kind"] == "reduction"
    params = _params(spec)
    n_in = len(spec["in_params"].split(","))
    contiguous = sig.contiguous or (True,) * len(sig.dtypes)
    raw_ndim = dict(sig.raw_ndim)
    args = []
    for k, ((name, raw), dtype, contig) in enumerate(zip(params, sig.dtypes, contiguous)):
        if isinstance(dtype, tuple):
            args.append(("scalar", dtype[1]))
            continue
        ndim = raw_ndim[name] if raw else sig.reduce_out_ndim if reduction and k >= n_in else sig.ndim
        args.append(("array", dtype, ndim, contig, sig.idx32))
    indexers = (sig.ndim, sig.reduce_out_ndim) if reduction else (sig.ndim,)
    return cupy_double.Launch(spec["name"], tuple(args), indexers, sig.idx32)


def signature_of(spec, launch):
    """The ``Signature`` to list for a recorded launch."""
    dtypes = tuple(("scalar", a[1]) if a[0] == "scalar" else a[1] for a in launch.args)
    contiguous = tuple(a[0] == "scalar" or a[3] for a in launch.args)
    raw_ndim = tuple((name, a[2]) for (name, raw), a in zip(_params(spec), launch.args)
                     if raw and a[0] == "array")
    return Signature(dtypes, ndim=launch.indexers[0], contiguous=() if all(contiguous) else contiguous,
                     idx32=launch.idx32, raw_ndim=raw_ndim,
                     reduce_out_ndim=launch.indexers[1] if len(launch.indexers) > 1 else 0)


def unlisted(launches, signatures):
    """One message per recorded launch that no signature of ``signatures`` produces."""
    by_cupy_name = {spec["name"]: key for key, spec in KERNELS.items()}
    problems = []
    for launch in sorted(set(launches), key=repr):
        key = by_cupy_name.get(launch.kernel)
        if key is None:
            problems.append(f"{launch.kernel}: launched but not a kernel of kernel_specs.KERNELS")
            continue
        spec = KERNELS[key]
        if launch not in {launch_of(spec, sig) for sig in signatures.get(key, ())}:
            problems.append(f"SIGNATURES[{key!r}] lacks {signature_of(spec, launch)} "
                            "(launched, so never NVRTC-compiled)")
    return problems


# ------------------------------------------------------------------ the training runs
ACTIVATIONS = (nn.ReLU, lambda: nn.LeakyReLU(0.1), nn.ELU, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.GELU,
               lambda: nn.GELU("tanh"), nn.SiLU)
FEATURES, CLASSES, BATCH = 5, 3, 4


class EveryActivation(nn.Sequential):
    """Linear layers with each activation between two of them, then dropout."""

    def __init__(self, width=6):
        layers = [nn.Linear(FEATURES, width)]
        for make in ACTIVATIONS:
            layers += [make(), nn.Linear(width, width)]
        super().__init__(*layers, nn.Dropout(0.2), nn.Linear(width, CLASSES))


class StridedActivation(nn.Module):
    """tanh of every other feature: the activation runs on a strided (non-contiguous) view."""

    def __init__(self, width=6):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(FEATURES, width), nn.Linear(width // 2, CLASSES)

    def forward(self, x):
        return self.fc2(F.tanh(self.fc1(x)[:, ::2]))


class GRUClassifier(nn.Module):
    """A GRU over the rows, its last hidden state to the class scores."""

    def __init__(self, hidden=5):
        super().__init__()
        self.gru, self.fc = nn.GRU(FEATURES, hidden, batch_first=True), nn.Linear(hidden, CLASSES)

    def forward(self, x):
        return self.fc(self.gru(x)[1][-1])


class MaskedEncoder(nn.Module):
    """An encoder layer over the rows with a float causal mask and a boolean padding mask (merged into
    one additive mask), then attention with a boolean mask alone: both mask kinds reach the kernel."""

    def __init__(self, width=4):
        super().__init__()
        self.proj, self.fc = nn.Linear(FEATURES, width), nn.Linear(width, CLASSES)
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(width, 2, 8, dropout=0.2, batch_first=True), 1)

    def forward(self, x):
        rows = x.shape[1]
        causal = gd.tensor([[0.0 if j <= i else float("-inf") for j in range(rows)] for i in range(rows)],
                           dtype=x.dtype)
        padding = gd.tensor([[False] * (rows - 1) + [k % 2 == 1] for k in range(x.shape[0])])
        h = self.encoder(self.proj(x), mask=causal, src_key_padding_mask=padding)
        keep = gd.tensor([[j <= i for j in range(rows)] for i in range(rows)])
        return self.fc(F.scaled_dot_product_attention(h, h, h, attn_mask=keep).mean(dim=1))


def _onehot(t, dtype):
    return gd.tensor([[float(c == k) for k in range(CLASSES)] for c in t], dtype=dtype)


LOSSES = {
    "cross_entropy": lambda out, t: F.cross_entropy(out, gd.tensor(t)),
    "softmax_cross_entropy": lambda out, t: F.softmax_cross_entropy(out, gd.tensor(t), label_smoothing=0.1),
    "nll_loss": lambda out, t: F.nll_loss(F.log_softmax(out, dim=1), gd.tensor(t)),
    "mse_loss": lambda out, t: F.mse_loss(out, _onehot(t, out.dtype)),
    "l1_loss": lambda out, t: F.l1_loss(out, _onehot(t, out.dtype)),
    "huber_loss": lambda out, t: F.huber_loss(out, _onehot(t, out.dtype)),
    "binary_cross_entropy": lambda out, t: F.binary_cross_entropy(F.sigmoid(out), _onehot(t, out.dtype)),
    "binary_cross_entropy_with_logits": lambda out, t: F.binary_cross_entropy_with_logits(out, _onehot(t, out.dtype)),
}
OPTIMIZERS = {
    "sgd": lambda p: optim.SGD(p, lr=0.05),
    "sgd_nesterov": lambda p: optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4),
    "adam": lambda p: optim.Adam(p, lr=1e-3),
    "adam_amsgrad": lambda p: optim.Adam(p, lr=1e-3, amsgrad=True),
    "adamw": lambda p: optim.AdamW(p, lr=1e-3),
    "adagrad": lambda p: optim.Adagrad(p, lr=1e-2),
    "rmsprop": lambda p: optim.RMSprop(p, lr=1e-3, momentum=0.9),
}
MODELS = {
    "mlp": lambda: models.MLP(FEATURES, (6, 6), CLASSES, dropout=0.3),
    "every_activation": EveryActivation,
    "strided_activation": StridedActivation,
    "cnn": lambda: models.CNN(1, (2, 3), 6, CLASSES, image_size=8, dropout=0.2),
    "lstm": lambda: models.LSTMClassifier(FEATURES, 5, num_layers=2, num_classes=CLASSES, dropout=0.2),
    "gru": GRUClassifier,
    "transformer": lambda: models.VisionTransformer(8, 4, 4, 1, 2, 8, CLASSES, dropout=0.2, pool="cls"),
    "masked_encoder": MaskedEncoder,
}
INPUT_SHAPES = {"cnn": (1, 8, 8), "lstm": (3, FEATURES), "gru": (3, FEATURES), "transformer": (1, 8, 8),
                "masked_encoder": (3, FEATURES)}  # per sample

# Each option at least once, not their product (model, loss, optimizer, dtype, batch size); batch
# size 1 as well, where dimension merging differs (gpudl bench starts at batch 1).
RUNS = [
    ("every_activation", "cross_entropy", "sgd_nesterov", "float32", BATCH),
    ("every_activation", "nll_loss", "adam_amsgrad", "float64", BATCH),
    ("every_activation", "mse_loss", "sgd", "float16", BATCH),
    ("mlp", "huber_loss", "adamw", "float32", BATCH),
    ("mlp", "cross_entropy", "sgd_nesterov", "float32", 1),
    ("strided_activation", "l1_loss", "adagrad", "float32", BATCH),
    ("strided_activation", "cross_entropy", "sgd", "float64", BATCH),
    ("cnn", "softmax_cross_entropy", "adam", "float32", BATCH),
    ("cnn", "cross_entropy", "rmsprop", "float64", BATCH),
    ("cnn", "cross_entropy", "sgd_nesterov", "float16", 1),
    ("lstm", "binary_cross_entropy_with_logits", "sgd_nesterov", "float32", BATCH),
    ("lstm", "cross_entropy", "adam", "float16", BATCH),
    ("lstm", "mse_loss", "adamw", "float64", 1),
    ("gru", "binary_cross_entropy", "rmsprop", "float64", BATCH),
    ("gru", "cross_entropy", "sgd", "float32", 1),
    ("transformer", "cross_entropy", "adamw", "float32", BATCH),
    ("transformer", "softmax_cross_entropy", "adam", "float16", 1),
    ("masked_encoder", "cross_entropy", "sgd", "float64", BATCH),
    ("masked_encoder", "mse_loss", "adam", "float16", BATCH),
]
TARGETS = [0, 2, 1, 2]


def _train(model_name, loss_name, optimizer_name, dtype, batch, steps=2):
    """A few training steps on the default device; returns the model's last loss tensor."""
    model = MODELS[model_name]().to(dtype=dtype)
    model.train()
    opt = OPTIMIZERS[optimizer_name](model.parameters())
    x = gd.randn(batch, *INPUT_SHAPES.get(model_name, (FEATURES,)), dtype=dtype)
    for _ in range(steps):
        loss = LOSSES[loss_name](model(x), TARGETS[:batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss


@pytest.fixture(scope="module")
def recorded():
    """``{run: Counter of Launch}`` of every training run, on the double's device."""
    gd.manual_seed(0)
    runs = {}
    state = cupy_double.counters()
    for run in RUNS:
        before = collections.Counter(state.kernels)
        loss = _train(*run)
        assert gd.backend.to_host(loss.data).dtype.name == run[3]
        runs["-".join(map(str, run))] = collections.Counter(state.kernels) - before
    return runs


def test_default_device_is_the_double():
    assert gd.default_device().kind == "cuda"


def test_every_training_launch_is_listed(recorded):
    problems = [f"{run}: {p}" for run, launches in recorded.items() for p in unlisted(launches, SIGNATURES)]
    assert not problems, "launches the NVRTC check never compiles:\n" + "\n".join(problems)


def test_runs_cover_every_option(recorded):
    """Each activation forward and backward, dropout, each fused optimizer and the recurrent
    cells ran in every dtype; an activation ran on a strided view."""
    names = {(launch.kernel, launch.args[0][1]) for launches in recorded.values() for launch in launches}
    for dtype in ("float16", "float32", "float64"):
        wanted = {"dropout", "lstm_cell_forward", "lstm_cell_backward", "masked_softmax_backward",
                  "layer_norm_forward", "layer_norm_backward"}
        wanted |= {f"{a}_{d}" for a in ("relu", "leaky_relu", "elu", "sigmoid", "tanh", "softplus", "gelu",
                                        "gelu_tanh", "silu") for d in ("forward", "backward")}
        for key in wanted:
            assert (KERNELS[key]["name"], dtype) in names, (key, dtype)
        # the attention forward's first argument is its mask: its scores (the last) carry the dtype
        assert (KERNELS["masked_softmax_forward"]["name"], dtype) in {
            (launch.kernel, launch.args[-1][1]) for launches in recorded.values() for launch in launches}
    masks = {d for kernel, d in names if kernel == KERNELS["masked_softmax_forward"]["name"]}
    assert {"bool", "float16", "float64"} <= masks, masks  # boolean and additive masks
    used = {launch.kernel for launches in recorded.values() for launch in launches}
    for key in ("sgd", "sgd_momentum", "adam", "adam_amsgrad", "gru_cell_forward", "gru_cell_backward",
                "softmax_cross_entropy_sum_exp", "softmax_cross_entropy_backward", "check_class_indices"):
        assert KERNELS[key]["name"] in used, key
    strided = [launch for launch in recorded[f"strided_activation-l1_loss-adagrad-float32-{BATCH}"]
               if launch.kernel == "gpudl_tanh_forward"]
    assert strided and not strided[0].args[0][3], strided  # the input view is not contiguous


def test_dropping_a_used_signature_names_the_launch(recorded):
    """Removing any listed signature a training step launches makes the check fail, naming it."""
    launches = {launch for run in recorded.values() for launch in run}
    by_cupy_name = {spec["name"]: key for key, spec in KERNELS.items()}
    dropped = 0
    for launch in launches:
        key = by_cupy_name[launch.kernel]
        spec = KERNELS[key]
        for sig in SIGNATURES[key]:
            if launch_of(spec, sig) == launch:
                reduced = {**SIGNATURES, key: [s for s in SIGNATURES[key] if s != sig]}
                assert unlisted([launch], reduced) == [
                    f"SIGNATURES[{key!r}] lacks {signature_of(spec, launch)} (launched, so never NVRTC-compiled)"]
                assert launch_of(spec, signature_of(spec, launch)) == launch
                dropped += 1
    assert dropped >= len(launches) > 40


def test_unknown_kernel_is_named():
    launch = cupy_double.Launch("gpudl_made_up", (("array", "float32", 1, True, True),), (1,), True)
    assert unlisted([launch], SIGNATURES) == ["gpudl_made_up: launched but not a kernel of kernel_specs.KERNELS"]


# ------------------------------------------------------------------ launch and sync budgets
# Device operations (kernel launches, memsets and copies; see tests/cupy_double/_counters.py) of
# one training step after a warm-up step: forward, cross-entropy, zero_grad, backward, SGD with
# momentum, float32, batch 4. README "Checking on a GPU" compares them with PyTorch eager.
BUDGET_MODELS = {
    "mlp": (lambda: models.MLP(FEATURES, (6, 6), CLASSES), (BATCH, FEATURES)),
    "cnn": (lambda: models.CNN(1, (2, 3), 6, CLASSES, image_size=8), (BATCH, 1, 8, 8)),
    "lstm": (lambda: models.LSTMClassifier(FEATURES, 5, num_classes=CLASSES), (BATCH, 3, FEATURES)),
    "gru": (GRUClassifier, (BATCH, 3, FEATURES)),
    "transformer": (lambda: models.VisionTransformer(8, 4, 4, 1, 2, 8, CLASSES), (BATCH, 1, 8, 8)),
}
# Measured (CuPy double, batch 4): mlp 38, cnn 58 (113 before max pooling and im2col/col2im ran as kernels),
# lstm 59, gru 55, transformer 101 (158 before layer norm ran as one kernel each way); the budgets
# leave about 5%.
LAUNCH_BUDGET = {"mlp": 40, "cnn": 61, "lstm": 62, "gru": 58, "transformer": 106}


def _step_counts(name, read_loss):
    make, shape = BUDGET_MODELS[name]
    model = make()
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, t = gd.randn(*shape), gd.tensor(TARGETS)
    state = cupy_double.counters()
    for _ in range(2):  # the second step is counted: buffers and optimizer state exist
        launches, syncs = state.launches, state.syncs
        loss = F.cross_entropy(model(x), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if read_loss:
            loss.item()
    return state.launches - launches, state.syncs - syncs, state.sync_sites[len(state.sync_sites) - (state.syncs - syncs):]


@pytest.mark.parametrize("name", BUDGET_MODELS)
def test_training_step_never_waits_for_the_device(name):
    launches, syncs, sites = _step_counts(name, read_loss=False)
    assert syncs == 0, f"{name}: a training step synchronised with the device:\n" + "\n".join(sites)
    assert launches <= LAUNCH_BUDGET[name], f"{name}: {launches} device operations, budget {LAUNCH_BUDGET[name]}"


@pytest.mark.parametrize("name", BUDGET_MODELS)
def test_reading_the_loss_is_the_only_sync(name):
    """``loss.item()`` reads the value, then this thread's device error flags (one small copy
    right after, with nothing new queued)."""
    _, syncs, sites = _step_counts(name, read_loss=True)
    assert syncs == 2, sites
    assert "cupy_backend.py" in sites[0] and "(item)" in sites[0], sites
    assert "fused_cupy.py" in sites[1] and "(raise_pending_device_errors)" in sites[1], sites


def test_profile_counts_launches_and_syncs_per_op():
    model = models.MLP(FEATURES, (6,), CLASSES)
    x, t = gd.randn(BATCH, FEATURES), gd.tensor(TARGETS)
    state = cupy_double.counters()
    with gd.profile(print_on_exit=False) as prof:
        launches = state.launches
        loss = F.cross_entropy(model(x), t)
        loss.backward()
        launches = state.launches - launches
    assert prof.counted
    assert {"Linear", "relu", "SoftmaxCrossEntropy"} <= set(prof.launches)
    assert prof.launches["relu"] == 2                      # forward and backward kernels
    assert sum(prof.syncs.values()) == 0                   # the profiler's own waits are not counted
    assert 0 < sum(prof.launches.values()) <= launches     # ops outside Functions are not attributed
    table = prof.table()
    assert "launches" in table.splitlines()[0] and "syncs" in table.splitlines()[0]


def test_bench_counts_launches_and_syncs_per_step():
    """What ``gpudl bench`` records per training step (``device_counts_per_step`` in its JSON)."""
    from gpudl import benchmark
    step = benchmark.make_step("mlp", 4)
    step()
    counts = benchmark.device_counts(step)
    assert counts["syncs"] == 0 and 0 < counts["launches"] <= LAUNCH_BUDGET["mlp"], counts
