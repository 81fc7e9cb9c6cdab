"""``Flatten``: merge a range of dimensions into one."""
from .. import ops
from .module import Module


class Flatten(Module):
    """Merge dimensions ``start_dim..end_dim`` (default: all but the batch axis) into one."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        return ops.flatten(x, self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
