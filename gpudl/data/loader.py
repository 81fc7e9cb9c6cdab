"""``DataLoader``: mini-batches of a data set, reshuffled every epoch, delivered on a device."""
import numpy

from .. import backend
from ..tensor import Tensor
from .dataset import array_source
from .sampler import BatchSampler, RandomSampler, SequentialSampler


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
    """Iterate over ``dataset`` in mini-batches, as PyTorch's ``DataLoader``.

    Which examples form each batch: ``batch_sampler`` (lists of indices) if given, else
    ``batch_size`` indices at a time from ``sampler`` (indices) if given, else from a random order
    (``shuffle=True``) or the data set's order. ``drop_last`` drops a final batch smaller than
    ``batch_size``. As in PyTorch, ``sampler`` excludes ``shuffle``, and ``batch_sampler`` excludes
    ``batch_size``, ``shuffle``, ``sampler`` and ``drop_last``.

    With ``shuffle=True`` each epoch visits the examples in a new random order derived from
    ``(seed, epoch)``; the epoch advances on every ``iter()`` and ``set_epoch(n)`` chooses it, so a
    resumed run sees the same batches. The loader tells the samplers it builds the epoch at every
    ``iter()``; a sampler you pass keeps its own epoch (call its ``set_epoch`` as in PyTorch), except
    that ``loader.set_epoch(n)`` passes ``n`` on to it too.

    Batches are gathered on the host and moved to ``device`` (default: the default device) once per
    batch; an example that is a tuple gives a tuple of Tensors. Integer fields (targets) arrive as
    int64. Data sets backed by host arrays (``TensorDataset``, ``FashionMNIST``, Subsets of them) are
    gathered with one fancy-index take per array and batch; others are stacked example by example.
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, sampler=None, batch_sampler=None, drop_last=False,
                 seed=0, device=None):
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise TypeError(f"DataLoader: dataset must have __len__ and __getitem__, got {type(dataset).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, numpy.integer)) or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be a positive integer, got {batch_size!r}")
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: sampler= is mutually exclusive with shuffle=True (the sampler sets the order)")
        if batch_sampler is not None and (batch_size != 1 or shuffle or sampler is not None or drop_last):
            raise ValueError("DataLoader: batch_sampler= is mutually exclusive with batch_size=, shuffle=, sampler= "
                             "and drop_last= (the batch sampler decides all of them)")
        self.dataset = dataset
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.seed = int(seed)
        self.device = backend.get_device(device)
        self.epoch = 0
        self._owns_sampler = sampler is None and batch_sampler is None
        if sampler is None:
            sampler = RandomSampler(dataset, seed=self.seed) if self.shuffle else SequentialSampler(dataset)
        self.sampler = sampler
        self.batch_size = None if batch_sampler is not None else int(batch_size)
        self.batch_sampler = batch_sampler or BatchSampler(sampler, self.batch_size, self.drop_last)

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter()`` run epoch ``epoch`` (its order depends only on seed and epoch).

        A sampler passed to the loader gets ``set_epoch(epoch)`` too, when it has one.
        """
        if epoch < 0:
            raise ValueError(f"DataLoader.set_epoch: epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)
        if not self._owns_sampler and hasattr(self.batch_sampler, "set_epoch"):
            self.batch_sampler.set_epoch(self.epoch)

    def __len__(self):
        """The number of batches per epoch."""
        return len(self.batch_sampler)

    def __iter__(self):
        if self._owns_sampler:
            self.batch_sampler.set_epoch(self.epoch)
        self.epoch += 1
        return self._batches(iter(self.batch_sampler))

    def _batches(self, batches):
        source = array_source(self.dataset)
        for take in batches:
            if source is not None:
                arrays, indices = source
                rows = self._rows(take, indices)
                yield tuple(self._to_device(a[rows]) for a in arrays)
            else:
                yield self._gather_items(take)

    def _rows(self, take, indices):
        """The array rows of the examples ``take`` (a sampler's indices), checked against the data set's size."""
        take = numpy.asarray(take, dtype=numpy.int64)
        n = len(self.dataset)
        if take.size and (take.min() < -n or take.max() >= n):
            raise IndexError(f"DataLoader: the sampler gave indices from {take.min()} to {take.max()}, but the data "
                             f"set has {n} examples")
        return take if indices is None else indices[take]

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
