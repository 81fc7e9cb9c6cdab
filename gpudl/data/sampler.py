"""Samplers: which examples a ``DataLoader`` takes, in which order, and how they group into batches.

As in PyTorch, a sampler iterates over example indices (Python ints) and a batch sampler over lists
of them. Samplers whose order changes from epoch to epoch take it from ``set_epoch(n)`` and a seed,
so that an epoch's order depends only on ``(seed, epoch)`` and a resumed run sees the same batches.
"""
import numpy


def _count(value, name, owner, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, numpy.integer)) or value < minimum:
        kind = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"{owner}: {name} must be a {kind} integer, got {value!r}")
    return int(value)


class Sampler:
    """Base class: ``iter(sampler)`` gives example indices; ``len(sampler)`` how many (when known)."""

    def __iter__(self):
        raise NotImplementedError(f"{type(self).__name__} must implement __iter__")

    def __len__(self):
        raise TypeError(f"{type(self).__name__} does not define __len__")


class SequentialSampler(Sampler):
    """The indices ``0 .. len(data_source) - 1`` in order."""

    def __init__(self, data_source):
        self.data_source = data_source

    def __iter__(self):
        return iter(range(len(self.data_source)))

    def __len__(self):
        return len(self.data_source)


class RandomSampler(Sampler):
    """A random order of the examples of ``data_source``, new each epoch, fixed by ``(seed, epoch)``.

    ``replacement=True`` draws ``num_samples`` indices with replacement (default ``len(data_source)``);
    without replacement, ``num_samples`` larger than the data set repeats whole permutations, as in
    PyTorch. ``set_epoch(n)`` chooses the epoch; the ``DataLoader`` that built the sampler calls it.
    """

    def __init__(self, data_source, replacement=False, num_samples=None, seed=0):
        self.data_source = data_source
        self.replacement = bool(replacement)
        self._num_samples = None if num_samples is None else _count(num_samples, "num_samples", "RandomSampler", 1)
        self.seed = int(seed)
        self.epoch = 0

    @property
    def num_samples(self) -> int:
        """How many indices one epoch gives."""
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter()`` give the order of ``epoch``."""
        self.epoch = _count(epoch, "epoch", "RandomSampler.set_epoch", 0)

    def indices(self, epoch: int) -> numpy.ndarray:
        """The example indices of ``epoch`` as an int64 array."""
        n, count = len(self.data_source), self.num_samples
        rng = numpy.random.default_rng([self.seed, epoch])
        if self.replacement:
            return rng.integers(0, n, size=count, dtype=numpy.int64)
        rounds = -(-count // n) if n else 0
        return numpy.concatenate([rng.permutation(n) for _ in range(rounds)] or [numpy.arange(0)])[:count]

    def __iter__(self):
        return iter(self.indices(self.epoch).tolist())

    def __len__(self):
        return self.num_samples


class SubsetRandomSampler(Sampler):
    """The given ``indices`` in a random order, new each epoch, fixed by ``(seed, epoch)``."""

    def __init__(self, indices, seed=0):
        self.indices = numpy.asarray(indices, dtype=numpy.int64).reshape(-1)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter()`` give the order of ``epoch``."""
        self.epoch = _count(epoch, "epoch", "SubsetRandomSampler.set_epoch", 0)

    def __iter__(self):
        order = numpy.random.default_rng([self.seed, self.epoch]).permutation(len(self.indices))
        return iter(self.indices[order].tolist())

    def __len__(self):
        return len(self.indices)


class BatchSampler(Sampler):
    """Lists of ``batch_size`` indices taken from ``sampler`` in its order; ``drop_last`` drops a short last one."""

    def __init__(self, sampler, batch_size, drop_last):
        self.sampler = sampler
        self.batch_size = _count(batch_size, "batch_size", "BatchSampler", 1)
        self.drop_last = bool(drop_last)

    def set_epoch(self, epoch: int) -> None:
        """Pass ``epoch`` on to the underlying sampler (when its order depends on the epoch)."""
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self):
        batch = []
        for index in self.sampler:
            batch.append(index)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __len__(self):
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)
