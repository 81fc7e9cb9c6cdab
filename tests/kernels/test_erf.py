"""gpudl's NumPy erf/erfc (Cody's rational approximations) against Python's math.erf/erfc."""
import math

import numpy as np
import pytest

from gpudl.backend.erf import erf, erfc


def ulps(actual, expected):
    spacing = np.spacing(np.abs(np.asarray(expected, dtype=np.float64)))
    spacing = np.maximum(spacing, np.finfo(np.float64).tiny)
    return np.abs(actual - expected) / spacing


POINTS = np.concatenate([np.linspace(-6, 6, 20001), np.geomspace(1e-300, 1e-3, 200),
                         -np.geomspace(1e-300, 1e-3, 200), [0.0, -0.0, 0.5, -0.5, 4.0, -4.0, 26.5, 27.0, 40.0]])


def test_erf_is_within_3_ulp_of_math_erf():
    expected = np.array([math.erf(v) for v in POINTS])
    assert ulps(erf(POINTS), expected).max() <= 3


def test_erfc_is_within_7_ulp_where_it_does_not_underflow():
    points = POINTS[POINTS < 26]
    expected = np.array([math.erfc(v) for v in points])
    assert ulps(erfc(points), expected).max() <= 7


@pytest.mark.parametrize("value, expected", [(np.inf, 1.0), (-np.inf, -1.0), (0.0, 0.0)])
def test_erf_limits(value, expected):
    assert erf(np.array([value]))[0] == expected


def test_erf_propagates_nan_and_keeps_sign_of_zero():
    out = erf(np.array([np.nan, -0.0]))
    assert np.isnan(out[0])
    assert out[1] == 0 and np.signbit(out[1])


def test_erf_is_odd():
    x = np.linspace(0, 5, 1001)
    np.testing.assert_array_equal(erf(-x), -erf(x))
