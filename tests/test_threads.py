"""Threads: grad mode and the dropout key stream are per thread, scratch buffers are never shared.

Training and evaluating in two threads at once must give exactly what running the two one after
the other gives. The interpreter's switch interval is made tiny so that the threads interleave
between almost every op.
"""
import sys
import threading

import numpy as np
import pytest

import gpudl as gd
from gpudl import backend, nn, optim
from gpudl.backend.buffer_pool import POOL
from gpudl.models import CNN, MLP


@pytest.fixture(autouse=True)
def _fast_switching():
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(previous)


def run_in_threads(*jobs, together=True):
    """Run each job in a thread of its own, all at once or one after the other; their results."""
    results, errors = [None] * len(jobs), []

    def runner(k, job):
        try:
            results[k] = job()
        except BaseException as exc:  # re-raised in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=runner, args=(k, job)) for k, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
        if not together:
            thread.join()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def batches(seed, count, shape, classes=10):
    rng = np.random.default_rng(seed)
    return [(gd.tensor(rng.standard_normal(shape).astype(np.float32)), gd.tensor(rng.integers(0, classes, shape[0])))
            for _ in range(count)]


def training_job(model, optimizer, data, dropout_seed):
    """Train ``model`` on ``data`` (dropout keyed from ``dropout_seed`` in the job's own thread): its
    losses and final parameters. Models are built before the threads start: the host generator that
    initialises them is process-wide, as PyTorch's default generator."""
    def job():
        backend.seed_dropout(dropout_seed)
        losses = []
        for x, t in data:
            loss = nn.functional.cross_entropy(model(x), t)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return losses, [p.numpy() for p in model.parameters()]
    return job


def evaluation_job(model, data):
    """Evaluate ``model`` under no_grad on ``data``: its logits, and whether any op recorded a graph."""
    def job():
        model.eval()
        outputs, recorded = [], False
        with gd.no_grad():
            for x, _ in data:
                out = model(x)
                recorded = recorded or out.requires_grad
                outputs.append(out.numpy())
        return outputs, recorded
    return job


def assert_same_results(together, apart):
    for a, b in zip(together, apart):
        for x, y in zip(a[0], b[0]):
            np.testing.assert_array_equal(x, y)
        if isinstance(a[1], list):
            for x, y in zip(a[1], b[1]):
                np.testing.assert_array_equal(x, y)
        else:
            assert a[1] == b[1]


def test_training_beside_a_no_grad_evaluation_gives_the_sequential_results():
    train_data = batches(0, 30, (16, 1, 12, 12))
    eval_data = batches(1, 30, (16, 1, 12, 12))

    def jobs():
        gd.manual_seed(3)
        trained = MLP(in_features=144, hidden_sizes=(32,), dropout=0.3)
        evaluated = CNN(channels=(4, 8), hidden_size=16, image_size=12)
        adam = optim.Adam(trained.parameters(), lr=1e-2, weight_decay=1e-3)
        return training_job(trained, adam, train_data, dropout_seed=3), evaluation_job(evaluated, eval_data)

    together = run_in_threads(*jobs(), together=True)
    apart = run_in_threads(*jobs(), together=False)
    assert_same_results(together, apart)
    assert together[1][1] is False  # the evaluation recorded nothing ...
    assert len(set(together[0][0])) > 1  # ... while the training thread built graphs and learned


def test_two_training_threads_with_the_same_shapes_give_the_sequential_results():
    data = [batches(seed, 20, (8, 1, 12, 12)) for seed in (10, 11)]

    def jobs():
        gd.manual_seed(1)
        models = [CNN(channels=(4, 8), hidden_size=16, image_size=12, dropout=0.2) for _ in range(2)]
        return [training_job(model, optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3,
                                              nesterov=True), data[k], dropout_seed=k)
                for k, model in enumerate(models)]

    together = run_in_threads(*jobs(), together=True)
    apart = run_in_threads(*jobs(), together=False)
    assert_same_results(together, apart)
    assert together[0][0] != together[1][0]


def test_no_grad_in_another_thread_leaves_this_threads_graphs_alone():
    entered, release = threading.Event(), threading.Event()

    def hold_no_grad():
        with gd.no_grad():
            entered.set()
            release.wait(10)

    holder = threading.Thread(target=hold_no_grad)
    holder.start()
    try:
        assert entered.wait(10)
        x = gd.ones(3, requires_grad=True)
        assert all((x * 2).requires_grad for _ in range(200))
        assert gd.is_grad_enabled()
    finally:
        release.set()
        holder.join()


def test_a_new_thread_starts_with_grad_enabled_whatever_this_thread_does():
    with gd.no_grad():
        seen = run_in_threads(gd.is_grad_enabled)
        assert not gd.is_grad_enabled()
    assert seen == [True]


def test_each_thread_draws_its_own_dropout_key_stream():
    def keys():
        backend.seed_dropout(7)
        return [backend.next_dropout_key() for _ in range(2000)]

    expected = [(7, step) for step in range(2000)]
    assert run_in_threads(keys, keys, keys) == [expected] * 3  # no step skipped or drawn twice
    gd.manual_seed(3)
    assert run_in_threads(backend.next_dropout_key) == [(3, 0)]  # a new thread starts at (seed, 0)


def test_the_buffer_pool_never_hands_one_array_to_two_threads_at_once():
    def job():
        seen = []
        for _ in range(300):
            array = POOL.take(np, backend.CPU, (64,), np.float32)
            seen.append(id(array))
            array.fill(threading.get_ident() % 1000)
            ok = bool((array == threading.get_ident() % 1000).all())  # nobody else wrote into it meanwhile
            POOL.give(backend.CPU, array)
            if not ok:
                return False
        return True

    assert run_in_threads(job, job, job, job) == [True] * 4
