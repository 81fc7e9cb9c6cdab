"""Learning-rate schedules, stepped once per epoch (or per iteration) after ``optimizer.step()``.

As in PyTorch, each schedule computes the next rate from the current one (the recursive,
"chainable" form), so schedules compose: ``ChainedScheduler`` steps several at once (their factors
multiply) and ``SequentialLR`` hands over from one to the next at milestones, restarting the next
one from its closed form. ``last_epoch`` counts steps; constructing a scheduler performs step 0.
"""
import bisect
import math

from .optimizer import Optimizer


class LRScheduler:
    """Base class: sets ``group["lr"]`` of every parameter group from ``get_lr()`` at each ``step()``."""

    def __init__(self, optimizer, last_epoch=-1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}: expected a gpudl optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        for k, group in enumerate(optimizer.param_groups):
            if last_epoch == -1:
                group.setdefault("initial_lr", group["lr"])
            elif "initial_lr" not in group:
                raise KeyError(f"{type(self).__name__}: param_groups[{k}] has no 'initial_lr', so the schedule "
                               f"cannot resume at last_epoch={last_epoch}; load the optimizer's state first")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._initial_step()

    def _initial_step(self):
        self._step_count = 0
        self.step()

    def get_lr(self) -> list:
        """The rates for ``last_epoch``, computed from the groups' current rates."""
        raise NotImplementedError

    def _closed_form_lr(self) -> list:
        """The rates for ``last_epoch`` computed from ``base_lrs`` alone."""
        raise NotImplementedError

    def step(self) -> None:
        """Advance one epoch and set the new rates on the optimizer."""
        self._step_count += 1
        self.last_epoch += 1
        self._set_lrs(self.get_lr())

    def _restart(self) -> None:
        """Jump to epoch 0 using the closed form (how SequentialLR switches to this schedule)."""
        self._step_count += 1
        self.last_epoch = 0
        self._set_lrs(self._closed_form_lr())

    def _set_lrs(self, lrs):
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self) -> list:
        """The rates set by the latest ``step()``, one per parameter group."""
        return list(self._last_lr)

    def _current_lrs(self):
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        """Everything but the optimizer: plain numbers and lists, ready for ``gpudl.save``."""
        return {key: value for key, value in vars(self).items() if key != "optimizer"}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore a state saved by ``state_dict()`` of the same kind of schedule."""
        expected = set(self.state_dict())
        if set(state_dict) != expected:
            missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
            raise ValueError(f"{type(self).__name__}.load_state_dict: the saved state does not fit this schedule "
                             f"(missing keys {missing}, unexpected keys {unexpected})")
        self.__dict__.update(state_dict)


def _check_positive_int(name, owner, value):
    if not isinstance(value, int) or value <= 0:
        raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}")


class StepLR(LRScheduler):
    """Multiply the rate by ``gamma`` every ``step_size`` epochs: ``lr = base · gamma^(epoch // step_size)``."""

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        _check_positive_int("step_size", "StepLR", step_size)
        self.step_size = step_size
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self._current_lrs()
        return [lr * self.gamma for lr in self._current_lrs()]

    def _closed_form_lr(self):
        return [base * self.gamma ** (self.last_epoch // self.step_size) for base in self.base_lrs]


class MultiStepLR(LRScheduler):
    """Multiply the rate by ``gamma`` at each milestone epoch (a milestone listed twice counts twice)."""

    def __init__(self, optimizer, milestones, gamma=0.1, last_epoch=-1):
        self.milestones = sorted(int(m) for m in milestones)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        hits = self.milestones.count(self.last_epoch)
        if hits == 0:
            return self._current_lrs()
        return [lr * self.gamma ** hits for lr in self._current_lrs()]

    def _closed_form_lr(self):
        return [base * self.gamma ** bisect.bisect_right(self.milestones, self.last_epoch) for base in self.base_lrs]


class ExponentialLR(LRScheduler):
    """Multiply the rate by ``gamma`` every epoch: ``lr = base · gamma^epoch``."""

    def __init__(self, optimizer, gamma, last_epoch=-1):
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch == 0:
            return self._current_lrs()
        return [lr * self.gamma for lr in self._current_lrs()]

    def _closed_form_lr(self):
        return [base * self.gamma ** self.last_epoch for base in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing from the base rate to ``eta_min`` over ``T_max`` epochs (then back up, periodically):
    ``lr = eta_min + (base - eta_min) (1 + cos(π epoch / T_max)) / 2``."""

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        _check_positive_int("T_max", "CosineAnnealingLR", T_max)
        self.T_max = T_max
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        epoch, period, eta_min = self.last_epoch, self.T_max, self.eta_min
        if epoch == 0:
            return self._current_lrs()
        if self._step_count == 1 and epoch > 0:  # resumed with last_epoch: no previous rate to scale
            return self._closed_form_lr()
        if (epoch - 1 - period) % (2 * period) == 0:  # leaving the minimum: the ratio below would be 0/0
            return [lr + (base - eta_min) * (1 - math.cos(math.pi / period)) / 2
                    for lr, base in zip(self._current_lrs(), self.base_lrs)]
        ratio = (1 + math.cos(math.pi * epoch / period)) / (1 + math.cos(math.pi * (epoch - 1) / period))
        return [ratio * (lr - eta_min) + eta_min for lr in self._current_lrs()]

    def _closed_form_lr(self):
        return [self.eta_min + (base - self.eta_min) * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
                for base in self.base_lrs]


class LinearLR(LRScheduler):
    """Linear warm-up: the factor on the base rate goes from ``start_factor`` to ``end_factor`` over
    ``total_iters`` epochs, then stays at ``end_factor``."""

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5, last_epoch=-1):
        if not 0 < start_factor <= 1:
            raise ValueError(f"LinearLR: start_factor must be in (0, 1], got {start_factor!r}")
        if not 0 <= end_factor <= 1:
            raise ValueError(f"LinearLR: end_factor must be in [0, 1], got {end_factor!r}")
        _check_positive_int("total_iters", "LinearLR", total_iters)
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        start, end, total, epoch = self.start_factor, self.end_factor, self.total_iters, self.last_epoch
        if epoch == 0:
            return [lr * start for lr in self._current_lrs()]
        if epoch > total:
            return self._current_lrs()
        ratio = 1 + (end - start) / (total * start + (epoch - 1) * (end - start))
        return [lr * ratio for lr in self._current_lrs()]

    def _closed_form_lr(self):
        fraction = min(self.total_iters, self.last_epoch) / self.total_iters
        return [base * (self.start_factor + (self.end_factor - self.start_factor) * fraction)
                for base in self.base_lrs]


def _check_schedulers(owner, schedulers, optimizer=None):
    schedulers = list(schedulers)
    if not schedulers:
        raise ValueError(f"{owner}: expected at least one scheduler")
    optimizer = optimizer if optimizer is not None else getattr(schedulers[0], "optimizer", None)
    for k, scheduler in enumerate(schedulers):
        if not isinstance(scheduler, LRScheduler):
            raise TypeError(f"{owner}: schedulers[{k}] is a {type(scheduler).__name__}, not an LR scheduler")
        if scheduler.optimizer is not optimizer:
            raise ValueError(f"{owner}: schedulers[{k}] is attached to a different optimizer than the others")
    return schedulers, optimizer


class _Composite(LRScheduler):
    """Shared state handling of the schedules made of other schedules."""

    def state_dict(self):
        state = {key: value for key, value in vars(self).items() if key not in ("optimizer", "_schedulers")}
        state["_schedulers"] = [scheduler.state_dict() for scheduler in self._schedulers]
        return state

    def load_state_dict(self, state_dict):
        state = dict(state_dict)
        inner = state.pop("_schedulers", None)
        if inner is None or len(inner) != len(self._schedulers):
            raise ValueError(f"{type(self).__name__}.load_state_dict: the saved state holds "
                             f"{'no' if inner is None else len(inner)} schedulers, this one has "
                             f"{len(self._schedulers)}")
        super().load_state_dict({**state, "_schedulers": self._schedulers})
        for scheduler, saved in zip(self._schedulers, inner):
            scheduler.load_state_dict(saved)


class SequentialLR(_Composite):
    """Run ``schedulers[0]`` until ``milestones[0]``, then ``schedulers[1]`` (restarted at its epoch 0), ..."""

    def __init__(self, optimizer, schedulers, milestones, last_epoch=-1):
        self._schedulers, self.optimizer = _check_schedulers("SequentialLR", schedulers, optimizer)
        milestones = [int(m) for m in milestones]
        if len(milestones) != len(self._schedulers) - 1:
            raise ValueError(f"SequentialLR: {len(self._schedulers)} schedulers need {len(self._schedulers) - 1} "
                             f"milestones, got {len(milestones)}")
        if milestones != sorted(milestones):
            raise ValueError(f"SequentialLR: milestones must be increasing, got {milestones}")
        self._milestones = milestones
        self.last_epoch = last_epoch + 1
        # Every scheduler took its step 0 when it was built; undo that and redo only the first's.
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"]
        for scheduler in self._schedulers:
            scheduler.last_epoch -= 1
        self._schedulers[0]._initial_step()
        self._last_lr = self._schedulers[0].get_last_lr()

    def step(self):
        """Advance one epoch, switching schedules at the milestones."""
        self.last_epoch += 1
        k = bisect.bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[k]
        if k > 0 and self._milestones[k - 1] == self.last_epoch:
            scheduler._restart()
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()


class ChainedScheduler(_Composite):
    """Step several schedules together; their (recursive) factors multiply."""

    def __init__(self, schedulers, optimizer=None):
        self._schedulers, self.optimizer = _check_schedulers("ChainedScheduler", schedulers, optimizer)
        self._last_lr = self._current_lrs()

    def step(self):
        """Step every schedule in order."""
        for scheduler in self._schedulers:
            scheduler.step()
        self._last_lr = self._current_lrs()
