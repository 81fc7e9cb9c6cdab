"""Training-step throughput per model and batch size: the measurement library behind ``gpudl bench``
and ``bench/bench_training.py``.

A *step* is one full training step, as a training loop runs it: forward, softmax cross-entropy,
``zero_grad``, backward and an SGD update with momentum 0.9, on random inputs of one batch size.
Timings cover the step and a device synchronisation (so GPU work queued by the step is counted);
warm-up steps run first, so kernel compilation and the first allocation of reusable buffers are
never timed. Peak memory is measured in a separate pass, because tracing allocations slows the
step down, and in a fresh process per batch size: on the CPU the peak of ``tracemalloc`` (NumPy
reports its array allocations to it) over building the model and its first two steps, i.e.
parameters, gradients, optimizer state, activations and scratch buffers; on the GPU the growth
of CuPy's memory pool over the same.

``gpudl bench`` runs every framework in a worker process of its own (``python -m
gpudl.benchmark CONFIG``): thread counts are set through the environment before NumPy's BLAS
(or PyTorch) starts, and passes of the two frameworks can be interleaved. The worker answers
commands on stdin with one JSON object per line on stdout (see :func:`serve`).
"""
import json
import os
import platform
import statistics
import sys
import time
import tracemalloc

from . import nn

MODELS = ("mlp", "cnn", "lstm", "transformer")
# per-sample input shape: 28x28 images, as rows of 28 features for the LSTM
INPUT_SHAPES = {"mlp": (1, 28, 28), "cnn": (1, 28, 28), "lstm": (28, 28), "transformer": (1, 28, 28)}
CLASSES = 10
LEARNING_RATE, MOMENTUM = 0.01, 0.9
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def functional_cnn_class(nn):
    """The class ``gpudl bench cnn`` times, built on ``nn`` (gpudl.nn, or torch.nn for its PyTorch twin: the
    same code in both frameworks): the CNN of gpudl.models written as PyTorch users write it, conv → ReLU →
    max-pool in ``forward`` through ``nn.functional`` (gpudl.models.CNN pools before the ReLU, which gives
    the same numbers on a quarter of the elements; the benchmark measures the common form)."""

    class FunctionalCNN(nn.Module):
        """Two conv → ReLU → max-pool blocks through ``nn.functional``, then fc 128 → ReLU → fc 10."""

        def __init__(self, channels=(32, 64), hidden_size=128):
            super().__init__()
            self.conv1 = nn.Conv2d(1, channels[0], 3, padding=1)
            self.conv2 = nn.Conv2d(channels[0], channels[1], 3, padding=1)
            self.fc1 = nn.Linear(channels[1] * 7 * 7, hidden_size)
            self.fc2 = nn.Linear(hidden_size, CLASSES)

        def forward(self, x):
            functional = nn.functional
            x = functional.max_pool2d(functional.relu(self.conv1(x)), 2)
            x = functional.max_pool2d(functional.relu(self.conv2(x)), 2)
            return self.fc2(functional.relu(self.fc1(x.flatten(1))))

    return FunctionalCNN


FunctionalCNN = functional_cnn_class(nn)


def build_model(model_name):
    """gpudl's model that ``gpudl bench model_name`` times: gpudl.models' one, the CNN in its functional form."""
    from . import models
    return FunctionalCNN() if model_name == "cnn" else models.build(model_name)


class TrainingStep:
    """One model, its optimizer and a batch of random data: ``run()`` performs a training step,
    ``synchronize()`` waits for the device."""

    def __init__(self, model, optimizer, inputs, targets, loss_fn, synchronize):
        self.model, self.optimizer = model, optimizer
        self.inputs, self.targets = inputs, targets
        self.loss_fn = loss_fn
        self.synchronize = synchronize

    def run(self):
        """Forward, loss, zero_grad, backward, optimizer update (no synchronisation)."""
        loss = self.loss_fn(self.model(self.inputs), self.targets)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()

    def __call__(self):
        """One step, then wait for the device: what a timed region covers."""
        self.run()
        self.synchronize()


def device_counts(step):
    """Kernel launches and device-to-host syncs of one training step (``step.run()``, without the
    timing's final wait), where a device counter is installed (``backend.set_device_counters``),
    else None."""
    from . import backend
    before = backend.device_counters()
    step.run()
    after = backend.device_counters()
    return None if before is None else {"launches": after[0] - before[0], "syncs": after[1] - before[1]}


def _synchronizer(device):
    from . import backend
    chosen = backend.backend_for(device)
    return lambda: chosen.synchronize(device)


def make_step(model_name, batch_size, model=None, optimizer=None, seed=0):
    """A :class:`TrainingStep` of gpudl's ``model_name`` (``mlp``, ``cnn``, ``lstm``, ``transformer``; see
    gpudl.models; the CNN as :class:`FunctionalCNN`) at ``batch_size`` on the default device. Pass ``model``
    and ``optimizer`` to reuse them (one model stepping through several batch sizes, as ``gpudl bench`` does)."""
    import gpudl
    from . import optim
    check_model(model_name)
    if model is None:
        gpudl.manual_seed(seed)
        model = build_model(model_name)
        optimizer = optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
    inputs = gpudl.randn(batch_size, *INPUT_SHAPES[model_name])
    targets = gpudl.randint(0, CLASSES, (batch_size,))
    return TrainingStep(model, optimizer, inputs, targets, nn.functional.softmax_cross_entropy,
                        _synchronizer(inputs.device))


def check_model(model_name):
    """Raise ValueError for a model name ``gpudl bench`` does not know."""
    if model_name not in MODELS:
        raise ValueError(f"unknown model {model_name!r}; choose one of {', '.join(MODELS)}")


# ------------------------------------------------------------------------------------------- timing
def time_step(step, steps, warmup):
    """Seconds of each of ``steps`` timed calls of ``step`` (which synchronises the device itself),
    after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return times


def summarize(times):
    """``{"median", "q1", "q3", "min", "max"}`` of a list of seconds (IQR: the middle half)."""
    ordered = sorted(times)
    if len(ordered) > 1:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        q1 = q3 = ordered[0]
    return {"median": statistics.median(ordered), "q1": q1, "q3": q3, "min": ordered[0], "max": ordered[-1]}


def knee(batch_sizes, samples_per_s, fraction=0.9):
    """The smallest batch size whose throughput reaches ``fraction`` of the best one."""
    best = max(samples_per_s)
    return next(b for b, rate in zip(batch_sizes, samples_per_s) if rate >= fraction * best)


def ratio_summary(numerators, denominators):
    """Per-pass ratios ``numerators[k] / denominators[k]`` with their median, min and max."""
    ratios = [a / b for a, b in zip(numerators, denominators)]
    return {"per_pass": ratios, "median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


# ------------------------------------------------------------------------------------------- machine limit
def linear_products(model, batch_size):
    """The matrix products of a training step of ``model``'s Linear layers at ``batch_size``, as
    ``(a, b)`` array pairs laid out as gpudl's Linear computes them: forward ``x @ W.T``, weight
    gradient ``g.T @ x`` and, for every layer but the first, input gradient ``g @ W``."""
    import gpudl
    from . import nn
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    products = []
    for k, layer in enumerate(layers):
        weight = layer.weight.data
        x = gpudl.randn(batch_size, layer.in_features, dtype=weight.dtype, device=layer.weight.device).data
        g = gpudl.randn(batch_size, layer.out_features, dtype=weight.dtype, device=layer.weight.device).data
        products += [(x, weight.T), (g.T, x)] + ([(g, weight)] if k else [])
    return products


def time_products(products, synchronize, repeats):
    """Seconds of each of ``repeats`` runs of the products back to back through ``gemm`` (on the CPU, the
    GEMM provider gpudl.backend.blas chose) and nothing else."""
    from . import backend
    from .ops.linear import gemm

    def run():
        for a, b in products:
            gemm(backend.backend_of(a).xp, a, b)
        synchronize()
    return time_step(run, repeats, warmup=1)


# ------------------------------------------------------------------------------------------- memory
def peak_memory(make, steps=2):
    """Peak bytes allocated while building a step with ``make()`` and running it ``steps`` times
    (CPU: tracemalloc; GPU: growth of CuPy's memory pool). Meant for a fresh process, so that
    buffers cached by earlier steps (workspaces, optimizer temporaries) are counted."""
    from . import backend, models, nn, optim  # noqa: F401  (imported now: module objects are not step memory)
    device = backend.default_device()
    backend.backend_for(device).fused  # noqa: B018  (imports the fused ops, also outside the measurement)
    if device.kind == "cpu":
        tracemalloc.start()
        try:
            step = make()
            for _ in range(steps):
                step()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    pool = backend.backend_for(device).xp.get_default_memory_pool()
    pool.free_all_blocks()
    before = pool.total_bytes()
    step = make()
    for _ in range(steps):
        step()
    return pool.total_bytes() - before  # freed blocks stay in the pool: its size is the high-water mark


# ------------------------------------------------------------------------------------------- environment
def environment():
    """What the numbers depend on: versions, device, BLAS and its thread pools, thread variables, load,
    which CPU kernels run the fused ops (compiled ``kernels/*.cuh`` or the NumPy twins) and which GEMM
    provider the NumPy backend chose (``gemm``: NumPy's BLAS or MKL)."""
    from . import __version__, backend
    device = backend.default_device()
    chosen = backend.backend_for(device)
    numpy_config = backend.NUMPY.xp.__config__.CONFIG
    from .backend import cpu_kernels
    status = cpu_kernels.status()  # builds the probe library now, before any timing
    kernels = {"path": status.path, "reason": status.reason, "openmp_threads": status.threads,
                   "GPUDL_CPU_KERNELS": os.environ.get("GPUDL_CPU_KERNELS")}
    from .backend import blas
    provider = blas.choice()  # measured (or read from its cache) now, before any timing
    gemm = {"provider": provider.name, "reason": provider.reason, "threads": provider.threads,
            "pool": provider.pool, "GPUDL_BLAS": os.environ.get("GPUDL_BLAS"),
            "GPUDL_BLAS_THREADS": os.environ.get("GPUDL_BLAS_THREADS")}
    return {
        "python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine(),
        "processor": _cpu_name(), "cpus": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "gpudl": __version__, "numpy": backend.NUMPY.version(), "cupy": backend.installed_cupy_version(),
        "backend": chosen.name, "device": str(device), "device_name": chosen.describe_device(device),
        "blas": numpy_config.get("Build Dependencies", {}).get("blas"),
        "gemm": gemm,
        "thread_pools": thread_pools(),
        "thread_variables": {name: os.environ.get(name) for name in THREAD_VARIABLES},
        "GPUDL_BACKEND": os.environ.get("GPUDL_BACKEND"),
        "cpu_kernels": kernels, "openmp_wait": {name: os.environ.get(name) for name in
                                                    ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")},
        "host_allocator": host_allocator(),
    }


def host_allocator():
    """What gpudl set in the host allocator (``host_memory``): policy, mallopt settings, why."""
    from .backend import host_memory
    return host_memory.configure()._asdict()


def thread_pools():
    """The native thread pools loaded in this process (threadpoolctl's view, when it is installed)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed: see thread_variables"
    return threadpool_info()


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


# ------------------------------------------------------------------------------------------- worker
def _framework(name):
    """The module with ``make_step`` and ``environment`` for ``name`` (PyTorch only when asked)."""
    if name == "torch":
        from . import benchmark_torch
        return benchmark_torch
    return sys.modules[__name__]


def serve(config, commands=sys.stdin, out=sys.stdout):
    """Worker loop: build one model for ``config["model"]`` in ``config["framework"]``, then answer
    each command line read from ``commands`` with JSON lines on ``out``:

    ``prepare``: one step per batch size (compiles kernels, faults in buffers), then one more
    counted by :func:`device_counts` (gpudl only) -> ``prepared`` with ``counts``;
    ``time``: per batch size ``warmup`` untimed then ``steps`` timed steps -> one ``timed`` line
    each (with ``floor``, the seconds of the step's bare matrix products, when ``config["floor"]``);
    ``memory``: peak memory per batch size (:func:`peak_memory`) -> one ``memory`` line each;
    ``quit``: stop. Every answer ends with a ``done`` line; a failure is one ``error`` line.
    """
    framework = _framework(config["framework"])
    model_name, batch_sizes = config["model"], config["batch_sizes"]

    def say(**message):
        out.write(json.dumps(message) + "\n")
        out.flush()

    steps = {}
    say(event="ready", environment=framework.environment())
    for line in commands:
        command = line.strip()
        if command == "quit":
            return
        for batch in batch_sizes:
            if command == "memory":
                say(event="memory", batch=batch,
                    bytes=framework.peak_memory(lambda: framework.make_step(model_name, batch)))
                continue
            if batch not in steps:  # one model and optimizer stepping through every batch size
                first = next(iter(steps.values()), None)
                steps[batch] = framework.make_step(model_name, batch, model=first and first.model,
                                                   optimizer=first and first.optimizer)
            step = steps[batch]
            if command == "prepare":
                step()
                counts = device_counts(step) if config["framework"] == "gpudl" else None
                step.synchronize()
                say(event="prepared", batch=batch, counts=counts)
            elif command == "time":
                times = time_step(step, config["steps"], config["warmup"])
                floor = None
                if config.get("floor"):
                    floor = time_products(linear_products(step.model, batch), step.synchronize, config["steps"])
                say(event="timed", batch=batch, times=times, floor=floor)
            else:
                raise ValueError(f"unknown worker command {command!r}")
        say(event="done")


def main(argv=None):
    """``python -m gpudl.benchmark CONFIG_JSON``: run :func:`serve` (errors become an ``error`` line)."""
    argv = sys.argv[1:] if argv is None else argv
    config = json.loads(argv[0])
    try:
        serve(config)
    except Exception as exc:  # the parent reports it as one line
        sys.stdout.write(json.dumps({"event": "error", "message": f"{type(exc).__name__}: {exc}"}) + "\n")
        sys.stdout.flush()
        return 1
    return 0


# ------------------------------------------------------------------------------------------- output
def plot(path, model_name, series, knee_batch=None):
    """Write samples/s against batch size (log x) to ``path``: ``series`` maps a framework name to
    ``(batch_sizes, samples_per_s, low, high)`` (low/high: the IQR of samples/s)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for name, (batch_sizes, rates, low, high) in series.items():
        axes.plot(batch_sizes, rates, marker="o", label=name)
        axes.fill_between(batch_sizes, low, high, alpha=0.2)
    if knee_batch is not None:
        axes.axvline(knee_batch, color="grey", linestyle="--", label=f"knee (gpudl): batch {knee_batch}")
    axes.set_xscale("log", base=2)
    ticks = sorted({b for batch_sizes, *_ in series.values() for b in batch_sizes})
    axes.set_xticks(ticks, [str(b) for b in ticks])
    axes.minorticks_off()
    axes.set_xlabel("batch size")
    axes.set_ylabel("samples / s")
    axes.set_title(f"{model_name}: training-step throughput")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


if __name__ == "__main__":
    sys.exit(main())
