"""Adagrad: per-element learning rates from the accumulated squared gradients."""
from .optimizer import Optimizer


class Adagrad(Optimizer):
    """torch.optim.Adagrad: ``g = ±grad + wd p``; ``clr = lr / (1 + (t-1) lr_decay)``;
    ``sum += g²``; ``p -= clr g / (√sum + eps)``, with ``sum`` starting at ``initial_accumulator_value``.

    ``foreach`` is accepted as PyTorch's; the update runs tensor by tensor either way."""

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10,
                 foreach=None, *, maximize=False):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, eps=eps,
                                      maximize=maximize, foreach=foreach))

    def _check_hyperparameters(self, group):
        for key in ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps"):
            self._require(group[key] >= 0, f"invalid {key}={group[key]!r} (must be >= 0)")

    def _update(self, param, group, state, index):
        xp = param.backend.xp
        grad = self._effective_grad(param, group["maximize"], group["weight_decay"])
        state["step"] = step = state.get("step", 0) + 1
        total = self._state_array(state, "sum", param, group["initial_accumulator_value"])
        clr = group["lr"] / (1 + (step - 1) * group["lr_decay"])
        work = self._buffer(param.data)
        total += xp.multiply(grad, grad, out=work)
        xp.sqrt(total, out=work)
        work += group["eps"]
        xp.divide(grad, work, out=work)
        work *= clr
        param.data -= work
