"""``DataLoader``: mini-batches of a data set, reshuffled every epoch, delivered on a device."""
import numpy

from .. import backend
from ..tensor import Tensor
from .dataset import array_source


def _batch_array(host):
    """Integer batches become int64 (the dtype of class targets and indices); others keep theirs."""
    if host.dtype.kind in "iu" and host.dtype != backend.int64:
        return host.astype(backend.int64)
    return host


def _collate(values):
    """One host array from the matching fields of a batch's examples (generic data sets only)."""
    first = values[0]
    if isinstance(first, Tensor):
        return numpy.stack([backend.to_host(v.data) for v in values])
    if backend.is_array(first):
        return numpy.stack([backend.to_host(v) for v in values])
    return backend.host_array_from_data(list(values))


class DataLoader:
    """Iterate over ``dataset`` in mini-batches of ``batch_size`` examples.

    With ``shuffle=True`` each epoch visits the examples in a new random order derived from
    ``(seed, epoch)``; the epoch advances on every ``iter()`` and ``set_epoch(n)`` chooses it, so a
    resumed run sees the same batches. ``drop_last`` drops a final batch smaller than
    ``batch_size``. Batches are gathered on the host and moved to ``device`` (default: the default
    device) once per batch; an example that is a tuple gives a tuple of Tensors. Integer fields
    (targets) arrive as int64.

    Data sets backed by host arrays (``TensorDataset``, ``FashionMNIST``, Subsets of them) are
    gathered with one fancy-index take per array and batch; others are stacked example by example.
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, seed=0, device=None):
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise TypeError(f"DataLoader: dataset must have __len__ and __getitem__, got {type(dataset).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, numpy.integer)) or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be a positive integer, got {batch_size!r}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.seed = int(seed)
        self.device = backend.get_device(device)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter()`` run epoch ``epoch`` (its order depends only on seed and epoch)."""
        if epoch < 0:
            raise ValueError(f"DataLoader.set_epoch: epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def __len__(self):
        """The number of batches per epoch."""
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> numpy.ndarray:
        """The example indices of ``epoch``, in the order the batches take them."""
        n = len(self.dataset)
        if not self.shuffle:
            return numpy.arange(n)
        return numpy.random.default_rng([self.seed, epoch]).permutation(n)

    def __iter__(self):
        order = self.order(self.epoch)
        self.epoch += 1
        return self._batches(order)

    def _batches(self, order):
        source = array_source(self.dataset)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            take = order[start:start + self.batch_size]
            if source is not None:
                arrays, indices = source
                rows = take if indices is None else indices[take]
                yield tuple(self._to_device(a[rows]) for a in arrays)
            else:
                yield self._gather_items(take)

    def _gather_items(self, take):
        items = [self.dataset[int(i)] for i in take]
        if isinstance(items[0], (tuple, list)):
            return tuple(self._to_device(_collate(field)) for field in zip(*items))
        return self._to_device(_collate(items))

    def _to_device(self, host):
        return Tensor(backend.to_device(_batch_array(host), self.device))

    def __repr__(self):
        return (f"DataLoader({type(self.dataset).__name__} of {len(self.dataset)}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, drop_last={self.drop_last}, seed={self.seed}, device={self.device})")
