"""One-screen summary of a ``scripts/gpu_check.sh`` output folder; exit 0 when everything passed.

Reads ``gpu.txt`` (the device), ``status.txt`` (exit status per phase), ``pytest.xml`` (JUnit
counts and failed tests) and ``bench_<model>.json`` (``gpudl bench`` reports).

Usage: python scripts/gpu_check_summary.py OUTDIR
"""
import json
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

MODELS = ("mlp", "cnn", "lstm")
MAX_FAILED_LISTED = 8


def read_status(folder):
    """``{phase: exit status}`` (and ``seconds``) from ``status.txt``."""
    path = Path(folder) / "status.txt"
    if not path.exists():
        return {}
    pairs = (line.split() for line in path.read_text().splitlines() if line.strip())
    return {key: int(value) for key, value in pairs}


def read_tests(folder):
    """Counts and failed test ids from ``pytest.xml``, or None when pytest wrote none."""
    path = Path(folder) / "pytest.xml"
    if not path.exists():
        return None
    root = ElementTree.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {key: sum(int(s.get(key, 0)) for s in suites)
              for key in ("tests", "failures", "errors", "skipped")}
    counts["seconds"] = sum(float(s.get("time", 0)) for s in suites)
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    counts["failed"] = [f"{case.get('classname')}::{case.get('name')}" for case in root.iter("testcase")
                        if case.find("failure") is not None or case.find("error") is not None]
    return counts


def read_bench(folder, model):
    """Per batch size ``(batch, gpudl samples/s, torch samples/s or None, ratio or None,
    device counts or None)`` from ``bench_<model>.json``, or None."""
    path = Path(folder) / f"bench_{model}.json"
    if not path.exists():
        return None
    report = json.loads(path.read_text())
    torch_rows = report["results"].get("torch") or [None] * len(report["results"]["gpudl"])
    ratios = report.get("speed_ratio") or [None] * len(torch_rows)
    return [(row["batch_size"], row["samples_per_s"], other and other["samples_per_s"],
             ratio and ratio["median"], row.get("device_counts_per_step"))
            for row, other, ratio in zip(report["results"]["gpudl"], torch_rows, ratios)]


def summary(folder):
    """``(text, ok)`` for an output folder."""
    folder = Path(folder)
    status = read_status(folder)
    device = (folder / "gpu.txt").read_text().strip() if (folder / "gpu.txt").exists() else "unknown device"
    lines = [f"gpudl GPU check on {device}"]
    ok = True
    tests = read_tests(folder)
    if tests is None:
        ok = False
        lines.append(f"tests: no pytest.xml (exit status {status.get('tests', '?')}; see pytest.log)")
    else:
        timed_out = status.get("tests") == 124
        ok &= status.get("tests") == 0 and not tests["failed"]
        lines.append(f"tests (GPUDL_BACKEND=cupy): {tests['passed']} passed, {tests['failures']} failed, "
                     f"{tests['errors']} errors, {tests['skipped']} skipped in {tests['seconds']:.0f} s"
                     + (" -- TIMED OUT" if timed_out else ""))
        for name in tests["failed"][:MAX_FAILED_LISTED]:
            lines.append(f"  FAILED {name}")
        if len(tests["failed"]) > MAX_FAILED_LISTED:
            lines.append(f"  ... and {len(tests['failed']) - MAX_FAILED_LISTED} more (pytest.log)")
    lines.append("bench (samples/s; gpudl/torch > 1: gpudl faster):")
    for model in MODELS:
        rows = read_bench(folder, model)
        code = status.get(f"bench_{model}")
        if rows is None:
            ok = False
            lines.append(f"  {model:<5} no result (exit status {code if code is not None else '?'}; "
                         f"see bench_{model}.log)")
            continue
        ok &= code in (0, None)
        cells = []
        for batch, ours, theirs, ratio, counts in rows:
            cell = f"batch {batch}: {ours:,.0f}"
            if theirs is not None:
                cell += f" vs torch {theirs:,.0f} ({ratio:.2f}x)"
            if counts:
                cell += f", {counts['launches']} launches {counts['syncs']} syncs/step"
            cells.append(cell)
        lines.append(f"  {model:<5} " + "; ".join(cells))
    took = f"total {status['seconds'] // 60}m{status['seconds'] % 60:02d}s; " if "seconds" in status else ""
    lines.append(f"{took}{'ALL PASSED' if ok else 'FAILURES'} (logs and JSON in {folder})")
    return "\n".join(lines), ok


def main(argv=None):
    """Print the summary of ``argv[0]``; exit status 0 when everything passed, else 1."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python scripts/gpu_check_summary.py OUTDIR", file=sys.stderr)
        return 2
    text, ok = summary(argv[0])
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
