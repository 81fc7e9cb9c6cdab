"""Compare the double with the installed real CuPy: kernel type resolution and the manifest.

Run as ``python -m tests.cupy_double.drift_guard`` (``tests/test_cupy_double.py`` does, in a
fresh process, so the real CuPy never meets the installed double). Prints one JSON object:
``cases`` compared, the first ``differences`` (at most 20), whether ``manifest.json`` equals
a fresh :func:`make_manifest.build_manifest` and, where not, the first entries that differ.
"""
import itertools
import json

import numpy

import cupy
from cupy._core import _kernel as real_kernel

from tests.cupy_double import _kernels, make_manifest

_DTYPES = (None, "float16", "float32", "float64", "int32", "int64", "bool")
_OUT_DTYPES = ("float16", "float32", "float64", "int64")
_SPECS = (
    ("T x", "T y"), ("T x, T y", "T z"), ("T x, S y", "T z"), ("T x, float32 y", "T z"),
    ("raw T x, int64 n", "T y"), ("T x", "float64 y"), ("T x, T y", "S z, T w"),
    ("S x, T y", "T z"), ("T x, S y", "raw T z"), ("float64 x", "T y"), ("T x, T y, S z", "S w"),
    ("int32 x, T y", "T z"), ("_non_const T x", "T y"), ("T x, U y", "T z, U w"),
    ("float x", "double y"), ("T x, bool b", "T y"), ("raw T x, S t, A m", "T y, A z"),
)
_PARAM_TEXTS = ("T x", "raw T x", "_non_const S y", "float32 z", "int w", "uint64 s",
                "bool b", "float f", "raw int64 e", "T", "foo T x", "notatype x", "", " ",
                "T x,", "CIndexer _ind")


def _outcome(call):
    try:
        in_types, out_types, type_map = call()
    except Exception as exc:  # the exception is the outcome to compare
        return f"{type(exc).__name__}: {exc}"
    pairs = type_map if isinstance(type_map, tuple) else None
    text = f"<_TypeMap {pairs}>" if pairs is not None else str(type_map)
    return repr((in_types, out_types)) + text


def _param_outcome(module, text):
    try:
        return [(p.name, repr(p.dtype), p.ctype, p.raw, p.is_const)
                for p in module(text, True)]
    except Exception as exc:  # the exception is the outcome to compare
        return f"{type(exc).__name__}: {exc}"


def _spec_cases():
    from gpudl.backend.kernel_specs import KERNELS
    return _SPECS + tuple((k["in_params"], k["out_params"]) for k in KERNELS.values())


def _dtype_cases(n_in, n_out, limit=1500):
    """Input/output dtype tuples: all combinations, or a seeded sample of ``limit`` of them.
    Each comes as dtypes and as scalar types (ReductionKernel passes ``dtype.type``)."""
    ins = [tuple(None if d is None else numpy.dtype(d) for d in c)
           for c in itertools.product(_DTYPES, repeat=n_in)] if len(_DTYPES) ** n_in <= limit \
        else None
    outs = [()] + [tuple(numpy.dtype(d) for d in c)
                   for c in itertools.product(_OUT_DTYPES, repeat=n_out)]
    rng = numpy.random.default_rng(n_in * 100 + n_out)
    if ins is None or len(ins) * len(outs) > limit:
        pairs = []
        for _ in range(limit):
            in_dtypes = tuple(None if d is None else numpy.dtype(d)
                              for d in rng.choice(numpy.array(_DTYPES, dtype=object), n_in))
            pairs.append((in_dtypes, outs[rng.integers(len(outs))]))
    else:
        pairs = [(i, o) for i in ins for o in outs]
    for in_dtypes, out_dtypes in pairs:
        yield in_dtypes, out_dtypes
        yield (tuple(None if d is None else d.type for d in in_dtypes),
               tuple(d.type for d in out_dtypes))


def compare():
    """``(cases, differences)`` of ParameterInfo parsing and ``_decide_params_type``."""
    cases, differences = 0, []
    for text in _PARAM_TEXTS:
        cases += 1
        real = _param_outcome(real_kernel._get_param_info, text)
        mine = _param_outcome(_kernels.get_param_info, text)
        if real != mine:
            differences.append({"param": text, "cupy": str(real), "double": str(mine)})
    for in_text, out_text in _spec_cases():
        real_in = real_kernel._get_param_info(in_text, True)
        real_out = real_kernel._get_param_info(out_text, False)
        mine_in = _kernels.get_param_info(in_text, True)
        mine_out = _kernels.get_param_info(out_text, False)
        for ins, outs in _dtype_cases(len(real_in), len(real_out)):
            cases += 1
            real = _outcome(lambda: real_kernel._decide_params_type(real_in, real_out, ins, outs))
            mine = _outcome(lambda: _kernels.decide_params_type_core(mine_in, mine_out, ins, outs))
            if real != mine and len(differences) < 20:
                differences.append({"in": in_text, "out": out_text, "args": str((ins, outs)),
                                    "cupy": real, "double": mine})
    return cases, differences


def main():
    """Print the comparison as JSON."""
    cases, differences = compare()
    fresh = make_manifest.build_manifest()
    committed = json.loads(make_manifest.MANIFEST.read_text())
    print(json.dumps({"cupy_version": cupy.__version__, "manifest_version": committed["cupy_version"],
                      "cases": cases, "differences": differences,
                      "manifest_equal": make_manifest.render(fresh) == make_manifest.MANIFEST.read_text(),
                      "manifest_differences": make_manifest.differences(fresh, committed)}))


if __name__ == "__main__":
    main()
