"""Differentiable ops, each a ``Function`` with forward and backward side by side."""
from ._util import as_tensor_like
from .activation import elu, gelu, leaky_relu, relu, sigmoid, silu, softplus, tanh
from .arithmetic import add, div, matmul, mul, neg, pow, sub
from .dropout import dropout
from .loss import softmax_cross_entropy
from .compare import (all, any, argmax, argmin, eq, equal, ge, greater, greater_equal, gt, isfinite, isnan, le, less,
                      less_equal, logical_and, logical_not, logical_or, lt, ne, not_equal)
from .elementwise import abs, astype, clamp, clip, clone, exp, log, maximum, minimum, sqrt, to_device, where
from .indexing import getitem, index_data
from .cumulative import cumprod, cumsum
from .reduction import amax, amin, log_softmax, logsumexp, max, mean, min, prod, softmax, std, sum, var
from .selection import argsort, gather, median, return_types, sort, topk
from .torch_names import bmm, contiguous, is_tensor, masked_fill, mm, norm, numel, repeat, t
from .trigonometric import cos, sin
from .shape import (broadcast_to, cat, chunk, concat, expand, expand_dims, flatten, pad, permute, reshape, reshape_as,
                    split, squeeze, stack, swapaxes, transpose, unsqueeze, view, view_as)

__all__ = [
    "abs", "add", "all", "amax", "amin", "any", "argmax", "argmin", "argsort", "astype", "chunk", "cumprod", "cumsum",
    "gather", "median", "return_types", "sort", "topk", "eq", "ne", "lt", "le", "gt", "ge", "view_as", "reshape_as",
    "sin", "cos", "bmm", "contiguous", "is_tensor", "masked_fill", "mm", "norm", "numel", "repeat", "t",
    "broadcast_to", "cat", "clamp", "clip", "clone",
    "concat", "div", "dropout", "elu", "gelu", "leaky_relu", "relu", "sigmoid", "silu",
    "softmax_cross_entropy", "softplus", "tanh", "equal", "exp", "expand", "expand_dims", "flatten", "greater", "greater_equal", "isfinite",
    "isnan", "less", "less_equal", "log", "log_softmax", "logical_and", "logical_not", "logical_or", "logsumexp",
    "matmul", "max", "maximum", "mean", "min", "minimum", "mul", "neg", "not_equal", "pad", "permute", "pow",
    "prod", "reshape", "softmax", "split", "sqrt", "squeeze", "stack", "std", "sub", "sum", "swapaxes",
    "transpose", "unsqueeze", "var", "view", "where",
]

TENSOR_METHODS = (
    exp, log, sqrt, abs, clip, clamp, maximum, minimum, sum, mean, max, min, var, std, prod, logsumexp,
    softmax, log_softmax, argmax, argmin, any, all, reshape, view, flatten, permute, squeeze, unsqueeze,
    expand, broadcast_to, swapaxes, split, matmul, pow, isfinite, isnan, relu, sigmoid, tanh,
    amax, amin, argsort, chunk, cumprod, cumsum, median, sort, topk, view_as, sin, cos,
    contiguous, masked_fill, norm, repeat, t,
)
PYTORCH_METHOD_NAMES = {"eq": equal, "ne": not_equal, "lt": less, "le": less_equal, "gt": greater,
                        "ge": greater_equal, "reshape_as": view_as}


def attach_methods(tensor_class):
    """Expose the ops above as Tensor methods (``x.sum(axis=0)``, ``x.reshape(2, 3)``, ...)."""
    for op in TENSOR_METHODS:
        setattr(tensor_class, op.__name__, op)
    for name, op in PYTORCH_METHOD_NAMES.items():
        setattr(tensor_class, name, op)
    tensor_class.transpose = transpose
    tensor_class.expand_dims = expand_dims
