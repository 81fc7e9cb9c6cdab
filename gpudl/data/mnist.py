"""MNIST and Fashion-MNIST from their four IDX files (raw or ``.gz``); no downloading.

The data folder is ``root=``, else ``$GPUDL_DATA``, else where the Debian/Ubuntu package puts it
(``apt-get install dataset-fashion-mnist``: ``/usr/share/datasets/fashion-mnist/*.gz``). The files
may also sit in a subfolder named after the data set (``fashion-mnist/`` or ``mnist/``), so one
``GPUDL_DATA`` folder can hold both.
"""
import os

import numpy

from .dataset import TensorDataset
from .idx import DataError, read_idx

_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_ROWS = _COLS = 28
# How the messages tell a Python user to point at the data; the command line puts its own flag in its place.
ROOT_HINT = "pass root= or set GPUDL_DATA"


class _IdxImageDataset(TensorDataset):
    """28×28 grey-scale images with class labels 0..9, read from MNIST-format IDX files."""

    title = ""          # the data set's name in messages
    folder_name = ""    # its folder under /usr/share/datasets and GPUDL_DATA
    mean = std = 0.0    # per-pixel statistics of the training images, scaled to [0, 1]
    how_to_get = ""
    classes = ()

    def __init__(self, root=None, split=None, normalize=True, flatten=False, sequence=False, limit=None,
                 download=False, *, train=None, transform=None, target_transform=None):
        name = type(self).__name__
        if download:
            raise DataError(f"{name}: download=True: downloading is not supported (gpudl never uses the network); "
                            f"the files must already be on disk. {self.how_to_get}")
        split = self._split(name, split, train)
        for word, value in (("transform", transform), ("target_transform", target_transform)):
            if value is not None and not callable(value):
                raise TypeError(f"{name}: {word} must be callable, got {type(value).__name__}")
        self.transform, self.target_transform = transform, target_transform
        if flatten and sequence:
            raise ValueError(f"{name}: choose at most one of flatten=True ([N, 784]) and sequence=True ([N, 28, 28])")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, numpy.integer)) or limit < 0):
            raise ValueError(f"{name}: limit must be None or a non-negative integer, got {limit!r}")
        self.root = self._data_folder(root)
        self.split = split
        images_file, labels_file = (self._find(stem) for stem in _FILES[split])
        images = read_idx(images_file, ndim=3, hint=self.how_to_get)
        labels = read_idx(labels_file, ndim=1, hint=self.how_to_get)
        self._check(images_file, images, labels_file, labels)
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        pixels = self._pixel_values(normalize)[images]  # one pass over the bytes, no float temporaries
        shape = (-1, _ROWS * _COLS) if flatten else (-1, _ROWS, _COLS) if sequence else (-1, 1, _ROWS, _COLS)
        super().__init__(pixels.reshape(shape), labels.astype(numpy.int64))

    @staticmethod
    def _split(name, split, train):
        """``"train"``/``"test"`` from ``split=`` or torchvision's ``train=`` (a bool, also as the second
        positional argument)."""
        if isinstance(split, bool):
            split, train = None, split if train is None else train
        if train is not None and not isinstance(train, bool):
            raise TypeError(f"{name}: train must be True or False, got {train!r}")
        chosen = None if train is None else "train" if train else "test"
        if split is not None and chosen is not None and split != chosen:
            raise ValueError(f"{name}: split={split!r} contradicts train={train}; pass one of them")
        split = split or chosen or "train"
        if split not in _FILES:
            raise ValueError(f"{name}: split must be 'train' or 'test', got {split!r}")
        return split

    def __getitem__(self, index):
        image, target = super().__getitem__(index)
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(int(target))
        return image, target

    def _pixel_values(self, normalize):
        """The float32 value of each of the 256 grey levels: scaled to [0, 1], then standardised."""
        values = numpy.arange(256, dtype=numpy.float32) / numpy.float32(255)
        return (values - numpy.float32(self.mean)) / numpy.float32(self.std) if normalize else values

    @property
    def images(self) -> numpy.ndarray:
        """All images as one float32 host array ([N, 1, 28, 28], [N, 784] or [N, 28, 28])."""
        return self.arrays[0]

    @property
    def targets(self) -> numpy.ndarray:
        """All labels (0..9) as one int64 host array [N]."""
        return self.arrays[1]

    def _data_folder(self, root):
        if root is not None:
            return os.fspath(root)
        return os.environ.get("GPUDL_DATA") or os.path.join("/usr/share/datasets", self.folder_name)

    def _find(self, stem):
        folders = (os.path.join(self.root, self.folder_name), self.root)
        candidates = [os.path.join(folder, stem + suffix) for folder in folders for suffix in ("", ".gz")]
        for path in candidates:
            if os.path.isfile(path):
                return path
        raise DataError(f"{self.title} file {stem}(.gz) not found in {self.root} (looked for "
                        f"{', '.join(candidates)}). {self.how_to_get}")

    def _check(self, images_file, images, labels_file, labels):
        if images.dtype != numpy.uint8:
            raise DataError(f"{images_file}: expected unsigned bytes (IDX type 0x08) for pixels, the file holds "
                            f"{images.dtype}. {self.how_to_get}")
        if labels.dtype.kind not in "iu":
            raise DataError(f"{labels_file}: expected integer labels, the file holds {labels.dtype}. {self.how_to_get}")
        if images.shape[1:] != (_ROWS, _COLS):
            raise DataError(f"{images_file}: expected {_ROWS}x{_COLS} images, the file holds images of "
                            f"{images.shape[1]}x{images.shape[2]}. {self.how_to_get}")
        if len(images) != len(labels):
            raise DataError(f"{images_file} holds {len(images)} images but {labels_file} holds {len(labels)} "
                            f"labels; the files do not belong together. {self.how_to_get}")
        if labels.size and (labels.min() < 0 or labels.max() >= len(self.classes)):
            raise DataError(f"{labels_file}: labels must lie in 0..{len(self.classes) - 1}, found values from "
                            f"{labels.min()} to {labels.max()}. {self.how_to_get}")

    def __repr__(self):
        return (f"{type(self).__name__}(split={self.split!r}, {len(self)} examples, images "
                f"{list(self.images.shape)} {self.images.dtype}, from {self.root})")


class FashionMNIST(_IdxImageDataset):
    """Fashion-MNIST (Zalando): 60,000 training and 10,000 test images of 10 kinds of clothing.

    ``split``: ``"train"`` or ``"test"``; torchvision's form ``FashionMNIST(root, train=True,
    transform=None, target_transform=None, download=False)`` works too (``download=True`` is an
    error: nothing is fetched). ``transform`` gets each image as the float32 array described below,
    ``target_transform`` each label as an int; with either, the DataLoader gathers example by example.
    Images are float32 scaled to [0, 1] and, with ``normalize=True``, standardised with the training
    set's mean 0.2860 and std 0.3530. Shapes: ``[N, 1, 28, 28]``, ``[N, 784]`` with ``flatten=True``,
    ``[N, 28, 28]`` (28 steps of 28 features, for recurrent models) with ``sequence=True``. Labels
    are int64 0..9 (names in ``classes``).
    ``limit=n`` keeps only the first n examples.
    """

    title = "Fashion-MNIST"
    folder_name = "fashion-mnist"
    mean, std = 0.2860, 0.3530
    how_to_get = ("To get the data: apt-get install dataset-fashion-mnist, or download the four IDX files from the "
                  f"Fashion-MNIST project (github.com/zalandoresearch/fashion-mnist) and {ROOT_HINT}.")
    classes = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot")


class MNIST(_IdxImageDataset):
    """MNIST hand-written digits: 60,000 training and 10,000 test images, labels 0..9.

    Same options as ``FashionMNIST``; normalised with MNIST's mean 0.1307 and std 0.3081.
    """

    title = "MNIST"
    folder_name = "mnist"
    mean, std = 0.1307, 0.3081
    how_to_get = ("To get the data: download the four IDX files of MNIST (train-images-idx3-ubyte.gz, "
                  "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) and "
                  f"{ROOT_HINT}.")
    classes = tuple(str(digit) for digit in range(10))
