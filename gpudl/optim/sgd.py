"""Stochastic gradient descent with momentum, dampening, Nesterov momentum and weight decay."""
from .optimizer import Optimizer


class SGD(Optimizer):
    """torch.optim.SGD: ``g = ±grad + wd p``; with momentum ``b = g`` on the first step, later
    ``b = μ b + (1 - τ) g``, and ``g = g + μ b`` (Nesterov) or ``g = b``; then ``p -= lr g``.

    ``maximize`` negates the gradient before weight decay, as PyTorch's implementation does.
    The update is one fused pass per parameter (``backend.fused.sgd_update``) or, with
    ``foreach`` None or True, one multi-tensor pass per group (``backend.fused.sgd_foreach``).
    """

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, *,
                 maximize=False, foreach=None):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov, maximize=maximize, foreach=foreach))

    def _check_hyperparameters(self, group):
        self._require(group["lr"] >= 0, f"invalid learning rate lr={group['lr']!r} (must be >= 0)")
        self._require(group["momentum"] >= 0, f"invalid momentum={group['momentum']!r} (must be >= 0)")
        self._require(group["weight_decay"] >= 0, f"invalid weight_decay={group['weight_decay']!r} (must be >= 0)")
        self._require(not group["nesterov"] or (group["momentum"] > 0 and group["dampening"] == 0),
                      f"nesterov=True needs momentum > 0 and dampening == 0 (got momentum={group['momentum']!r}, "
                      f"dampening={group['dampening']!r})")

    @staticmethod
    def _hyperparameters(group):
        return dict(lr=group["lr"], momentum=group["momentum"], dampening=group["dampening"],
                    nesterov=group["nesterov"], weight_decay=group["weight_decay"])

    def _operands(self, param, group, state):
        """``(grad, momentum_buffer, first_step)`` of one parameter's update (buffer None without momentum)."""
        grad = self._effective_grad(param, group["maximize"])
        if group["momentum"] == 0:
            return grad, None, False
        buffer = state.get("momentum_buffer")
        if buffer is None:  # the first step copies the gradient into it
            state["momentum_buffer"] = param.backend.xp.empty_like(param.data)
        return grad, state["momentum_buffer"], buffer is None

    def _update(self, param, group, state, index):
        grad, buffer, first_step = self._operands(param, group, state)
        param.backend.fused.sgd_update(param.data, grad, buffer, first_step=first_step,
                                       **self._hyperparameters(group))

    def _update_foreach(self, group, batch):
        fused = batch[0][0].backend.fused
        hyperparameters = self._hyperparameters(group)
        columns = {False: ([], [], []), True: ([], [], [])}  # by first_step: params, grads, buffers
        for param, state, _ in batch:
            grad, buffer, first_step = self._operands(param, group, state)
            for column, array in zip(columns[first_step], (param.data, grad, buffer)):
                column.append(array)
        for first_step, (params, grads, buffers) in columns.items():
            if params:
                fused.sgd_foreach(params, grads, buffers if group["momentum"] != 0 else None,
                                  first_step=first_step, **hyperparameters)
