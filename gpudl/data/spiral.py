"""The synthetic spiral data set (CS231n, DeZero): interleaved 2-D spiral arms, one per class.

Too curly for a linear classifier, easy for a small MLP: the classic first test of a network.
"""
import numpy

from .dataset import TensorDataset


def spiral(n_per_class=100, n_classes=3, noise=0.2, seed=0):
    """``(x, t)``: ``n_per_class * n_classes`` points ``x`` (float32 [N, 2]) and labels ``t`` (int64 [N]).

    Point ``i`` of arm ``j`` lies at radius ``r = i / n_per_class`` and angle ``4 j + 4 r`` plus
    Gaussian noise of standard deviation ``noise`` (as in DeZero); the points are grouped by class.
    """
    if n_per_class < 1 or n_classes < 1:
        raise ValueError(f"spiral: n_per_class and n_classes must be >= 1, got {n_per_class} and {n_classes}")
    if noise < 0:
        raise ValueError(f"spiral: noise must be >= 0, got {noise}")
    rng = numpy.random.default_rng(seed)
    radius = numpy.arange(n_per_class) / n_per_class                       # [n]
    arm = numpy.arange(n_classes)[:, None]                                  # [k, 1]
    angle = 4.0 * arm + 4.0 * radius + noise * rng.standard_normal((n_classes, n_per_class))
    x = numpy.stack([radius * numpy.sin(angle), radius * numpy.cos(angle)], axis=-1).reshape(-1, 2)
    t = numpy.repeat(numpy.arange(n_classes, dtype=numpy.int64), n_per_class)
    return x.astype(numpy.float32), t


class Spiral(TensorDataset):
    """The spiral data set as a TensorDataset of ``(x, t)``; arguments as ``spiral``."""

    def __init__(self, n_per_class=100, n_classes=3, noise=0.2, seed=0):
        super().__init__(*spiral(n_per_class, n_classes, noise, seed))
