"""Stochastic gradient descent with momentum, dampening, Nesterov momentum and weight decay."""
from .optimizer import Optimizer


class SGD(Optimizer):
    """torch.optim.SGD: ``g = ±grad + wd p``; with momentum ``b = g`` on the first step, later
    ``b = μ b + (1 - τ) g``, and ``g = g + μ b`` (Nesterov) or ``g = b``; then ``p -= lr g``.

    ``maximize`` negates the gradient before weight decay, as PyTorch's implementation does.
    The update is one fused pass per parameter (``backend.fused.sgd_update``).
    """

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, *,
                 maximize=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov, maximize=maximize))

    def _check_hyperparameters(self, group):
        self._require(group["lr"] >= 0, f"invalid learning rate lr={group['lr']!r} (must be >= 0)")
        self._require(group["momentum"] >= 0, f"invalid momentum={group['momentum']!r} (must be >= 0)")
        self._require(group["weight_decay"] >= 0, f"invalid weight_decay={group['weight_decay']!r} (must be >= 0)")
        self._require(not group["nesterov"] or (group["momentum"] > 0 and group["dampening"] == 0),
                      f"nesterov=True needs momentum > 0 and dampening == 0 (got momentum={group['momentum']!r}, "
                      f"dampening={group['dampening']!r})")

    def _update(self, param, group, state, index):
        grad = self._effective_grad(param, group["maximize"])
        momentum = group["momentum"]
        buffer, first_step = None, False
        if momentum != 0:
            buffer = state.get("momentum_buffer")
            first_step = buffer is None
            if first_step:  # the first step copies the gradient into it
                buffer = state["momentum_buffer"] = param.backend.xp.empty_like(param.data)
        param.backend.fused.sgd_update(param.data, grad, buffer, lr=group["lr"], momentum=momentum,
                                       dampening=group["dampening"], nesterov=group["nesterov"],
                                       weight_decay=group["weight_decay"], first_step=first_step)
