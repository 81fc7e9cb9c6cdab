"""LR schedules: rate sequences against closed forms and the values in PyTorch's docs, chaining,
state dicts and errors. Schedules touch only Python numbers, so these tests need no device."""
import math

import pytest

import gpudl
from gpudl import optim
from gpudl.optim import lr_scheduler as sched

EPOCHS = 40


def make_optimizer(lrs=(0.05,)):
    return optim.SGD([{"params": [gpudl.zeros(2, requires_grad=True)], "lr": lr} for lr in lrs], lr=lrs[0])


def rates(scheduler, epochs=EPOCHS):
    """The rates in use at epochs 0 .. epochs-1 (one optimizer.step() and scheduler.step() per epoch)."""
    seen = []
    for _ in range(epochs):
        seen.append(scheduler.get_last_lr())
        assert seen[-1] == [group["lr"] for group in scheduler.optimizer.param_groups]
        scheduler.optimizer.step()
        scheduler.step()
    return seen


def assert_rates(got, expected):
    assert len(got) == len(expected)
    for epoch, (a, b) in enumerate(zip(got, expected)):
        assert a == pytest.approx(b, rel=1e-12, abs=1e-15), f"epoch {epoch}"


def closed_form(fn, base_lrs=(0.05,), epochs=EPOCHS):
    return [[fn(base, epoch) for base in base_lrs] for epoch in range(epochs)]


def test_step_lr_matches_pytorch_docs():
    # PyTorch's docs: lr = 0.05 if epoch < 30, 0.005 if 30 <= epoch < 60, 0.0005 if 60 <= epoch < 90
    got = rates(sched.StepLR(make_optimizer(), step_size=30, gamma=0.1), 90)
    assert_rates(got, [[0.05]] * 30 + [[0.005]] * 30 + [[0.0005]] * 30)


def test_multistep_lr_matches_pytorch_docs():
    # PyTorch's docs: milestones=[30, 80]: 0.05 if epoch < 30, 0.005 if 30 <= epoch < 80, 0.0005 after
    got = rates(sched.MultiStepLR(make_optimizer(), milestones=[80, 30], gamma=0.1), 90)
    assert_rates(got, [[0.05]] * 30 + [[0.005]] * 50 + [[0.0005]] * 10)
    repeated = rates(sched.MultiStepLR(make_optimizer(), milestones=[3, 3], gamma=0.5), 5)
    assert_rates(repeated, [[0.05]] * 3 + [[0.0125]] * 2)


def test_exponential_lr_with_two_groups():
    got = rates(sched.ExponentialLR(make_optimizer((0.05, 0.2)), gamma=0.9))
    assert_rates(got, closed_form(lambda base, e: base * 0.9 ** e, (0.05, 0.2)))


def test_linear_lr_matches_pytorch_docs():
    # PyTorch's docs: start_factor=0.5, total_iters=4: 0.025, 0.03125, 0.0375, 0.04375, then 0.05
    got = rates(sched.LinearLR(make_optimizer(), start_factor=0.5, total_iters=4), 8)
    assert_rates(got, [[0.025], [0.03125], [0.0375], [0.04375]] + [[0.05]] * 4)


def test_linear_lr_defaults_warm_up_from_a_third_over_five_epochs():
    got = rates(sched.LinearLR(make_optimizer((0.3, 0.03))), 8)
    assert_rates(got, closed_form(lambda base, e: base * (1 / 3 + 2 / 3 * min(e, 5) / 5), (0.3, 0.03), 8))


def test_cosine_annealing_follows_the_closed_form_across_periods():
    eta_min, period = 0.001, 10
    got = rates(sched.CosineAnnealingLR(make_optimizer((0.05, 0.1)), T_max=period, eta_min=eta_min))
    expected = closed_form(lambda base, e: eta_min + (base - eta_min) * (1 + math.cos(math.pi * e / period)) / 2,
                           (0.05, 0.1))
    assert_rates(got, expected)
    assert got[period][0] == pytest.approx(eta_min) and got[2 * period][0] == pytest.approx(0.05)


def test_sequential_lr_warm_up_then_cosine():
    opt = make_optimizer((0.1,))
    warmup = sched.LinearLR(opt, start_factor=0.25, total_iters=4)
    cosine = sched.CosineAnnealingLR(opt, T_max=12)
    got = rates(sched.SequentialLR(opt, [warmup, cosine], milestones=[4]), 20)
    expected = [[0.1 * (0.25 + 0.75 * e / 4)] for e in range(4)]
    expected += [[0.05 * (1 + math.cos(math.pi * (e - 4) / 12))] for e in range(4, 20)]
    assert_rates(got, expected)


def test_sequential_lr_of_three_restarts_each_at_its_epoch_zero():
    opt = make_optimizer()
    schedules = [sched.ExponentialLR(opt, gamma=0.5), sched.StepLR(opt, step_size=2, gamma=0.1),
                 sched.MultiStepLR(opt, milestones=[1], gamma=0.2)]
    got = rates(sched.SequentialLR(opt, schedules, milestones=[3, 7]), 10)
    expected = [0.05, 0.025, 0.0125, 0.05, 0.05, 0.005, 0.005, 0.05, 0.01, 0.01]
    assert_rates(got, [[lr] for lr in expected])


def test_chained_scheduler_multiplies_the_factors():
    opt = make_optimizer((0.05, 0.5))
    chained = sched.ChainedScheduler([sched.LinearLR(opt, start_factor=0.2, total_iters=4),
                                      sched.ExponentialLR(opt, gamma=0.9)])
    got = rates(chained, 12)
    assert_rates(got, closed_form(lambda base, e: base * (0.2 + 0.8 * min(e, 4) / 4) * 0.9 ** e, (0.05, 0.5), 12))


def build(kind, opt):
    if kind == "sequential":
        return sched.SequentialLR(opt, [sched.LinearLR(opt, total_iters=3), sched.CosineAnnealingLR(opt, 7)], [3])
    if kind == "chained":
        return sched.ChainedScheduler([sched.StepLR(opt, 3, 0.5), sched.ExponentialLR(opt, 0.95)])
    return {"step": lambda: sched.StepLR(opt, 4, 0.5), "multistep": lambda: sched.MultiStepLR(opt, [2, 5, 9]),
            "exponential": lambda: sched.ExponentialLR(opt, 0.8), "linear": lambda: sched.LinearLR(opt),
            "cosine": lambda: sched.CosineAnnealingLR(opt, 5, 0.01)}[kind]()


@pytest.mark.parametrize("kind", ["step", "multistep", "exponential", "linear", "cosine", "sequential", "chained"])
def test_state_dict_round_trip_continues_identically(kind):
    opt = make_optimizer((0.05, 0.2))
    scheduler = build(kind, opt)
    rates(scheduler, 6)
    saved_opt, saved = opt.state_dict(), scheduler.state_dict()
    assert "optimizer" not in saved
    opt2 = make_optimizer((1.0, 1.0))
    resumed = build(kind, opt2)
    opt2.load_state_dict(saved_opt)
    resumed.load_state_dict(saved)
    assert resumed.get_last_lr() == scheduler.get_last_lr()
    assert rates(resumed, 15) == rates(scheduler, 15)


def test_loading_another_schedules_state_is_an_error():
    opt = make_optimizer()
    with pytest.raises(ValueError, match=r"missing keys \['gamma'\], unexpected keys \['T_max', 'eta_min'\]"):
        sched.ExponentialLR(opt, 0.9).load_state_dict(sched.CosineAnnealingLR(make_optimizer(), 5).state_dict())
    chained = build("chained", opt)
    with pytest.raises(ValueError, match="holds 1 schedulers, this one has 2"):
        chained.load_state_dict({**chained.state_dict(), "_schedulers": [{}]})


def test_resuming_with_last_epoch():
    opt = make_optimizer()
    with pytest.raises(KeyError, match="has no 'initial_lr'"):
        sched.StepLR(opt, 3, last_epoch=5)
    sched.StepLR(opt, 3)
    resumed = sched.CosineAnnealingLR(opt, T_max=10, last_epoch=3)
    assert resumed.last_epoch == 4
    assert resumed.get_last_lr()[0] == pytest.approx(0.025 * (1 + math.cos(math.pi * 4 / 10)))


def test_bad_arguments_are_clear_errors():
    opt = make_optimizer()
    with pytest.raises(TypeError, match="expected a gpudl optimizer, got list"):
        sched.StepLR([], 3)
    with pytest.raises(ValueError, match="step_size must be a positive integer, got 0"):
        sched.StepLR(opt, 0)
    with pytest.raises(ValueError, match="T_max must be a positive integer"):
        sched.CosineAnnealingLR(opt, 0)
    with pytest.raises(ValueError, match=r"start_factor must be in \(0, 1\]"):
        sched.LinearLR(opt, start_factor=0)
    with pytest.raises(ValueError, match="2 schedulers need 1 milestones, got 2"):
        sched.SequentialLR(opt, [sched.StepLR(opt, 2), sched.StepLR(opt, 2)], milestones=[2, 4])
    with pytest.raises(ValueError, match=r"schedulers\[1\] is attached to a different optimizer"):
        sched.ChainedScheduler([sched.StepLR(opt, 2), sched.StepLR(make_optimizer(), 2)])
    with pytest.raises(ValueError, match="at least one scheduler"):
        sched.ChainedScheduler([])
