"""The affine map of ``nn.Linear`` as one Function, and ``gemm``, the matrix product the layers share."""
from .. import backend as _backend
from ..autograd.function import Function
from ..backend import blas
from ._util import accumulation_dtype


def gemm(xp, a, b, out=None):
    """``a @ b`` (2-D or batched), written into ``out`` if given.

    float16 operands are multiplied in float32 and the product rounded once, since float16 is for
    storage and matrix products accumulate in float32. On the CPU the product comes from the GEMM
    provider ``backend.blas`` chose (NumPy's BLAS or MKL, ``GPUDL_BLAS``).
    """
    matmul = blas.matmul if xp is _backend.NUMPY.xp else xp.matmul
    if a.dtype == _backend.float16:
        product = matmul(a.astype(_backend.float32), b.astype(_backend.float32))
        if out is None:
            return product.astype(_backend.float16)
        out[...] = product
        return out
    if a.ndim == 2 and a.shape[1] == 1:  # an outer product (batch 1's weight gradient): NumPy's matmul
        return xp.multiply(a, b, out=out)  # takes a slow non-BLAS loop for it, ~10x slower than this
    return matmul(a, b) if out is None else matmul(a, b, out=out)


class Linear(Function):
    """``x @ weight.T + bias`` for ``x`` of shape [*, in]; weight [out, in] as in PyTorch.

    The leading dimensions of ``x`` are flattened, so every product, including the weight
    gradient over the whole batch, is one 2-D GEMM.
    """

    private_grads = True  # fresh GEMM and sum results

    def forward(self, x, weight, bias):
        xp = self.xp
        x2 = x.reshape(-1, x.shape[-1])
        out = gemm(xp, x2, weight.T)
        if bias is not None:
            out += bias
        self.saved = (x, weight)
        return out.reshape(x.shape[:-1] + (weight.shape[0],))

    def backward(self, g):
        x, weight = self.saved
        xp = self.xp
        g2 = g.reshape(-1, weight.shape[0])
        gx = gw = gb = None
        if self.needs_input_grad[0]:
            gx = gemm(xp, g2, weight).reshape(x.shape)
        if self.needs_input_grad[1]:
            gw = gemm(xp, g2.T, x.reshape(-1, x.shape[-1]))
        if self.needs_input_grad[2]:
            gb = g2.sum(axis=0, dtype=accumulation_dtype(g2.dtype))
        return gx, gw, gb


def linear(input, weight, bias=None):
    """``input @ weight.T + bias`` (PyTorch's ``F.linear``): input [*, in], weight [out, in], bias [out] or None."""
    w, x = weight.data, input.data  # the arrays' own attributes: this runs once per layer and step
    if w.ndim != 2:
        raise ValueError(f"linear: weight must be 2-D [out_features, in_features], got shape {weight.shape}")
    if x.ndim == 0 or x.shape[-1] != w.shape[1]:
        raise ValueError(f"linear: input of shape {input.shape} does not end in in_features={w.shape[1]} "
                         f"(weight shape {weight.shape})")
    if bias is not None and bias.data.shape != w.shape[:1]:
        raise ValueError(f"linear: bias must have shape ({w.shape[0]},), got {bias.shape}")
    if x.dtype != w.dtype or (bias is not None and bias.data.dtype != w.dtype):
        check_same_dtype("linear", input, weight, bias)
    return Linear().apply(input, weight, bias)


def check_same_dtype(op, input, weight, bias):
    """Raise if the input's dtype differs from the parameters' (no silent promotion to float64)."""
    for name, tensor in (("weight", weight), ("bias", bias)):
        if tensor is not None and tensor.dtype != input.dtype:
            raise TypeError(f"{op}: input has dtype {input.dtype} but {name} has dtype {tensor.dtype}; "
                            f"convert the input (e.g. x.astype({str(tensor.dtype)!r})) or the module "
                            f"(module.to({str(input.dtype)!r}))")
