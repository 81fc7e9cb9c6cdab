"""``Parameter``: a tensor that a Module registers as trainable."""
from .. import backend as _backend
from ..tensor import Tensor


class Parameter(Tensor):
    """A tensor that requires grad (unless ``requires_grad=False``) and that a Module assigned it
    to as an attribute lists in ``parameters()`` and ``state_dict()``.

    ``Parameter(t)`` shares ``t``'s data (no copy), as in PyTorch.
    """

    __slots__ = ()

    def __init__(self, data=None, requires_grad=True):
        version = None
        if data is None:
            data = _backend.new_array(_backend.default_device(), "empty", (0,), dtype=_backend.DEFAULT_FLOAT)
        elif isinstance(data, Tensor):
            version = data._version
            data = data.data
        elif not _backend.is_array(data):
            raise TypeError(f"Parameter: expected a gpudl tensor or an array, got {type(data).__name__}")
        super().__init__(data, requires_grad=requires_grad)
        if version is not None:
            self._version = version

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


def float_dtype(dtype, owner):
    """``dtype`` (None: float32) as a floating numpy dtype, or an error naming ``owner``."""
    result = _backend.DEFAULT_FLOAT if dtype is None else _backend.dtype(dtype)
    if not _backend.is_float_dtype(result):
        raise TypeError(f"{owner}: dtype must be floating point (float16, float32 or float64), got {result}")
    return result


def empty_parameter(shape, device, dtype, owner):
    """An uninitialised Parameter of ``shape`` on ``device`` (None: the default device)."""
    array = _backend.new_array(_backend.get_device(device), "empty", tuple(shape), dtype=float_dtype(dtype, owner))
    return Parameter(array)
