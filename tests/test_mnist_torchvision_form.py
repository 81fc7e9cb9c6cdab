"""FashionMNIST/MNIST in torchvision's form: (root, train=True, transform=..., target_transform=..., download=False)."""
import numpy as np
import pytest

from gpudl.data import MNIST, DataError, DataLoader, FashionMNIST, write_idx


def _fake_root(folder, n_train=10, n_test=4):
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        pixels = (np.arange(n * 784) % 256).astype(np.uint8).reshape(n, 28, 28)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", pixels)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", (np.arange(n) % 10).astype(np.uint8))
    return folder


def test_train_flag_positional_and_keyword(tmp_path):
    root = _fake_root(tmp_path)
    assert len(FashionMNIST(root, train=True)) == 10 and len(FashionMNIST(root, train=False)) == 4
    assert len(FashionMNIST(root, False)) == 4 and FashionMNIST(root, False).split == "test"
    assert len(MNIST(root=root, split="test")) == 4 and len(MNIST(root)) == 10     # today's form still works
    assert FashionMNIST(root, split="test", train=False).split == "test"
    with pytest.raises(ValueError, match="FashionMNIST: split='train' contradicts train=False"):
        FashionMNIST(root, split="train", train=False)
    with pytest.raises(TypeError, match="MNIST: train must be True or False, got 'yes'"):
        MNIST(root, train="yes")


def test_transforms_apply_per_example_and_through_the_loader(tmp_path, device):
    root = _fake_root(tmp_path)
    plain = FashionMNIST(root, train=True)
    flipped = FashionMNIST(root, train=True, transform=lambda image: image[:, ::-1, :] * 2,
                           target_transform=lambda label: label + 100)
    image, label = flipped[3]
    np.testing.assert_array_equal(image, plain.images[3][:, ::-1, :] * 2)
    assert label == 103
    x, t = next(iter(DataLoader(flipped, batch_size=4, device=device)))
    np.testing.assert_allclose(x.numpy(), plain.images[:4][:, :, ::-1, :] * 2)
    assert t.tolist() == [100, 101, 102, 103] and t.dtype == np.int64 and x.device == device
    with pytest.raises(TypeError, match="FashionMNIST: transform must be callable, got int"):
        FashionMNIST(root, transform=3)


def test_download_true_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="FashionMNIST: download=True: downloading is not supported .*apt-get install"):
        FashionMNIST(_fake_root(tmp_path), train=True, download=True)
