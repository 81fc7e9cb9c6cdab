"""The CuPy double's counters (tests/cupy_double/_counters.py): device operations, device-to-host
syncs with their call sites, and custom-kernel launches recorded as CuPy's compile configuration."""
import threading

import numpy as np

from tests import cupy_double

cp = cupy_double.build()


def _delta(run):
    """``(device operations, syncs, new sync sites, new kernel launches)`` made by ``run()``."""
    state = cupy_double.counters()
    launches, syncs, kernels = state.launches, state.syncs, dict(state.kernels)
    run()
    new_kernels = {k: n - kernels.get(k, 0) for k, n in state.kernels.items() if n != kernels.get(k, 0)}
    new_syncs = state.syncs - syncs  # the latest sites are kept (at most 100)
    return state.launches - launches, new_syncs, state.sync_sites[len(state.sync_sites) - new_syncs:], new_kernels


def test_views_and_allocations_launch_nothing():
    x = cp.zeros((4, 6), dtype=np.float32)
    for run in (lambda: x.T, lambda: x[1:, ::2], lambda: x.reshape(6, 4), lambda: cp.empty(5),
                lambda: x.astype(np.float32, copy=False), lambda: cp.ascontiguousarray(x)):
        assert _delta(run)[:2] == (0, 0)


def test_each_computing_op_is_one_launch():
    x, y = cp.ones((4, 6), dtype=np.float32), cp.ones((4, 6), dtype=np.float32)
    for run in (lambda: x + y, lambda: cp.exp(x), lambda: x.sum(axis=1), lambda: x @ y.T, lambda: cp.zeros(3),
                lambda: x.astype(np.float64), lambda: x.T.copy(), lambda: x.fill(2), lambda: x.__setitem__(0, 1),
                lambda: cp.add.at(x, cp.asarray([0, 0]), 1), lambda: x[cp.asarray([1, 2])],
                lambda: cp.multiply(x, 2, out=y)):
        assert _delta(run)[:2] == (1, 0)


def test_host_reads_are_syncs_with_their_call_site():
    x = cp.arange(3, dtype=np.float32)
    for run in (x.get, lambda: x.sum().item(), lambda: float(x[0]), lambda: bool(x[1]), x.tolist,
                lambda: cp.asnumpy(x), lambda: repr(x), lambda: cp.cuda.Device().synchronize(),
                lambda: cp.cuda.Stream.null.synchronize()):
        launches, syncs, sites, _ = _delta(run)
        assert syncs == 1 and len(sites) == 1 and "test_cupy_double_counters.py" in sites[0], sites


def test_data_dependent_sizes_sync():
    x = cp.arange(6)
    assert _delta(lambda: x[x > 2])[1] == 1
    assert _delta(lambda: cp.nonzero(x))[1] == 1
    assert _delta(lambda: cp.where(x > 2, x, 0))[1] == 0  # three arguments: no size to read


def test_kernel_launch_recorded_as_cupy_compiles_it():
    kernel = cp.ElementwiseKernel("T x, float64 a", "T y", "y = x * a", "scaled")
    contiguous = cp.ones((4, 6), dtype=np.float32)
    _, _, _, kernels = _delta(lambda: kernel(contiguous, 2.0))
    (launch, count), = kernels.items()
    assert count == 1 and launch == cupy_double.Launch(
        "scaled", (("array", "float32", 1, True, True), ("scalar", "float64"), ("array", "float32", 1, True, True)),
        (1,), True)  # a contiguous 2-D launch merges to 1-D
    strided = cp.ones((2, 6, 4), dtype=np.float64)[:, ::2]
    (launch, _), = _delta(lambda: kernel(strided, 2.0))[3].items()
    assert launch.args[0] == ("array", "float64", 2, False, True)  # [2, 3] merge, the rows stay apart
    assert launch.indexers == (2,)


def test_reduction_launch_records_both_indexers():
    kernel = cp.ReductionKernel("T x", "T y", "x", "a + b", "y = a", "0", "total")
    (launch, _), = _delta(lambda: kernel(cp.ones((5, 7), dtype=np.float32), axis=1))[3].items()
    assert launch.kernel == "total" and launch.indexers == (2, 1)
    assert launch.args[0][:3] == ("array", "float32", 2) and launch.args[0][3] is False  # transposed view


def test_counters_are_per_thread():
    x = cp.ones(3)
    before = cupy_double.counters().launches
    seen = []

    def other():
        state = cupy_double.counters()
        start = state.launches
        x + x
        seen.append(state.launches - start)

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert seen == [1] and cupy_double.counters().launches == before
