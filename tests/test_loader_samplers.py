"""DataLoader(sampler=..., batch_sampler=...) and the samplers, with PyTorch's semantics."""
import numpy as np
import pytest

from gpudl.data import (BatchSampler, DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler,
                        SubsetRandomSampler, TensorDataset)


def _ids_dataset(n):
    ids = np.arange(n)
    return TensorDataset(ids.astype(np.float32), ids % 3)


def _ids(loader):
    return [x.numpy().astype(int).tolist() for x, _ in loader]


class _Reversed(Sampler):
    """A user sampler: the indices backwards, remembering the epoch it was told."""

    def __init__(self, n):
        self.n, self.epoch = n, None

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        return iter(range(self.n - 1, -1, -1))

    def __len__(self):
        return self.n


class _Items(Dataset):
    """A generic data set (no .arrays), to run the item-by-item path."""

    def __len__(self):
        return 7

    def __getitem__(self, i):
        return np.float32(i), i


def test_sequential_and_batch_sampler_follow_pytorch():
    assert list(SequentialSampler(range(5))) == [0, 1, 2, 3, 4]
    assert list(BatchSampler(SequentialSampler(range(7)), 3, drop_last=False)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(BatchSampler(range(7), 3, drop_last=True)) == [[0, 1, 2], [3, 4, 5]]
    assert len(BatchSampler(range(7), 3, False)) == 3 and len(BatchSampler(range(7), 3, True)) == 2


def test_random_sampler_is_a_seeded_permutation_per_epoch():
    sampler = RandomSampler(range(20), seed=4)
    first = list(sampler)
    assert sorted(first) == list(range(20)) and first != list(range(20))
    assert list(sampler) == first                 # same epoch, same order
    sampler.set_epoch(1)
    assert sorted(list(sampler)) == list(range(20)) and list(sampler) != first
    assert list(RandomSampler(range(20), seed=4)) == first
    with_replacement = list(RandomSampler(range(5), replacement=True, num_samples=50))
    assert len(with_replacement) == 50 and set(with_replacement) <= set(range(5)) and len(set(with_replacement)) > 1
    repeated = list(RandomSampler(range(4), num_samples=10))   # without replacement: whole permutations repeat
    assert sorted(repeated[:4]) == sorted(repeated[4:8]) == [0, 1, 2, 3] and len(repeated) == 10
    with pytest.raises(ValueError, match="RandomSampler: num_samples must be a positive integer, got 0"):
        RandomSampler(range(4), num_samples=0)


def test_subset_random_sampler_visits_its_indices():
    sampler = SubsetRandomSampler([10, 11, 12, 13], seed=1)
    assert sorted(sampler) == [10, 11, 12, 13] and len(sampler) == 4


def test_loader_with_a_sampler(device):
    sampler = _Reversed(10)
    loader = DataLoader(_ids_dataset(10), batch_size=4, sampler=sampler, device=device)
    assert _ids(loader) == [[9, 8, 7, 6], [5, 4, 3, 2], [1, 0]] and len(loader) == 3
    assert sampler.epoch is None              # iter() leaves a user's sampler's epoch alone, as in PyTorch
    loader.set_epoch(3)
    assert sampler.epoch == 3                 # ... but loader.set_epoch passes it on (gpudl.train.fit calls it)
    assert _ids(DataLoader(_ids_dataset(10), batch_size=4, sampler=_Reversed(10), drop_last=True)) == \
        [[9, 8, 7, 6], [5, 4, 3, 2]]


def test_loader_with_a_batch_sampler_on_both_paths(device):
    batches = [[3, 1], [0], [2, 4, 5]]
    for dataset in (_ids_dataset(6), _Items()):
        loader = DataLoader(dataset, batch_sampler=batches, device=device)
        got = [x.numpy().astype(int).tolist() for x, _ in loader]
        assert got == batches and len(loader) == 3 and loader.batch_size is None
        assert all(t.dtype == np.int64 and t.device == device for _, t in loader)


def test_shuffled_loader_keeps_its_seeded_order_and_resumes():
    ids = np.arange(30)
    expected = [np.random.default_rng([5, epoch]).permutation(30) for epoch in range(3)]
    loader = DataLoader(_ids_dataset(30), batch_size=30, shuffle=True, seed=5)
    for epoch in range(3):
        assert _ids(loader) == [ids[expected[epoch]].tolist()]
    resumed = DataLoader(_ids_dataset(30), batch_size=30, shuffle=True, seed=5)
    resumed.set_epoch(2)
    assert _ids(resumed) == [ids[expected[2]].tolist()]


def test_sampler_argument_errors():
    data = _ids_dataset(5)
    with pytest.raises(ValueError, match="sampler= is mutually exclusive with shuffle=True"):
        DataLoader(data, sampler=SequentialSampler(data), shuffle=True)
    for kwargs in (dict(batch_size=2), dict(shuffle=True), dict(sampler=range(5)), dict(drop_last=True)):
        with pytest.raises(ValueError, match="batch_sampler= is mutually exclusive with batch_size="):
            DataLoader(data, batch_sampler=[[0]], **kwargs)
    with pytest.raises(IndexError, match="the sampler gave indices from 0 to 9, but the data set has 5 examples"):
        list(DataLoader(data, batch_sampler=[[0, 9]]))
    with pytest.raises(ValueError, match="BatchSampler: batch_size must be a positive integer, got -1"):
        BatchSampler(range(3), -1, False)


def test_collate_fn_and_accepted_pytorch_arguments(device):
    import gpudl

    def pad_collate(examples):       # variable-length sequences padded to the longest, as PyTorch scripts do
        longest = max(len(seq) for seq, _ in examples)
        padded = np.zeros((len(examples), longest), dtype=np.float32)
        for row, (seq, _) in enumerate(examples):
            padded[row, :len(seq)] = seq
        return gpudl.tensor(padded, device=device), gpudl.tensor([label for _, label in examples], device=device)

    class Ragged(Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return np.arange(1, i + 2, dtype=np.float32), i % 2

    for workers in (0, 2):
        loader = DataLoader(Ragged(), batch_size=2, collate_fn=pad_collate, num_workers=workers, pin_memory=True,
                            persistent_workers=workers > 0)
        shapes = [(x.shape, t.tolist()) for x, t in loader]
        assert shapes == [((2, 2), [0, 1]), ((2, 4), [0, 1]), ((1, 5), [0])]
    with pytest.raises(TypeError, match="DataLoader: collate_fn must be callable, got int"):
        DataLoader(Ragged(), collate_fn=3)
