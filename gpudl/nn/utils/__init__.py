"""``nn.utils`` as in PyTorch: gradient clipping (``clip_grad_norm_``, ``clip_grad_value_``).

The functions live in :mod:`gpudl.optim.clip`; this is the name PyTorch scripts call them by.
"""
from ...optim.clip import clip_grad_norm_, clip_grad_value_

__all__ = ["clip_grad_norm_", "clip_grad_value_"]
