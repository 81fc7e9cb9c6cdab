"""Adam and AdamW (decoupled weight decay), with optional AMSGrad."""
from .optimizer import Optimizer


class Adam(Optimizer):
    """torch.optim.Adam: ``g = ±grad + wd p``; ``m = β1 m + (1-β1) g``; ``v = β2 v + (1-β2) g²``;
    with AMSGrad ``v_max = max(v_max, v)`` replaces v below; ``p -= lr m̂ / (√v̂ + eps)`` where
    ``m̂ = m / (1-β1^t)`` and ``v̂ = v / (1-β2^t)`` (eps outside the square root).

    The update is one fused pass per parameter (``backend.fused.adam_update``) or, with
    ``foreach`` None or True, one multi-tensor pass per group and step count
    (``backend.fused.adam_foreach``).
    """

    _decoupled_weight_decay = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, *,
                 maximize=False, foreach=None):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize, foreach=foreach))

    def _check_hyperparameters(self, group):
        self._require(group["lr"] >= 0, f"invalid learning rate lr={group['lr']!r} (must be >= 0)")
        self._require(group["eps"] >= 0, f"invalid eps={group['eps']!r} (must be >= 0)")
        betas = group["betas"]
        self._require(len(betas) == 2 and all(0 <= b < 1 for b in betas),
                      f"invalid betas={betas!r} (two values, each in [0, 1))")
        self._require(group["weight_decay"] >= 0, f"invalid weight_decay={group['weight_decay']!r} (must be >= 0)")

    def _hyperparameters(self, group):
        beta1, beta2 = group["betas"]
        return dict(lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"], weight_decay=group["weight_decay"],
                    amsgrad=group["amsgrad"], decoupled=self._decoupled_weight_decay)

    def _operands(self, param, group, state):
        """``(step, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq)`` of one parameter's update, its
        step count advanced (``max_exp_avg_sq`` None without AMSGrad)."""
        grad = self._effective_grad(param, group["maximize"])
        state["step"] = step = state.get("step", 0) + 1
        exp_avg = self._state_array(state, "exp_avg", param)
        exp_avg_sq = self._state_array(state, "exp_avg_sq", param)
        max_exp_avg_sq = self._state_array(state, "max_exp_avg_sq", param) if group["amsgrad"] else None
        return step, param.data, grad, exp_avg, exp_avg_sq, max_exp_avg_sq

    def _update(self, param, group, state, index):
        step, *arrays = self._operands(param, group, state)
        param.backend.fused.adam_update(*arrays, step=step, **self._hyperparameters(group))

    def _update_foreach(self, group, batch):
        fused = batch[0][0].backend.fused
        hyperparameters = self._hyperparameters(group)
        by_step = {}  # parameters that missed steps (no gradient) have their own bias corrections
        for param, state, _ in batch:
            step, *arrays = self._operands(param, group, state)
            columns = by_step.setdefault(step, ([], [], [], [], []))
            for column, array in zip(columns, arrays):
                column.append(array)
        for step, columns in by_step.items():
            fused.adam_foreach(*columns[:4], columns[4] if group["amsgrad"] else None, step=step,
                               **hyperparameters)


class AdamW(Adam):
    """torch.optim.AdamW: Adam with decoupled weight decay, ``p *= 1 - lr·wd`` before the Adam step
    (the gradient itself gets no L2 term)."""

    _decoupled_weight_decay = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, foreach=None):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         maximize=maximize, foreach=foreach)
