"""RMSprop, optionally centered and with momentum."""
from .optimizer import Optimizer


class RMSprop(Optimizer):
    """torch.optim.RMSprop: ``g = ±grad + wd p``; ``v = α v + (1-α) g²``; centered:
    ``g_avg = α g_avg + (1-α) g`` and ``d = √(v - g_avg²) + eps``, else ``d = √v + eps``;
    with momentum ``b = μ b + g / d`` (b starts at zero) and ``p -= lr b``, else ``p -= lr g / d``.

    ``foreach`` is accepted as PyTorch's; the update runs tensor by tensor either way."""

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, *,
                 foreach=None, maximize=False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                                      centered=centered, maximize=maximize, foreach=foreach))

    def _check_hyperparameters(self, group):
        for key in ("lr", "alpha", "eps", "weight_decay", "momentum"):
            self._require(group[key] >= 0, f"invalid {key}={group[key]!r} (must be >= 0)")

    def _update(self, param, group, state, index):
        xp = param.backend.xp
        alpha = group["alpha"]
        grad = self._effective_grad(param, group["maximize"], group["weight_decay"])
        state["step"] = state.get("step", 0) + 1
        square_avg = self._state_array(state, "square_avg", param)
        work = self._buffer(param.data)
        square_avg *= alpha
        xp.multiply(grad, grad, out=work)
        work *= 1 - alpha
        square_avg += work
        if group["centered"]:
            grad_avg = self._state_array(state, "grad_avg", param)
            grad_avg *= alpha
            grad_avg += xp.multiply(grad, 1 - alpha, out=work)
            xp.multiply(grad_avg, grad_avg, out=work)
            xp.subtract(square_avg, work, out=work)
            xp.sqrt(work, out=work)
        else:
            xp.sqrt(square_avg, out=work)
        work += group["eps"]
        xp.divide(grad, work, out=work)
        if group["momentum"] > 0:
            buffer = self._state_array(state, "momentum_buffer", param)
            buffer *= group["momentum"]
            buffer += work
            xp.multiply(buffer, group["lr"], out=work)
        else:
            work *= group["lr"]
        param.data -= work
