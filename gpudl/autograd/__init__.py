"""Reverse-mode automatic differentiation: Function, backward/grad, grad modes, gradcheck."""
from .engine import backward, grad
from .function import Function
from .grad_mode import enable_grad, is_grad_enabled, no_grad
from .gradcheck import GradcheckError, gradcheck

__all__ = ["Function", "GradcheckError", "backward", "enable_grad", "grad", "gradcheck", "is_grad_enabled",
           "no_grad"]
