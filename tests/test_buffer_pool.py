"""The buffer pool (gpudl.backend.buffer_pool) and what backward frees: bounded in bytes, counted,
and after backward no Function holds an array or an edge."""
import io
import tracemalloc

import numpy as np
import pytest

import gpudl as gd
from gpudl import backend, nn, optim
from gpudl.backend.buffer_pool import POOL, BufferPool, default_limit
from gpudl.models import CNN

CPU = backend.CPU


def test_a_given_back_array_is_taken_again_and_counted():
    pool = BufferPool()
    a = pool.take(np, CPU, (4, 5), "float32")
    assert a.shape == (4, 5) and a.dtype == np.float32
    pool.give(CPU, a)
    assert pool.stats() == {"hits": 0, "misses": 1, "dropped": 0, "held_bytes": 80}
    assert pool.take(np, CPU, (4, 5), np.float32) is a  # dtype given either way
    assert pool.take(np, CPU, (4, 5), np.float32) is not a  # it is out: a fresh one
    assert pool.stats() == {"hits": 1, "misses": 2, "dropped": 0, "held_bytes": 0}


def test_the_pool_is_bounded_in_bytes_and_drops_the_least_recently_used():
    pool = BufferPool()
    pool.set_limit(1000)
    small = [pool.take(np, CPU, (100,), np.float32) for _ in range(2)]  # 400 bytes each
    other = pool.take(np, CPU, (50,), np.float64)
    huge = pool.take(np, CPU, (2000,), np.uint8)
    pool.give(CPU, *small)
    pool.give(CPU, other)  # 1200 bytes: the oldest float32 array goes
    pool.give(CPU, huge)   # larger than the limit: never kept
    assert pool.stats() == {"hits": 0, "misses": 4, "dropped": 2, "held_bytes": 800}
    assert pool.take(np, CPU, (50,), np.float64) is other
    assert pool.take(np, CPU, (100,), np.float32) is small[1]
    pool.set_limit(0)
    assert pool.stats()["held_bytes"] == 0


def test_limits_are_validated_and_the_default_suits_the_device(monkeypatch):
    with pytest.raises(ValueError, match=r"set_limit.*non-negative.*-1"):
        BufferPool().set_limit(-1)
    with pytest.raises(ValueError, match=r"set_limit.*'lots'"):
        BufferPool().set_limit("lots")
    monkeypatch.delenv("GPUDL_BUFFER_POOL_BYTES", raising=False)
    assert 64 << 20 <= default_limit(np, CPU) <= 1 << 30
    monkeypatch.setenv("GPUDL_BUFFER_POOL_BYTES", "12345")
    assert default_limit(np, CPU) == 12345
    pool = BufferPool()
    pool.take(np, CPU, (1,), np.float32)
    assert pool.limit(CPU) == 12345
    monkeypatch.setenv("GPUDL_BUFFER_POOL_BYTES", "much")
    with pytest.raises(ValueError, match="GPUDL_BUFFER_POOL_BYTES.*'much'"):
        default_limit(np, CPU)


def test_profile_shows_the_pools_counters(device):
    gd.manual_seed(0)
    model = nn.LSTM(3, 5).to(device)
    x = gd.randn(6, 4, 3, device=device)
    out = io.StringIO()
    model(x)[0].sum().backward()  # warm: the sequence buffers come back to the pool
    with gd.profile(file=out) as profile:
        model(x)[0].sum().backward()
    counts = profile.buffer_pool()
    assert counts["hits"] >= 2 and counts["held_bytes"] > 0
    assert f"buffer pool: {counts['hits']} hits, {counts['misses']} misses" in out.getvalue()


def graph_functions(root):
    """Every Function reachable from ``root``."""
    found, stack = [], [root.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or any(fn is f for f in found):
            continue
        found.append(fn)
        stack.extend(edge[0] for edge in fn.edges if edge is not None)
    return found


def arrays_held(fn):
    return [name for name, value in vars(fn).items()
            if backend.is_array(value) or (isinstance(value, (tuple, list)) and any(map(backend.is_array, value)))]


def test_after_backward_no_function_holds_arrays_or_edges(device):
    gd.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.MaxPool2d(2), nn.Flatten()).to(device)
    embedding = nn.Embedding(10, 12).to(device)
    lstm = nn.LSTM(12, 12).to(device)
    x = gd.randn(4, 1, 4, 4, device=device)
    tokens = gd.tensor([[1, 2, 3, 4], [5, 6, 7, 8]], device=device)
    features = conv(x) + lstm(embedding(tokens))[0].sum(axis=0)
    features = gd.where(features > 0, features, features * 0.1)
    loss = nn.functional.nll_loss(nn.functional.log_softmax(features, dim=1), gd.tensor([0, 1, 2, 3], device=device))
    functions = graph_functions(loss)
    kinds = {type(fn).__name__ for fn in functions}
    assert len(functions) > 10 and {"MaxPool2d", "Embedding", "Where"} <= kinds, kinds
    assert any(arrays_held(fn) for fn in functions)  # before backward they do
    loss.backward()
    for fn in functions:
        assert fn.edges is None and fn.inputs is None and fn.saved == (), type(fn).__name__
        assert arrays_held(fn) == [], (type(fn).__name__, arrays_held(fn))


def test_keeping_the_losses_of_past_steps_keeps_almost_no_memory():
    """Measured on the host, where tracemalloc sees every array."""
    gd.manual_seed(0)
    model = CNN(channels=(8, 16), hidden_size=32, image_size=16).to("cpu")
    x, t = gd.randn(64, 1, 16, 16, device="cpu"), gd.randint(0, 10, (64,), device="cpu")

    def step():
        loss = nn.functional.cross_entropy(model(x), t)
        model.zero_grad()
        loss.backward()
        return loss

    step()
    tracemalloc.start()
    try:
        kept = [step() for _ in range(10)]
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(kept) == 10
    # 0.09 MB measured (gradients, pooled buffers, the small Function objects); 0.61 MB when Functions
    # kept their pooling indices and edges after backward
    assert held < 0.2e6, f"{held / 1e6:.2f} MB held by 10 kept losses"


def test_the_shared_pool_is_what_the_ops_and_optimizers_use():
    gd.manual_seed(0)
    model = nn.LSTM(4, 8)
    opt = optim.Adam(model.parameters(), weight_decay=0.1)
    x = gd.randn(5, 3, 4)
    for _ in range(2):
        model(x)[0].sum().backward()
        opt.step()
    before = POOL.stats()
    model(x)[0].sum().backward()
    opt.step()
    after = POOL.stats()
    assert after["hits"] > before["hits"] and after["misses"] == before["misses"]
