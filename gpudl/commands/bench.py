"""``gpudl bench {mlp,cnn,lstm,transformer}``: training-step throughput per batch size, optionally beside PyTorch.

Each framework runs in a worker process of its own (``python -m gpudl.benchmark``) started with
``OMP_NUM_THREADS``/``OPENBLAS_NUM_THREADS``/``MKL_NUM_THREADS`` set to ``--threads``, so BLAS
reads the count before it starts its threads, and PyTorch gets the same count. Passes alternate
between the workers (gpudl, torch, then torch, gpudl, ...), so a change in the machine's load
affects both alike; the ratio is computed per pass and reported as its median and range.
"""
import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .. import backend as _backend
from .. import benchmark
from . import CommandError
from .train import _number, _positive_int, _write_json

DEFAULT_BATCH_SIZES = (1, 8, 32, 128, 512)


def _batch_sizes(text):
    """An argparse type: comma-separated positive ints, e.g. ``1,8,32``."""
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,8,32, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be positive integers, got {text!r}")
    return sorted(set(sizes))


def add_parser(commands):
    """Register the sub-command and its options."""
    parser = commands.add_parser(
        "bench", help="training-step throughput per batch size (optionally beside PyTorch)",
        description="Time full training steps (forward, loss, backward, SGD with momentum) of a model at each "
                    "batch size on random data and print median step time with its spread, samples/s, peak "
                    "memory and the knee: the smallest batch size reaching 90% of the best throughput.")
    parser.add_argument("model", choices=benchmark.MODELS)
    parser.add_argument("--batch-sizes", type=_batch_sizes, default=list(DEFAULT_BATCH_SIZES), metavar="B1,B2,...",
                        help=f"default {','.join(map(str, DEFAULT_BATCH_SIZES))}")
    parser.add_argument("--steps", type=_positive_int, default=20, help="timed steps per batch size and pass")
    parser.add_argument("--warmup", type=_number(int, 0), default=3,
                        help="untimed steps before each batch size's timed ones (besides one first step per "
                             "batch size that compiles kernels and allocates buffers)")
    parser.add_argument("--passes", type=_positive_int, default=3,
                        help="measurement passes over all batch sizes, interleaved between frameworks")
    parser.add_argument("--threads", type=_positive_int, default=None,
                        help="BLAS/OpenMP threads for gpudl and PyTorch alike (default: the usable CPUs)")
    parser.add_argument("--backend", choices=_backend.VALID_BACKENDS, default=None,
                        help="overrides GPUDL_BACKEND for this run")
    parser.add_argument("--json", nargs="?", const="", default=None, metavar="PATH",
                        help="write every timing and the environment as JSON (default path: bench_<model>.json)")
    parser.add_argument("--plot", nargs="?", const="", default=None, metavar="PATH",
                        help="write samples/s against batch size as a PNG (default path: bench_<model>.png; "
                             "needs matplotlib)")
    parser.add_argument("--compare", choices=("torch",), default=None,
                        help="run the same architecture in PyTorch beside gpudl")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def _usable_cpus():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Worker:
    """One framework's worker process, driven over its stdin/stdout (see gpudl.benchmark.serve)."""

    def __init__(self, framework, config, threads, backend):
        self.framework = framework
        env = dict(os.environ)
        env.update({name: str(threads) for name in benchmark.THREAD_VARIABLES})
        if backend is not None:
            env["GPUDL_BACKEND"] = backend
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        self.stderr = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a chatty worker cannot block
        self.process = subprocess.Popen([sys.executable, "-m", "gpudl.benchmark", json.dumps(config)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                                        text=True, env=env)
        self.environment = self._read()["environment"]

    def _read(self):
        line = self.process.stdout.readline()
        while line and not line.startswith("{"):  # something in the worker printed to stdout: not ours
            line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            self.stderr.seek(0)
            lines = [text for text in self.stderr.read().strip().splitlines() if text.strip()]
            reason = lines[-1] if lines else f"exit status {self.process.returncode}"
            raise CommandError(f"the {self.framework} worker stopped: {reason}")
        message = json.loads(line)
        if message["event"] == "error":
            raise CommandError(f"{self.framework}: {message['message']}")
        return message

    def command(self, name, on_message):
        """Send ``name`` and pass each answer to ``on_message`` until the worker is done."""
        self.process.stdin.write(name + "\n")
        self.process.stdin.flush()
        while True:
            message = self._read()
            if message["event"] == "done":
                return
            on_message(message)

    def close(self):
        """Ask the worker to quit (kill it if it does not)."""
        if self.process.poll() is None:
            try:
                self.process.stdin.write("quit\n")
                self.process.stdin.close()
                self.process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self.stderr.close()


class Progress:
    """A tqdm bar over the (framework, batch size) units of work, or nothing."""

    def __init__(self, enabled, total):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, unit="step set", leave=False, dynamic_ncols=True, file=sys.stderr)

    def advance(self, text):
        if self.bar is not None:
            self.bar.set_description(text, refresh=False)
            self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _check_requirements(args):
    if args.plot is not None and importlib.util.find_spec("matplotlib") is None:
        raise CommandError("--plot needs matplotlib: pip install 'gpudl[plot]' (or drop --plot)")
    if args.compare == "torch" and importlib.util.find_spec("torch") is None:
        raise CommandError("--compare torch needs PyTorch, which is not installed: pip install torch "
                           "(or drop --compare)")


def run(args) -> int:
    """Measure, print the table, and write the JSON and the plot if asked."""
    _check_requirements(args)
    threads = args.threads or _usable_cpus()
    frameworks = ("gpudl",) + (("torch",) if args.compare else ())
    started, load_before = time.time(), _load()
    measured = _measure(args, threads, frameworks)
    report = _report(args, threads, frameworks, measured, started, load_before)
    print(_table(report))
    if args.json is not None:
        path = Path(args.json or f"bench_{args.model}.json")
        _write_json(path, report)
        print(f"wrote {path}")
    if args.plot is not None:
        path = Path(args.plot or f"bench_{args.model}.png")
        series = {name: (args.batch_sizes, [r["samples_per_s"] for r in rows],
                         [r["samples_per_s_iqr"][0] for r in rows], [r["samples_per_s_iqr"][1] for r in rows])
                  for name, rows in report["results"].items()}
        benchmark.plot(path, args.model, series, report["knee"]["gpudl"])
        print(f"wrote {path}")
    return 0


def _measure(args, threads, frameworks):
    """Run the workers: memory (fresh processes), one warm-up step per batch size, then the timed
    passes, alternating the order of the frameworks. Returns what they reported."""
    sizes = args.batch_sizes
    measured = {"times": {name: {b: [] for b in sizes} for name in frameworks}, "floors": {b: [] for b in sizes},
                "memory": {name: {} for name in frameworks}, "counts": {name: {} for name in frameworks},
                "environment": {}, "pass_order": []}
    configs = {name: {"framework": name, "model": args.model, "batch_sizes": sizes, "steps": args.steps,
                      "warmup": args.warmup, "floor": name == "gpudl" and args.model == "mlp"}
               for name in frameworks}
    workers, progress = {}, None

    def record(name, phase):
        def on_message(message):
            batch = message["batch"]
            if message["event"] == "memory":
                measured["memory"][name][batch] = message["bytes"]
            elif message["event"] == "prepared":
                measured["counts"][name][batch] = message.get("counts")
            elif message["event"] == "timed":
                measured["times"][name][batch].append(message["times"])
                if message["floor"] is not None:
                    measured["floors"][batch].append(message["floor"])
            progress.advance(f"{phase} {name} batch {batch}")
        return on_message

    try:
        for name in frameworks:
            workers[name] = Worker(name, configs[name], threads, args.backend)
            measured["environment"][name] = workers[name].environment
        print(_header(args, threads, workers["gpudl"].environment), flush=True)
        # PyTorch's CPU allocations are invisible to tracemalloc: its memory is measured on the GPU only
        with_memory = [name for name in frameworks if name == "gpudl" or workers[name].environment["device"] != "cpu"]
        progress = Progress(not args.no_progress, len(sizes) * (len(with_memory) + len(frameworks) * (args.passes + 1)))
        for name, worker in workers.items():
            if name in with_memory:
                for batch in sizes:  # in a fresh process each: nothing allocated or cached by another size
                    _measure_memory(name, dict(configs[name], batch_sizes=[batch]), threads, args.backend,
                                    record(name, "memory"))
            worker.command("prepare", record(name, "warm-up"))
        for k in range(args.passes):
            order = list(frameworks) if k % 2 == 0 else list(frameworks)[::-1]
            measured["pass_order"].append(order)
            for name in order:
                workers[name].command("time", record(name, f"pass {k + 1}/{args.passes}"))
    finally:
        if progress is not None:
            progress.close()
        for worker in workers.values():
            worker.close()
    return measured


def _measure_memory(name, config, threads, backend, on_message):
    worker = Worker(name, config, threads, backend)
    try:
        worker.command("memory", on_message)
    finally:
        worker.close()


def _load():
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def _header(args, threads, environment):
    name = environment["processor"] if environment["device"] == "cpu" else environment["device_name"]
    device = f"{environment['backend']} backend on {environment['device']} ({name})"
    interleaved = " (passes interleaved with PyTorch)" if args.compare else ""
    return (f"gpudl bench {args.model}: {device}, {threads} thread{'s' * (threads != 1)}; SGD momentum "
            f"{benchmark.MOMENTUM}; {args.passes} pass{'es' * (args.passes != 1)} x {args.steps} timed steps per "
            f"batch size after {args.warmup} warm-up steps{interleaved}")


def _report(args, threads, frameworks, measured, started, load_before):
    """Everything measured, summarised per batch size, plus settings and environment (the JSON)."""
    results, knees = {}, {}
    floors = measured["floors"]
    for name in frameworks:
        rows = []
        for batch in args.batch_sizes:
            passes = measured["times"][name][batch]
            pooled = [t for one in passes for t in one]
            step = benchmark.summarize(pooled)
            row = {"batch_size": batch, "step_seconds": step,
                   "samples_per_s": batch / step["median"],
                   "samples_per_s_iqr": [batch / step["q3"], batch / step["q1"]],
                   "pass_median_seconds": [statistics.median(one) for one in passes],
                   "times_seconds": passes, "peak_memory_bytes": measured["memory"][name].get(batch),
                   # {"launches", "syncs"} of one step where a device counter is installed, else None
                   "device_counts_per_step": measured["counts"][name].get(batch)}
            if name == "gpudl" and floors[batch]:
                floor = benchmark.summarize([t for one in floors[batch] for t in one])
                row["gemm_floor_seconds"] = floor
                row["floor_over_step"] = benchmark.ratio_summary(
                    [statistics.median(one) for one in floors[batch]], row["pass_median_seconds"])
            rows.append(row)
        results[name] = rows
        knees[name] = benchmark.knee(args.batch_sizes, [r["samples_per_s"] for r in rows])
    report = {
        "model": args.model,
        "settings": {"batch_sizes": args.batch_sizes, "steps": args.steps, "warmup": args.warmup,
                     "passes": args.passes, "threads": threads, "backend": args.backend, "compare": args.compare,
                     "optimizer": f"SGD lr={benchmark.LEARNING_RATE} momentum={benchmark.MOMENTUM}",
                     "knee_fraction": 0.9},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "seconds": time.time() - started,
        "load_average": {"before": load_before, "after": _load()},
        "environment": measured["environment"], "pass_order": measured["pass_order"],
        "results": results, "knee": knees,
    }
    if "torch" in frameworks:
        report["speed_ratio"] = [  # gpudl samples/s over torch samples/s, per pass
            {"batch_size": g["batch_size"],
             **benchmark.ratio_summary(t["pass_median_seconds"], g["pass_median_seconds"])}
            for g, t in zip(results["gpudl"], results["torch"])]
    return report


def _ms(seconds):
    return f"{seconds * 1e3:.3g}"


def _table(report):
    """The report as a text table, then the knee and the load."""
    gpudl_rows = report["results"]["gpudl"]
    torch_rows = report["results"].get("torch")
    has_floor = "gemm_floor_seconds" in gpudl_rows[0]
    names = ["batch", "gpudl ms (IQR)", "samples/s", "peak MB"]
    if has_floor:
        names += ["GEMM floor ms", "floor/step"]
    if torch_rows:
        names += ["torch ms (IQR)", "torch samples/s", "gpudl/torch (min-max)"]
    lines = []
    for k, row in enumerate(gpudl_rows):
        step = row["step_seconds"]
        peak = row["peak_memory_bytes"]
        cells = [str(row["batch_size"]), f"{_ms(step['median'])} ({_ms(step['q1'])}-{_ms(step['q3'])})",
                 f"{row['samples_per_s']:,.0f}", "-" if peak is None else f"{peak / 2 ** 20:.1f}"]
        if has_floor:
            fraction = row["floor_over_step"]
            cells += [_ms(row["gemm_floor_seconds"]["median"]), f"{100 * fraction['median']:.0f}%"]
        if torch_rows:
            other, ratio = torch_rows[k]["step_seconds"], report["speed_ratio"][k]
            cells += [f"{_ms(other['median'])} ({_ms(other['q1'])}-{_ms(other['q3'])})",
                      f"{torch_rows[k]['samples_per_s']:,.0f}",
                      f"{ratio['median']:.2f}x ({ratio['min']:.2f}-{ratio['max']:.2f})"]
        lines.append(cells)
    widths = [max(len(names[c]), *(len(cells[c]) for cells in lines)) for c in range(len(names))]
    text = ["  ".join(name.rjust(w) for name, w in zip(names, widths))]
    text += ["  ".join(cell.rjust(w) for cell, w in zip(cells, widths)) for cells in lines]
    for name, rows in report["results"].items():
        best = max(rows, key=lambda r: r["samples_per_s"])
        text.append(f"knee ({name}): batch {report['knee'][name]}, the smallest batch size reaching 90% of the best "
                    f"throughput ({best['samples_per_s']:,.0f} samples/s at batch {best['batch_size']})")
    load = report["load_average"]
    if load["before"] is not None:
        busy = load["before"][0] >= 0.5 * _usable_cpus()
        text.append(f"load average (1 min): {load['before'][0]:.2f} before, {load['after'][0]:.2f} after, on "
                    f"{_usable_cpus()} CPUs" + (" - the machine was busy: timings are slower and noisier than on "
                                                "an idle one" if busy else ""))
    return "\n".join(text)
