"""Data sets: the ``Dataset`` protocol, array-backed ``TensorDataset``, ``Subset`` and ``random_split``.

A data set whose examples live in host arrays exposes them as ``arrays`` (a tuple of NumPy arrays
whose first axis indexes the examples; example ``i`` is ``tuple(a[i] for a in arrays)``). The
DataLoader then gathers each batch with one fancy-index take per array instead of a Python loop.
"""
import math

import numpy

from .. import backend
from ..tensor import Tensor


class Dataset:
    """Base class of map-style data sets: ``len(dataset)`` examples, ``dataset[i]`` is one example."""

    def __len__(self):
        raise NotImplementedError(f"{type(self).__name__} must implement __len__")

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must implement __getitem__")


def _host_array(value, position):
    if isinstance(value, Tensor):
        value = value.data
    array = backend.to_host(value) if backend.is_array(value) else backend.host_array_from_data(value)
    if array.ndim == 0:
        raise ValueError(f"TensorDataset: argument {position} is a scalar; every argument needs a first "
                         "axis that indexes the examples")
    return array


class TensorDataset(Dataset):
    """Examples taken along the first axis of tensors or arrays (kept on the host).

    ``TensorDataset(x, t)[i] == (x[i], t[i])``; all arguments need the same first dimension.
    """

    def __init__(self, *tensors):
        if not tensors:
            raise ValueError("TensorDataset needs at least one tensor or array")
        arrays = tuple(_host_array(value, k) for k, value in enumerate(tensors))
        lengths = [len(a) for a in arrays]
        if len(set(lengths)) > 1:
            shapes = ", ".join(str(a.shape) for a in arrays)
            raise ValueError(f"TensorDataset: the first dimensions must agree (one per example), got shapes {shapes}")
        self.arrays = arrays

    def __len__(self):
        return len(self.arrays[0])

    def __getitem__(self, index):
        return tuple(a[index] for a in self.arrays)


class Subset(Dataset):
    """The examples of ``dataset`` at ``indices``, in that order."""

    def __init__(self, dataset, indices):
        indices = numpy.asarray(indices, dtype=numpy.int64).reshape(-1)
        n = len(dataset)
        if indices.size and (indices.min() < -n or indices.max() >= n):
            raise IndexError(f"Subset: indices must lie in [{-n}, {n}) for a data set of {n} examples, "
                             f"got values from {indices.min()} to {indices.max()}")
        self.dataset = dataset
        self.indices = indices % n if n else indices

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, index):
        return self.dataset[int(self.indices[index])]


def array_source(dataset):
    """``(arrays, indices)`` for a data set backed by host arrays, seeing through Subsets, else None.

    Example ``i`` of ``dataset`` is row ``indices[i]`` of each array (``indices`` None: row ``i``).
    A data set with a ``transform`` or ``target_transform`` is gathered item by item, never from its arrays.
    """
    indices = None
    while isinstance(dataset, Subset):
        indices = dataset.indices if indices is None else dataset.indices[indices]
        dataset = dataset.dataset
    arrays = getattr(dataset, "arrays", None)
    transformed = any(getattr(dataset, name, None) is not None for name in ("transform", "target_transform"))
    return None if arrays is None or transformed else (arrays, indices)


def _split_lengths(lengths, n):
    lengths = list(lengths)
    if lengths and all(isinstance(x, float) for x in lengths):
        if any(x < 0 for x in lengths) or not math.isclose(sum(lengths), 1.0, abs_tol=1e-6):
            raise ValueError(f"random_split: fractions must be non-negative and sum to 1, got {lengths}")
        counts = [int(math.floor(n * x)) for x in lengths]
        for k in range(n - sum(counts)):  # the remainder goes round-robin, as in PyTorch
            counts[k % len(counts)] += 1
        return counts
    if not all(isinstance(x, (int, numpy.integer)) and x >= 0 for x in lengths):
        raise ValueError(f"random_split: lengths must be non-negative ints (or fractions summing to 1), got {lengths}")
    if sum(lengths) != n:
        raise ValueError(f"random_split: lengths {lengths} sum to {sum(lengths)}, "
                         f"but the data set has {n} examples")
    return [int(x) for x in lengths]


def random_split(dataset, lengths, seed=0):
    """Split ``dataset`` into disjoint random Subsets of the given ``lengths``.

    ``lengths`` are example counts summing to ``len(dataset)`` or fractions summing to 1 (floored,
    the remainder spread one by one over the first parts, as in PyTorch). The same ``seed`` gives
    the same split.
    """
    n = len(dataset)
    counts = _split_lengths(lengths, n)
    order = numpy.random.default_rng(seed).permutation(n)
    bounds = numpy.cumsum([0] + counts)
    return [Subset(dataset, order[start:stop]) for start, stop in zip(bounds[:-1], bounds[1:])]
