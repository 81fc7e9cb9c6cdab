"""dtype discipline (NEP 50): an op's outputs and gradients have its inputs' float dtype.

Runs every case of the op table (test_ops_gradcheck.OP_CASES) in float16, float32 and float64;
Python and NumPy scalars in the cases (``2.5 * x``, ``np.float32(2) * x``, ``x ** 0.5``) must
never change the dtype. Also the defaults of tensor creation and float16's float32 accumulation.
"""
import numpy as np
import pytest

import gpudl as gd
from test_ops_gradcheck import CASE_IDS, OP_CASES, as_outputs, case_arrays

FLOAT_DTYPES = [np.float16, np.float32, np.float64]
TOLERANCE = {np.float16: 2e-2, np.float32: 1e-5, np.float64: 1e-12}


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", OP_CASES, ids=CASE_IDS)
def test_outputs_and_gradients_keep_the_input_dtype(case, dtype, device):
    arrays = [a.astype(dtype) for a in case_arrays(case)]
    inputs = [gd.tensor(a, device=device, requires_grad=True) for a in arrays]
    outputs = as_outputs(case.fn(gd, *inputs))
    for out, ref in zip(outputs, as_outputs(case.reference(*[a.astype(np.float64) for a in arrays]))):
        assert out.dtype == dtype, f"{case.id}: output is {out.dtype} for {np.dtype(dtype).name} inputs"
        tol = TOLERANCE[dtype]
        np.testing.assert_allclose(out.numpy().astype(np.float64), ref, rtol=tol, atol=tol)
    grads = gd.autograd.grad(outputs, inputs, grad_outputs=[gd.ones_like(o) for o in outputs])
    for k, g in enumerate(grads):
        assert g.dtype == dtype, f"{case.id}: gradient of input {k} is {g.dtype} for {np.dtype(dtype).name} inputs"
        assert g.shape == inputs[k].shape


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_leaf_grad_keeps_dtype_through_backward(dtype, device):
    x = gd.tensor(np.linspace(0.5, 1.5, 6).reshape(2, 3).astype(dtype), device=device, requires_grad=True)
    ((x * 2.0 + 1) ** 2 / 3.0).mean().backward()
    assert x.grad.dtype == dtype


@pytest.mark.parametrize("scalar", [2, 2.5, True, np.float32(2), np.float64(2), np.int64(2)],
                         ids=["int", "float", "bool", "np.float32", "np.float64", "np.int64"])
def test_python_and_numpy_scalars_never_widen_float32(scalar, device):
    x = gd.ones(3, device=device, requires_grad=True)
    for result in (x * scalar, scalar * x, x + scalar, scalar - x, x / scalar, x ** scalar,
                   gd.maximum(x, scalar), gd.where(x > 0, x, scalar)):
        assert result.dtype == np.float32


def test_ndarray_operand_stays_in_gpudl_and_follows_array_promotion():
    x = gd.ones(3, requires_grad=True, device="cpu")  # NumPy operands live on the host
    same = np.ones(3, dtype=np.float32) * x
    assert isinstance(same, gd.Tensor) and same.dtype == np.float32 and same.grad_fn is not None
    wider = np.ones(3, dtype=np.float64) * x  # arrays are not weak: float64 array with float32 gives float64
    assert isinstance(wider, gd.Tensor) and wider.dtype == np.float64


def test_tensor_creation_dtypes():
    assert gd.tensor(1.5).dtype == np.float32
    assert gd.tensor([1.0, 2.0]).dtype == np.float32
    assert gd.tensor([[1, 2], [3, 4]]).dtype == np.int64
    assert gd.tensor([True, False]).dtype == np.bool_
    for dt in (np.float16, np.float64, np.int32, np.uint8):
        assert gd.tensor(np.zeros(2, dtype=dt)).dtype == dt
    assert gd.tensor([1, 2], dtype="float64").dtype == np.float64
    assert gd.tensor(np.zeros(2), dtype=gd.float16).dtype == np.float16
    assert gd.tensor([1.0], dtype="double").dtype == np.float64


@pytest.mark.parametrize("spec", ["float32", np.float32, np.dtype("float32"), gd.float32, "float"])
def test_dtype_specs_are_accepted_everywhere(spec, device):
    assert gd.zeros(2, dtype=spec, device=device).dtype == np.float32
    assert gd.tensor([1, 2], dtype=spec, device=device).dtype == np.float32
    assert gd.ones(2, dtype="float64", device=device).astype(spec).dtype == np.float32


def test_unknown_dtype_is_a_clear_error():
    with pytest.raises(TypeError, match="unknown dtype"):
        gd.zeros(2, dtype="floaty")


def test_float16_reductions_accumulate_in_float32(device):
    ones = gd.ones(5000, dtype="float16", device=device)
    assert ones.sum().item() == 5000 and ones.sum().dtype == np.float16
    values = np.full(4000, 1000, dtype=np.float16)
    values[::2] += 1  # the float16 sum of squares of these would overflow
    x = gd.tensor(values, device=device)
    assert x.var().item() == pytest.approx(0.25)
    assert x.std().dtype == np.float16
    big = gd.tensor(np.array([0.0, 10.0, 11.0], dtype=np.float16), device=device)  # exp(11) overflows float16
    np.testing.assert_allclose(big.softmax().numpy(), np.exp([-11, -1, 0]) / np.exp([-11, -1, 0]).sum(), rtol=1e-3)
    assert big.logsumexp().item() == pytest.approx(11.3133, rel=1e-3)


def test_astype_is_differentiable_between_float_dtypes(device):
    x = gd.tensor([1.0, 2.0], device=device, requires_grad=True)
    y = x.astype("float64")
    assert y.dtype == np.float64
    (y * y).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 4.0])
    assert x.double().dtype == np.float64 and x.half().dtype == np.float16 and x.double().float().dtype == np.float32
    as_int = x.long()
    assert as_int.dtype == np.int64 and not as_int.requires_grad
