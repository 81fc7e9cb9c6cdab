"""``Embedding``: a lookup table of learned vectors indexed by integers."""
from ..autograd.grad_mode import no_grad
from ..ops.embedding import embedding
from . import init
from .linear import check_size
from .module import Module
from .parameter import empty_parameter


class Embedding(Module):
    """Row ``i`` of ``weight`` [num_embeddings, embedding_dim] for each index ``i`` of the input.

    Initialised from N(0, 1) as PyTorch; row ``padding_idx`` (if given) starts at zero and gets no
    gradient. An index outside ``[0, num_embeddings)`` is an IndexError naming it and the range.
    """

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, device=None, dtype=None):
        super().__init__()
        self.num_embeddings = check_size(num_embeddings, "num_embeddings", "Embedding")
        self.embedding_dim = check_size(embedding_dim, "embedding_dim", "Embedding")
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(f"Embedding: padding_idx {padding_idx} is out of range for "
                                 f"{num_embeddings} embeddings")
            padding_idx %= num_embeddings
        self.padding_idx = padding_idx
        self.weight = empty_parameter((num_embeddings, embedding_dim), device, dtype, "Embedding")
        self.reset_parameters()

    def reset_parameters(self):
        """Draw fresh N(0, 1) rows; the padding row is zero."""
        init.normal_(self.weight)
        if self.padding_idx is not None:
            with no_grad():
                self.weight[self.padding_idx] = 0

    def forward(self, indices):
        return embedding(indices, self.weight, self.padding_idx)

    def extra_repr(self):
        text = f"{self.num_embeddings}, {self.embedding_dim}"
        return text if self.padding_idx is None else text + f", padding_idx={self.padding_idx}"
