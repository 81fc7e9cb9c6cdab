"""Data sets, random_split, the DataLoader, MNIST/Fashion-MNIST (fake and real files) and spirals."""
import os

import numpy as np
import pytest

import gpudl
from gpudl.data import (MNIST, DataError, DataLoader, Dataset, FashionMNIST, Spiral, Subset, TensorDataset,
                        random_split, spiral, write_idx)


def _ids_dataset(n=23):
    """Example i is (x = [i, -i] as float32, t = i % 5 as int32), so a batch says which examples it holds."""
    ids = np.arange(n)
    return TensorDataset(np.stack([ids, -ids], axis=1).astype(np.float32), (ids % 5).astype(np.int32))


def _epoch_ids(loader):
    return [x.numpy()[:, 0].astype(int).tolist() for x, _ in loader]


# ----------------------------------------------------------------------------- TensorDataset, Subset
def test_tensor_dataset_items_and_inputs():
    ds = TensorDataset(gpudl.tensor([[1.0, 2.0], [3.0, 4.0]]), [7, 8])
    assert len(ds) == 2
    x, t = ds[1]
    np.testing.assert_array_equal(x, [3.0, 4.0])
    assert t == 8 and ds.arrays[1].dtype == np.int64 and ds.arrays[0].dtype == np.float32
    assert isinstance(ds.arrays[0], np.ndarray)


def test_tensor_dataset_errors():
    with pytest.raises(ValueError, match=r"first dimensions must agree .*\(3, 2\), \(4,\)"):
        TensorDataset(np.zeros((3, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="argument 1 is a scalar"):
        TensorDataset(np.zeros(3), np.float32(1))
    with pytest.raises(ValueError, match="at least one"):
        TensorDataset()


def test_dataset_base_requires_len_and_getitem():
    with pytest.raises(NotImplementedError, match="must implement __len__"):
        len(Dataset())


def test_subset_indices_and_errors():
    ds = _ids_dataset(10)
    sub = Subset(ds, [4, -1, 0])
    assert len(sub) == 3 and [int(sub[k][0][0]) for k in range(3)] == [4, 9, 0]
    with pytest.raises(IndexError, match=r"indices must lie in \[-10, 10\).*from 0 to 10"):
        Subset(ds, [0, 10])


# ----------------------------------------------------------------------------- random_split
def test_random_split_is_seeded_disjoint_and_complete():
    ds = _ids_dataset(50)
    parts = random_split(ds, [30, 15, 5], seed=3)
    assert [len(p) for p in parts] == [30, 15, 5]
    ids = np.concatenate([p.indices for p in parts])
    assert sorted(ids.tolist()) == list(range(50))
    again = random_split(ds, [30, 15, 5], seed=3)
    assert all(np.array_equal(a.indices, b.indices) for a, b in zip(parts, again))
    other = random_split(ds, [30, 15, 5], seed=4)
    assert not np.array_equal(parts[0].indices, other[0].indices)
    assert not np.array_equal(parts[0].indices, np.arange(30))


def test_random_split_fractions_follow_pytorch_rounding():
    assert [len(p) for p in random_split(_ids_dataset(10), [0.33, 0.33, 0.34])] == [4, 3, 3]
    assert [len(p) for p in random_split(_ids_dataset(10), [0.8, 0.2])] == [8, 2]


@pytest.mark.parametrize("lengths,message", [([3, 3], "sum to 6, but the data set has 10"),
                                             ([0.5, 0.6], "fractions must be non-negative and sum to 1"),
                                             ([12, -2], "non-negative ints")])
def test_random_split_bad_lengths(lengths, message):
    with pytest.raises(ValueError, match=message):
        random_split(_ids_dataset(10), lengths)


# ----------------------------------------------------------------------------- DataLoader
def test_loader_batches_dtype_shape_device(device):
    loader = DataLoader(_ids_dataset(23), batch_size=8, device=device)
    batches = list(loader)
    assert len(loader) == len(batches) == 3
    x, t = batches[0]
    assert isinstance(x, gpudl.Tensor) and isinstance(t, gpudl.Tensor)
    assert x.shape == (8, 2) and x.dtype == np.float32
    assert t.shape == (8,) and t.dtype == np.int64  # int32 targets arrive as int64
    assert x.device == device and t.device == device
    assert batches[-1][0].shape == (7, 2)
    np.testing.assert_array_equal(t.numpy(), np.arange(8) % 5)
    assert _epoch_ids(loader) == [list(range(0, 8)), list(range(8, 16)), list(range(16, 23))]  # no shuffle: in order


def test_loader_default_device_is_the_default_device():
    assert DataLoader(_ids_dataset(4)).device == gpudl.default_device()


def test_shuffle_visits_every_example_once_in_a_new_order_each_epoch():
    loader = DataLoader(_ids_dataset(23), batch_size=5, shuffle=True, seed=1)
    epochs = [sum(_epoch_ids(loader), []) for _ in range(3)]
    for ids in epochs:
        assert sorted(ids) == list(range(23))
    assert epochs[0] != epochs[1] != epochs[2] and epochs[0] != list(range(23))
    assert loader.epoch == 3


def test_same_seed_same_batches_other_seed_other_batches():
    make = lambda seed: DataLoader(_ids_dataset(40), batch_size=6, shuffle=True, seed=seed)  # noqa: E731
    a, b, c = make(7), make(7), make(8)
    for _ in range(2):
        assert _epoch_ids(a) == _epoch_ids(b)
    assert _epoch_ids(make(7)) != _epoch_ids(c)


def test_set_epoch_resumes_the_sequence():
    full = DataLoader(_ids_dataset(30), batch_size=4, shuffle=True, seed=5)
    epochs = [_epoch_ids(full) for _ in range(4)]
    resumed = DataLoader(_ids_dataset(30), batch_size=4, shuffle=True, seed=5)
    resumed.set_epoch(2)
    assert [_epoch_ids(resumed), _epoch_ids(resumed)] == epochs[2:]
    with pytest.raises(ValueError, match="epoch must be >= 0"):
        resumed.set_epoch(-1)


def test_drop_last():
    loader = DataLoader(_ids_dataset(23), batch_size=5, shuffle=True, drop_last=True)
    ids = _epoch_ids(loader)
    assert len(loader) == len(ids) == 4 and all(len(batch) == 5 for batch in ids)
    assert len(set(sum(ids, []))) == 20
    assert len(DataLoader(_ids_dataset(20), batch_size=5, drop_last=True)) == 4
    assert len(DataLoader(_ids_dataset(3), batch_size=5, drop_last=True)) == 0
    assert len(DataLoader(_ids_dataset(3), batch_size=5)) == 1


class _NoItemAccess(TensorDataset):
    def __getitem__(self, index):
        raise AssertionError("the fast path must gather from .arrays, not item by item")


class _ItemDataset(Dataset):
    """A generic data set (no .arrays): items are (array, Python int)."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return np.array([i, -i], dtype=np.float32), i % 5


def test_fast_path_never_touches_items_and_matches_the_generic_path(device):
    ids = np.arange(17)
    fast = _NoItemAccess(np.stack([ids, -ids], axis=1).astype(np.float32), ids % 5)
    kwargs = dict(batch_size=4, shuffle=True, seed=2, device=device)
    for (xf, tf), (xg, tg) in zip(DataLoader(fast, **kwargs), DataLoader(_ItemDataset(17), **kwargs)):
        np.testing.assert_array_equal(xf.numpy(), xg.numpy())
        np.testing.assert_array_equal(tf.numpy(), tg.numpy())
        assert xg.dtype == np.float32 and tg.dtype == np.int64 and xg.device == device


def test_subsets_use_the_fast_path_through_nested_indices():
    ids = np.arange(40)
    base = _NoItemAccess(ids.astype(np.float32), ids)
    train, _ = random_split(base, [30, 10], seed=1)
    inner, _ = random_split(train, [0.5, 0.5], seed=2)
    (x, t), = DataLoader(inner, batch_size=15)
    expected = train.indices[inner.indices]
    np.testing.assert_array_equal(x.numpy(), expected)
    np.testing.assert_array_equal(t.numpy(), expected)


def test_generic_single_value_items_give_a_tensor():
    class Squares(Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return gpudl.tensor(float(i * i))

    batches = list(DataLoader(Squares(), batch_size=3, device="cpu"))
    assert isinstance(batches[0], gpudl.Tensor)
    np.testing.assert_array_equal(batches[1].numpy(), [9.0, 16.0])


def test_batches_are_copies_on_the_host():
    ds = _ids_dataset(6)
    x, _ = next(iter(DataLoader(ds, batch_size=6, device="cpu")))
    x.data[...] = 99
    assert ds.arrays[0][1, 0] == 1


def test_loader_argument_errors():
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        DataLoader(_ids_dataset(3), batch_size=0)
    with pytest.raises(TypeError, match="must have __len__ and __getitem__, got int"):
        DataLoader(5)


# ----------------------------------------------------------------------------- MNIST-format data sets (fake files)
def _fake_folder(folder, n_train=12, n_test=5, gz=True, labels=None, image_size=28):
    """Write the four IDX files of a tiny MNIST-format data set; pixel values cycle through 0..255."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        pixels = (np.arange(n * image_size * image_size) % 256).astype(np.uint8).reshape(n, image_size, image_size)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", pixels)
        split_labels = np.arange(n) % 10 if labels is None else labels
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", np.asarray(split_labels, dtype=np.uint8))
    return folder


def _expected_pixels(n, mean, std):
    values = (np.arange(n * 784) % 256).astype(np.float32) / np.float32(255)
    return (values - np.float32(mean)) / np.float32(std)


def test_fake_fashion_mnist_layouts_and_normalisation(tmp_path):
    root = _fake_folder(tmp_path)
    ds = FashionMNIST(root=root)
    assert len(ds) == 12 and ds.images.shape == (12, 1, 28, 28) and ds.images.dtype == np.float32
    np.testing.assert_allclose(ds.images.reshape(-1), _expected_pixels(12, 0.2860, 0.3530), rtol=1e-6, atol=1e-6)
    assert ds.targets.dtype == np.int64 and ds.targets.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert FashionMNIST(root=root, flatten=True).images.shape == (12, 784)
    assert FashionMNIST(root=root, sequence=True).images.shape == (12, 28, 28)
    raw = FashionMNIST(root=root, split="test", normalize=False, limit=3)
    assert raw.images.shape == (3, 1, 28, 28) and raw.images.min() == 0.0 and raw.images.max() == 1.0
    np.testing.assert_allclose(raw.images.reshape(-1), _expected_pixels(3, 0.0, 1.0), rtol=1e-6)
    assert len(FashionMNIST.classes) == 10 and FashionMNIST.classes[9] == "Ankle boot"
    image, target = ds[3]
    assert image.shape == (1, 28, 28) and target == 3


def test_fake_mnist_uses_its_own_statistics(tmp_path):
    ds = MNIST(root=_fake_folder(tmp_path), split="test", flatten=True)
    np.testing.assert_allclose(ds.images.reshape(-1), _expected_pixels(5, 0.1307, 0.3081), rtol=1e-6, atol=1e-6)


def test_uncompressed_files_in_a_named_subfolder_via_gpudl_data(tmp_path, monkeypatch):
    _fake_folder(tmp_path / "fashion-mnist", n_train=4, gz=False)
    monkeypatch.setenv("GPUDL_DATA", str(tmp_path))
    ds = FashionMNIST()
    assert len(ds) == 4 and ds.root == str(tmp_path)


def test_fake_data_through_the_loader(tmp_path, device):
    ds = FashionMNIST(root=_fake_folder(tmp_path))
    x, t = next(iter(DataLoader(ds, batch_size=8, shuffle=True, device=device)))
    assert x.shape == (8, 1, 28, 28) and x.dtype == np.float32 and t.dtype == np.int64 and x.device == device


def test_missing_file_names_it_and_says_how_to_get_it(tmp_path):
    _fake_folder(tmp_path)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DataError) as info:
        FashionMNIST(root=tmp_path, split="test")
    message = str(info.value)
    assert "t10k-labels-idx1-ubyte(.gz) not found in " + str(tmp_path) in message
    assert "apt-get install dataset-fashion-mnist" in message and "GPUDL_DATA" in message


def test_corrupt_file_names_it_and_says_how_to_get_it(tmp_path):
    _fake_folder(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    write_idx(path, np.zeros((12, 28), dtype=np.uint8))
    with pytest.raises(DataError, match="expected a 3-D array") as info:
        FashionMNIST(root=tmp_path)
    assert str(path) in str(info.value) and "apt-get install dataset-fashion-mnist" in str(info.value)


@pytest.mark.parametrize("kwargs,message", [
    (dict(labels=np.arange(12) % 11), "labels must lie in 0..9, found values from 0 to 10"),
    (dict(labels=np.zeros(7)), "holds 12 images but .* holds 7 labels"),
    (dict(image_size=14), "expected 28x28 images, the file holds images of 14x14"),
])
def test_inconsistent_files_are_errors(tmp_path, kwargs, message):
    with pytest.raises(DataError, match=message):
        FashionMNIST(root=_fake_folder(tmp_path, **kwargs))


def test_mnist_argument_errors(tmp_path):
    root = _fake_folder(tmp_path)
    with pytest.raises(ValueError, match="split must be 'train' or 'test', got 'valid'"):
        FashionMNIST(root=root, split="valid")
    with pytest.raises(ValueError, match="at most one of flatten=True"):
        FashionMNIST(root=root, flatten=True, sequence=True)
    with pytest.raises(ValueError, match="limit must be None or a non-negative integer"):
        FashionMNIST(root=root, limit=-1)
    with pytest.raises(DataError, match="downloading is not supported.*apt-get install"):
        FashionMNIST(root=root, download=True)


# ----------------------------------------------------------------------------- the real Fashion-MNIST
@pytest.fixture(scope="module")
def real_test_split():
    try:
        return FashionMNIST(split="test")
    except DataError as exc:
        if "not found" not in str(exc):
            raise
        folder = os.environ.get("GPUDL_DATA") or "/usr/share/datasets/fashion-mnist"
        pytest.skip(f"Fashion-MNIST not found at {folder}; apt-get install dataset-fashion-mnist")


def test_real_fashion_mnist_test_split(real_test_split):
    ds = real_test_split
    assert ds.images.shape == (10000, 1, 28, 28) and ds.images.dtype == np.float32
    assert abs(float(ds.images.mean())) < 0.02 and abs(float(ds.images.std()) - 1) < 0.02
    assert ds.targets.dtype == np.int64
    assert np.bincount(ds.targets).tolist() == [1000] * 10  # the test split is balanced


def test_real_fashion_mnist_train_split(real_test_split):
    ds = FashionMNIST(split="train", sequence=True, normalize=False)
    assert ds.images.shape == (60000, 28, 28)
    assert abs(float(ds.images.mean()) - 0.2860) < 1e-3 and abs(float(ds.images.std()) - 0.3530) < 1e-3
    assert np.bincount(ds.targets).tolist() == [6000] * 10


# ----------------------------------------------------------------------------- spiral
def test_spiral_shapes_and_geometry():
    x, t = spiral(n_per_class=50, n_classes=4, noise=0.0)
    assert x.shape == (200, 2) and x.dtype == np.float32 and t.dtype == np.int64
    assert np.bincount(t).tolist() == [50] * 4
    radius = np.hypot(x[:, 0], x[:, 1])
    np.testing.assert_allclose(radius[:50], np.arange(50) / 50, atol=1e-6)
    i, j = 30, 2
    angle = 4.0 * j + 4.0 * i / 50  # without noise point i of arm j sits at this angle
    np.testing.assert_allclose(x[j * 50 + i], [i / 50 * np.sin(angle), i / 50 * np.cos(angle)], rtol=1e-5)


def test_spiral_is_seeded():
    np.testing.assert_array_equal(spiral(seed=1)[0], spiral(seed=1)[0])
    assert not np.array_equal(spiral(seed=1)[0], spiral(seed=2)[0])
    ds = Spiral(n_per_class=10)
    assert len(ds) == 30 and ds.arrays[1].tolist() == [0] * 10 + [1] * 10 + [2] * 10
    with pytest.raises(ValueError, match="noise must be >= 0"):
        spiral(noise=-1)
