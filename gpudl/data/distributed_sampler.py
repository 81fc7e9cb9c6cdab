"""Samplers for data-parallel training: each rank takes its share of the same order.

``DistributedSampler`` gives each rank a disjoint shard of one (seed, epoch) permutation, as
PyTorch's. ``ShardedBatchSampler`` keeps the batches of one process and splits each of them across
the ranks, so that N ranks see exactly the batches one process would (``gpudl train --nproc``).
"""
import numpy

from .sampler import RandomSampler, Sampler, _count


def _world(num_replicas, rank, owner):
    """(num_replicas, rank), defaulting to the default process group's."""
    if num_replicas is None or rank is None:
        from ..distributed.process_group import communicator
        comm = communicator()
        num_replicas = comm.size if num_replicas is None else num_replicas
        rank = comm.rank if rank is None else rank
    num_replicas = _count(num_replicas, "num_replicas", owner, 1)
    rank = _count(rank, "rank", owner, 0)
    if rank >= num_replicas:
        raise ValueError(f"{owner}: rank must be in [0, {num_replicas - 1}] for num_replicas={num_replicas}, "
                         f"got {rank}")
    return num_replicas, rank


def shard_bounds(n, num_replicas, rank):
    """[start, stop) of ``rank``'s contiguous part when ``n`` items are split over ``num_replicas``
    ranks as evenly as possible (the first ``n % num_replicas`` ranks take one more)."""
    base, extra = divmod(n, num_replicas)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


class DistributedSampler(Sampler):
    """The indices of rank ``rank``'s shard of ``dataset``, out of ``num_replicas`` (default: the
    default process group's rank and world size).

    Every rank draws the same order: with ``shuffle`` the permutation of ``(seed, epoch)`` (the one
    ``RandomSampler`` and ``DataLoader(shuffle=True, seed=seed)`` use), else the data set's order.
    The order is padded by repeating its start (or, with ``drop_last``, cut) to a multiple of
    ``num_replicas``, and rank ``r`` takes positions ``r, r + num_replicas, ...``, so shards are
    disjoint (apart from the padding) and of equal length. Call ``set_epoch(epoch)`` before each
    epoch for a new order (a DataLoader given this sampler passes its own ``set_epoch`` on).
    """

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, seed=0, drop_last=False):
        self.dataset = dataset
        self.num_replicas, self.rank = _world(num_replicas, rank, "DistributedSampler")
        self.shuffle, self.seed, self.drop_last = bool(shuffle), int(seed), bool(drop_last)
        self.epoch = 0
        n = len(dataset)
        self.num_samples = n // self.num_replicas if self.drop_last else -(-n // self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter()`` give the shard of ``epoch``'s order."""
        self.epoch = _count(epoch, "epoch", "DistributedSampler.set_epoch", 0)

    def indices(self, epoch: int) -> numpy.ndarray:
        """This rank's example indices of ``epoch`` as an int64 array."""
        n = len(self.dataset)
        if self.shuffle:
            order = RandomSampler(self.dataset, seed=self.seed).indices(epoch)
        else:
            order = numpy.arange(n, dtype=numpy.int64)
        if self.total_size > n:
            order = numpy.resize(order, self.total_size)  # repeats the order from its start
        return order[self.rank:self.total_size:self.num_replicas]

    def __iter__(self):
        return iter(self.indices(self.epoch).tolist())

    def __len__(self):
        return self.num_samples


class ShardedBatchSampler(Sampler):
    """Rank ``rank``'s contiguous part of every batch of ``batch_sampler`` (lists of indices).

    The ranks together take each batch whole, in the one-process order; a batch of ``n`` examples
    gives the first ``n % num_replicas`` ranks one example more (see :func:`shard_bounds`). A rank
    whose part of a short last batch is empty gets the batch's first example as a placeholder, so
    that every rank runs each step; the trainer gives it weight 0.
    """

    def __init__(self, batch_sampler, num_replicas=None, rank=None):
        self.batch_sampler = batch_sampler
        self.num_replicas, self.rank = _world(num_replicas, rank, "ShardedBatchSampler")

    def set_epoch(self, epoch: int) -> None:
        """Pass ``epoch`` on to the underlying batch sampler."""
        if hasattr(self.batch_sampler, "set_epoch"):
            self.batch_sampler.set_epoch(epoch)

    def __iter__(self):
        for batch in self.batch_sampler:
            start, stop = shard_bounds(len(batch), self.num_replicas, self.rank)
            yield list(batch[start:stop]) if stop > start else [batch[0]]

    def __len__(self):
        return len(self.batch_sampler)
