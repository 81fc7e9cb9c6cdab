"""The error function for NumPy arrays (NumPy has none; gpudl does not depend on SciPy).

W. J. Cody's rational Chebyshev approximations ("Rational Chebyshev approximations for the error
function", Math. Comp. 23 (1969) 631-637; the CALERF routine of SPECFUN), accurate to float64
rounding on three intervals of |x|: [0, 0.5], (0.5, 4], (4, inf). exp(-x^2) is evaluated as
exp(-r^2) exp(-(x - r)(x + r)) with r = x rounded down to 1/16, which keeps its relative error
small for large x.
"""
import numpy as np

_A = (3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02,
      3.20937758913846947e03, 1.85777706184603153e-1)
_B = (2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03,
      2.84423683343917062e03)
_C = (5.64188496988670089e-1, 8.88314979438837594e00, 6.61191906371416295e01,
      2.98635138197400131e02, 8.81952221241769090e02, 1.71204761263407058e03,
      2.05107837782607147e03, 1.23033935479799725e03, 2.15311535474403846e-8)
_D = (1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02,
      1.62138957456669019e03, 3.29079923573345963e03, 4.36261909014324716e03,
      3.43936767414372164e03, 1.23033935480374942e03)
_P = (3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1,
      1.60837851487422766e-2, 6.58749161529837803e-4, 1.63153871373020978e-2)
_Q = (2.56852019228982242e00, 1.87295284992346725e00, 5.27905102951428412e-1,
      6.05183413124413191e-2, 2.33520497626869185e-3)
_INV_SQRT_PI = 5.6418958354775628695e-1
_ERFC_ZERO = 26.543  # erfc(x) underflows to 0 beyond this


def _small(x):
    """erf(x) for |x| <= 0.5."""
    z = x * x
    num = _A[4] * z
    den = z.copy()
    for i in range(3):
        num += _A[i]
        num *= z
        den += _B[i]
        den *= z
    return x * (num + _A[3]) / (den + _B[3])


def _exp_minus_square(y):
    r = np.trunc(y * 16.0) / 16.0
    return np.exp(-r * r) * np.exp(-(y - r) * (y + r))


def _erfc_medium(y):
    """erfc(y) for 0.5 < y <= 4."""
    num = _C[8] * y
    den = y.copy()
    for i in range(7):
        num += _C[i]
        num *= y
        den += _D[i]
        den *= y
    return _exp_minus_square(y) * ((num + _C[7]) / (den + _D[7]))


def _erfc_large(y):
    """erfc(y) for y > 4 (0 beyond 26.543, also for inf)."""
    out = np.zeros_like(y)
    finite = y < _ERFC_ZERO
    y = y[finite]
    z = 1.0 / (y * y)
    num = _P[5] * z
    den = z.copy()
    for i in range(4):
        num += _P[i]
        num *= z
        den += _Q[i]
        den *= z
    r = z * (num + _P[4]) / (den + _Q[4])
    out[finite] = _exp_minus_square(y) * ((_INV_SQRT_PI - r) / y)
    return out


def _cody(x):
    """``x`` as float64, whether |x| <= 0.5, and erf(x) there / erfc(|x|) elsewhere (Cody's intervals)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.abs(x)
    small = y <= 0.5
    medium = (y > 0.5) & (y <= 4.0)
    large = y > 4.0
    values = np.empty_like(x)
    values[small] = _small(x[small])
    values[medium] = _erfc_medium(y[medium])
    values[large] = _erfc_large(y[large])
    return x, small, values


def erf(x):
    """Return erf(x) elementwise as float64 (NaN stays NaN, erf(+-inf) = +-1)."""
    x, small, values = _cody(x)
    out = np.where(small, values, (0.5 - values) + 0.5)
    np.copysign(out, x, out=out, where=~small)
    out[np.isnan(x)] = np.nan
    return out


def erfc(x):
    """Return erfc(x) = 1 - erf(x) elementwise as float64, accurate also where erf(x) is near 1."""
    x, small, values = _cody(x)
    out = np.where(small, 1.0 - values, values)
    negative = (x < 0) & ~small
    out[negative] = 2.0 - out[negative]
    out[np.isnan(x)] = np.nan
    return out
