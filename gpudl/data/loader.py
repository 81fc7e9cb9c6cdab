"""``DataLoader``: mini-batches of a data set, reshuffled every epoch, delivered on a device.

With ``num_workers > 0`` worker *threads* assemble the next batches while the training step runs.
Threads rather than processes because the work of a batch is NumPy's fancy-index take and copy,
which release the GIL, and a thread shares the data set's arrays without pickling them or forking
a process that holds a CUDA context (which CUDA does not support). The cost: a data set whose
``__getitem__`` or transform is pure Python runs one example at a time under the GIL. The workers
only build host arrays; moving a batch to the device stays on the caller's thread, where CuPy's
current device and stream are the training step's.
"""
import collections
import itertools
from concurrent.futures import ThreadPoolExecutor

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

    ``num_workers=N`` (N > 0) assembles up to ``N * prefetch_factor`` batches ahead (default
    ``prefetch_factor=2``) on N background threads (see the module's docstring for why threads);
    batches arrive in the same order as with ``num_workers=0``. An exception in a worker (e.g. in
    ``dataset[i]``) is raised from the loop; leaving the loop (``break``, an exception, Ctrl-C)
    cancels the queued batches and joins the threads.

    ``collate_fn(examples)`` (a list of ``dataset[i]``), when given, makes each batch instead, and
    its result is delivered as it is (on a worker thread when there are workers). ``pin_memory`` and
    ``persistent_workers`` are accepted for PyTorch scripts and change nothing: a batch is copied to
    the device once from ordinary host memory, and worker threads start per epoch in microseconds.

    Batches are gathered on the host and moved to ``device`` (default: the default device) once per
    batch; an example that is a tuple gives a tuple of Tensors. Integer fields (targets) arrive as
    int64. Data sets backed by host arrays (``TensorDataset``, ``FashionMNIST``, Subsets of them) are
    gathered with one fancy-index take per array and batch; others are stacked example by example.
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, sampler=None, batch_sampler=None, drop_last=False,
                 num_workers=0, collate_fn=None, pin_memory=False, prefetch_factor=None, persistent_workers=False,
                 seed=0, device=None):
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise TypeError(f"DataLoader: dataset must have __len__ and __getitem__, got {type(dataset).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, numpy.integer)) or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be a positive integer, got {batch_size!r}")
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: sampler= is mutually exclusive with shuffle=True "
                             "(the sampler sets the order)")
        if batch_sampler is not None and (batch_size != 1 or shuffle or sampler is not None or drop_last):
            raise ValueError("DataLoader: batch_sampler= is mutually exclusive with batch_size=, shuffle=, sampler= "
                             "and drop_last= (the batch sampler decides all of them)")
        if isinstance(num_workers, bool) or not isinstance(num_workers, (int, numpy.integer)) or num_workers < 0:
            raise ValueError(f"DataLoader: num_workers must be a non-negative integer, got {num_workers!r}")
        if prefetch_factor is not None and num_workers == 0:
            raise ValueError("DataLoader: prefetch_factor= needs num_workers > 0 (without workers nothing is "
                             "prefetched); leave it None")
        if prefetch_factor is not None and (isinstance(prefetch_factor, bool) or prefetch_factor < 1
                                            or not isinstance(prefetch_factor, (int, numpy.integer))):
            raise ValueError(f"DataLoader: prefetch_factor must be a positive integer, got {prefetch_factor!r}")
        if collate_fn is not None and not callable(collate_fn):
            raise TypeError(f"DataLoader: collate_fn must be callable, got {type(collate_fn).__name__}")
        self.collate_fn = collate_fn
        self.pin_memory, self.persistent_workers = bool(pin_memory), bool(persistent_workers)
        self.num_workers = int(num_workers)
        self.prefetch_factor = None if num_workers == 0 else int(prefetch_factor or 2)
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
        self.batch_sampler = (BatchSampler(sampler, self.batch_size, self.drop_last) if batch_sampler is None
                              else batch_sampler)

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
        batches = iter(self.batch_sampler)
        if self.num_workers == 0:
            return (self._to_device(self._gather(take)) for take in batches)
        return self._prefetched(batches)

    def _prefetched(self, batches):
        """The batches of ``batches`` (index lists), gathered ahead on worker threads, in order."""
        pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="gpudl-loader")
        pending = collections.deque()
        try:
            for take in itertools.islice(batches, self.num_workers * self.prefetch_factor):
                pending.append(pool.submit(self._gather, take))
            while pending:
                host = pending.popleft().result()
                for take in itertools.islice(batches, 1):
                    pending.append(pool.submit(self._gather, take))
                yield self._to_device(host)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _gather(self, take):
        """The host arrays of the examples ``take``: a tuple of arrays (one per field), or one array
        (or what ``collate_fn`` makes of the examples)."""
        if self.collate_fn is not None:
            return self.collate_fn([self.dataset[int(i)] for i in take])
        source = array_source(self.dataset)
        if source is not None:
            arrays, indices = source
            rows = self._rows(take, indices)
            return tuple(a[rows] for a in arrays)
        items = [self.dataset[int(i)] for i in take]
        if isinstance(items[0], (tuple, list)):
            return tuple(_collate(field) for field in zip(*items))
        return _collate(items)

    def _rows(self, take, indices):
        """The array rows of the examples ``take`` (a sampler's indices), checked against the data set's size."""
        take = numpy.asarray(take, dtype=numpy.int64)
        n = len(self.dataset)
        if take.size and (take.min() < -n or take.max() >= n):
            raise IndexError(f"DataLoader: the sampler gave indices from {take.min()} to {take.max()}, but the data "
                             f"set has {n} examples")
        return take if indices is None else indices[take]

    def _to_device(self, host):
        """Tensors on the loader's device from the host arrays of one batch (a tuple stays a tuple);
        a ``collate_fn``'s batch as it is."""
        if self.collate_fn is not None:
            return host
        if isinstance(host, tuple):
            return tuple(Tensor(backend.to_device(_batch_array(a), self.device)) for a in host)
        return Tensor(backend.to_device(_batch_array(host), self.device))

    def __repr__(self):
        return (f"DataLoader({type(self.dataset).__name__} of {len(self.dataset)}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, drop_last={self.drop_last}, num_workers={self.num_workers}, "
                f"seed={self.seed}, device={self.device})")
