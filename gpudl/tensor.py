"""``Tensor``: an array of one backend plus what reverse-mode autodiff needs."""
from . import backend as _backend
from .autograd import engine as _engine
from .autograd import function as _function
from .autograd.grad_mode import grad_mode


class Tensor:
    """A NumPy or CuPy array that can record the ops applied to it and backpropagate."""

    __slots__ = ("data", "grad", "grad_fn", "_requires_grad", "_output_index", "_version", "_retains_grad",
                 "__weakref__")
    __array_ufunc__ = None  # ndarray * tensor dispatches to Tensor.__rmul__ and keeps the graph
    __hash__ = object.__hash__

    def __init__(self, data, requires_grad=False):
        self.data = data
        self.grad = None
        self.grad_fn = None
        self._output_index = 0
        self._version = [0]
        self._retains_grad = False
        self._requires_grad = False
        if requires_grad:
            self.requires_grad = True

    @classmethod
    def _wrap(cls, data):
        """A tensor around ``data`` that does not require grad (fast path for op outputs)."""
        tensor = cls.__new__(cls)
        tensor.data = data
        tensor.grad = None
        tensor.grad_fn = None
        tensor._requires_grad = False
        tensor._output_index = 0
        tensor._version = [0]
        tensor._retains_grad = False
        return tensor

    @classmethod
    def _from_op(cls, data, grad_fn, output_index):
        tensor = cls.__new__(cls)
        tensor.data = data
        tensor.grad = None
        tensor.grad_fn = grad_fn
        tensor._requires_grad = True
        tensor._output_index = output_index
        tensor._version = [0]
        tensor._retains_grad = False
        return tensor

    # ----------------------------------------------------------------- autodiff state
    @property
    def requires_grad(self) -> bool:
        """Whether ops on this tensor are recorded for backpropagation."""
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value):
        if value and self.data.dtype.kind != "f":
            raise RuntimeError(f"only floating-point tensors can require grad; this one is {self.data.dtype}")
        if not value and self.grad_fn is not None:
            raise RuntimeError("requires_grad=False can only be set on a leaf tensor; use .detach()")
        self._requires_grad = bool(value)

    def requires_grad_(self, requires_grad=True):
        """Set ``requires_grad`` in place and return self."""
        self.requires_grad = requires_grad
        return self

    @property
    def is_leaf(self) -> bool:
        """True for tensors not produced by a recorded op."""
        return self.grad_fn is None

    def retain_grad(self):
        """Keep ``.grad`` for this non-leaf tensor during backward."""
        if not self._requires_grad:
            raise RuntimeError("retain_grad() on a tensor that does not require grad")
        self._retains_grad = True

    def backward(self, gradient=None, retain_graph=False, create_graph=False):
        """Backpropagate from this tensor into the ``.grad`` of every leaf that requires grad."""
        _engine.backward(self, gradient, retain_graph=retain_graph, create_graph=create_graph)

    def detach(self) -> "Tensor":
        """A tensor sharing this one's data, cut off from the graph."""
        out = Tensor(self.data)
        out._version = self._version
        return out

    def detach_(self) -> "Tensor":
        """Cut this tensor off from the graph in place."""
        self.grad_fn = None
        self._requires_grad = False
        return self

    # ----------------------------------------------------------------- array facts
    @property
    def backend(self):
        """The backend (NumPy or CuPy) that owns the data."""
        return _backend.backend_of(self.data)

    @property
    def device(self):
        """The device the data lives on (``cpu`` or ``cuda:N``)."""
        return _backend.device_of(self.data)

    @property
    def shape(self) -> tuple:
        """The shape, as a tuple of ints."""
        return self.data.shape

    @property
    def dtype(self):
        """The element type, a ``numpy.dtype``."""
        return self.data.dtype

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return self.data.ndim

    @property
    def size(self) -> "Size":
        """Number of elements (NumPy's ``size``), as an int that can be called as PyTorch's ``size``:
        ``x.size()`` is the shape, ``x.size(d)`` the length of dim ``d``."""
        return Size(self.data.size, self.data.shape)

    def numel(self) -> int:
        """Number of elements (PyTorch's name)."""
        return self.data.size

    nelement = numel

    def dim(self) -> int:
        """Number of dimensions (PyTorch's name)."""
        return self.data.ndim

    ndimension = dim

    def __len__(self):
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.data.shape[0]

    # ----------------------------------------------------------------- moving and converting
    def to(self, device=None, dtype=None, copy=False) -> "Tensor":
        """This tensor on ``device`` and/or as ``dtype``; differentiable, self if nothing changes."""
        if isinstance(device, str) and dtype is None and _is_dtype_name(device):
            target, dtype = self.device, device
        elif isinstance(device, str) or isinstance(device, _backend.Device) or device is None:
            target = self.device if device is None else _backend.get_device(device)
        else:
            target, dtype = self.device, device
        out = self
        if target != self.device or copy:
            out = _ops.to_device(self, target)
        if dtype is not None and _backend.dtype(dtype) != self.dtype:
            out = _ops.astype(out, _backend.dtype(dtype))
        return out

    def cpu(self) -> "Tensor":
        """This tensor on the host."""
        return self.to(_backend.CPU)

    def cuda(self, index: int = 0) -> "Tensor":
        """This tensor on GPU ``index``."""
        return self.to(f"cuda:{index}")

    def astype(self, dtype) -> "Tensor":
        """This tensor converted to ``dtype`` (differentiable between float dtypes)."""
        return self.to(dtype=dtype)

    def float(self):
        """As float32."""
        return self.to(dtype=_backend.float32)

    def double(self):
        """As float64."""
        return self.to(dtype=_backend.float64)

    def half(self):
        """As float16."""
        return self.to(dtype=_backend.float16)

    def long(self):
        """As int64."""
        return self.to(dtype=_backend.int64)

    def type(self, dtype=None):
        """PyTorch's ``type``: this tensor as ``dtype`` (``x.type(gpudl.float)``); without ``dtype``, the
        name of this tensor's dtype."""
        return str(self.dtype) if dtype is None else self.to(dtype=dtype)

    def type_as(self, other) -> "Tensor":
        """This tensor as ``other``'s dtype."""
        return self.to(dtype=other.dtype)

    def numpy(self):
        """A detached host copy of the data as a NumPy array (always a copy)."""
        host = _backend.to_host(self.data)
        return host.copy() if host is self.data else host

    def tolist(self):
        """The data as (nested) Python numbers."""
        return _backend.to_host(self.data).tolist()

    def item(self):
        """The value of a one-element tensor as a Python number."""
        if self.data.size != 1:
            raise ValueError(f"item(): only one-element tensors can be converted to a Python number, "
                             f"this one has shape {self.shape}")
        return _backend.item(self.data)

    def __array__(self, dtype=None, copy=None):
        if self.device.kind != "cpu":
            raise TypeError(f"cannot convert a tensor on {self.device} to a NumPy array implicitly; "
                            "call .numpy() to copy it to the host")
        if copy is False:
            raise ValueError("a gpudl tensor cannot be converted to a NumPy array without a copy guarantee; "
                             "use .numpy()")
        array = self.data
        return array.astype(dtype) if dtype is not None else array.copy()

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __bool__(self):
        if self.data.size != 1:
            raise ValueError(f"the truth value of a tensor with {self.data.size} elements is ambiguous; "
                             "use .any() or .all()")
        return bool(self.item())

    def __index__(self):
        if self.data.size != 1 or self.data.dtype.kind not in "iu":
            raise TypeError("only one-element integer tensors can be used as an index")
        return int(self.item())

    def __repr__(self):
        body = repr(_backend.to_host(self.data)).replace("array(", "tensor(", 1)
        extras = []
        if self.device.kind != "cpu":
            extras.append(f"device='{self.device}'")
        if self.grad_fn is not None:
            extras.append(f"grad_fn={type(self.grad_fn).__name__}")
        elif self._requires_grad:
            extras.append("requires_grad=True")
        if extras:
            body = body[:-1] + ", " + ", ".join(extras) + ")"
        return body

    def clone(self) -> "Tensor":
        """A differentiable copy with its own storage."""
        return _ops.clone(self)

    # ----------------------------------------------------------------- in-place ops
    def _check_inplace(self, name):
        if grad_mode.enabled and self._requires_grad and self.grad_fn is None:
            raise RuntimeError(f"{name}: a leaf tensor that requires grad cannot be modified in place "
                               "(wrap the update in gpudl.no_grad(), or use the out-of-place op)")

    def _apply_inplace(self, name, compute, saves_old=False):
        """Make this tensor hold ``compute(old)``, computed out of place, keeping the graph right.

        ``old`` is a new Tensor at this tensor's place in the graph (the op must link to the producer
        of the values it replaces, not to this tensor, whose grad_fn it becomes) holding the current
        values: this very array when the op only reads it during ``compute`` (or not at all), a copy
        when the op saves it for backward (``saves_old``), since the array is overwritten here.
        """
        self._check_inplace(name)
        if self.grad_fn is not None and self.grad_fn.is_view:
            raise RuntimeError(f"{name}: in-place modification of a view of a tensor that requires grad is not "
                               "supported (the viewed tensor would get a wrong gradient); use the out-of-place op")
        old = Tensor(self.data.copy() if saves_old else self.data)
        old.grad_fn, old._output_index, old._requires_grad = self.grad_fn, self._output_index, self._requires_grad
        result = compute(old)
        result_data = result.data if isinstance(result, Tensor) else result
        if self.data.shape != result_data.shape:
            raise RuntimeError(f"{name}: the result has shape {tuple(result_data.shape)} but the tensor being "
                               f"modified has shape {self.shape}; in-place ops cannot broadcast the target")
        self.backend.xp.copyto(self.data, result_data, casting="unsafe")
        if isinstance(result, Tensor) and result.requires_grad and grad_mode.enabled:
            self.grad_fn = result.grad_fn
            self._output_index = result._output_index
            self._requires_grad = True
        self._version[0] += 1
        return self

    def _inplace_binary(self, name, op, other):
        other_requires_grad = getattr(other, "requires_grad", False)
        if grad_mode.enabled and (self._requires_grad or other_requires_grad):
            # of the four ops only mul saves its left operand, and reads it only for other's gradient
            return self._apply_inplace(name, lambda old: op(old, other),
                                       saves_old=name == "mul_" and other_requires_grad)
        xp = self.backend.xp
        other_data = other.data if isinstance(other, Tensor) else other
        ufunc = {"add_": xp.add, "sub_": xp.subtract, "mul_": xp.multiply, "div_": xp.true_divide}[name]
        try:
            ufunc(self.data, other_data, out=self.data, casting="same_kind")
        except (ValueError, TypeError) as exc:
            raise RuntimeError(f"{name}: cannot apply to a tensor of shape {self.shape} and dtype {self.dtype} "
                               f"with {_describe(other)}: {exc}") from None
        self._version[0] += 1
        return self

    def add_(self, other, alpha=1):
        """``self += alpha * other`` in place."""
        return self._inplace_binary("add_", _ops.add, other if alpha == 1 else other * alpha)

    def sub_(self, other, alpha=1):
        """``self -= alpha * other`` in place."""
        return self._inplace_binary("sub_", _ops.sub, other if alpha == 1 else other * alpha)

    def mul_(self, other):
        """``self *= other`` in place."""
        return self._inplace_binary("mul_", _ops.mul, other)

    def div_(self, other):
        """``self /= other`` in place."""
        return self._inplace_binary("div_", _ops.div, other)

    def zero_(self):
        """Fill with zeros in place (under autograd the old values get a zero gradient, as in PyTorch)."""
        return self._fill("zero_", 0)

    def fill_(self, value):
        """Fill with ``value`` (a number, or a 0-d tensor whose gradient is the sum of this one's) in place."""
        if isinstance(value, Tensor):
            if value.ndim != 0:
                raise RuntimeError(f"fill_: the value must be a number or a 0-d tensor, got a tensor of shape "
                                   f"{value.shape}")
            return self._copy_from("fill_", value)
        return self._fill("fill_", value)

    def _fill(self, name, value):
        if grad_mode.enabled and self._requires_grad:
            return self._apply_inplace(name, lambda old: _overwrite(old, value))
        self.data.fill(value)
        self._version[0] += 1
        return self

    def copy_(self, source):
        """Copy ``source`` (broadcast to this shape) into this tensor in place."""
        return self._copy_from("copy_", _ops.as_tensor_like(source, self))

    def _copy_from(self, name, source):
        if source.device != self.device:
            source = source.to(self.device)
        if not _broadcasts_to(source.shape, self.shape):
            raise RuntimeError(f"{name}: a source of shape {source.shape} does not broadcast to the shape "
                               f"{self.shape} of the tensor being written")
        if grad_mode.enabled and (self._requires_grad or source.requires_grad):
            return self._apply_inplace(name, lambda old: _overwrite(old, source))
        self.backend.xp.copyto(self.data, source.data, casting="unsafe")
        self._version[0] += 1
        return self

    def clamp_(self, min=None, max=None):
        """Clip into ``[min, max]`` in place."""
        if grad_mode.enabled and self._requires_grad:
            return self._apply_inplace("clamp_", lambda old: _ops.clip(old, min, max), saves_old=True)
        self.backend.xp.clip(self.data, min, max, out=self.data)
        self._version[0] += 1
        return self

    def __setitem__(self, index, value):
        if grad_mode.enabled and self._requires_grad:
            raise RuntimeError("tensor[...] = value on a tensor that requires grad is not supported; "
                               "use gpudl.where(), or assign inside gpudl.no_grad()")
        value = value.data if isinstance(value, Tensor) else value
        self.data[_ops.index_data(index)] = value
        self._version[0] += 1

    # ----------------------------------------------------------------- operators
    def __add__(self, other):
        return _ops.add(self, other)

    def __radd__(self, other):
        return _ops.add(other, self)

    def __sub__(self, other):
        return _ops.sub(self, other)

    def __rsub__(self, other):
        return _ops.sub(other, self)

    def __mul__(self, other):
        return _ops.mul(self, other)

    def __rmul__(self, other):
        return _ops.mul(other, self)

    def __truediv__(self, other):
        return _ops.div(self, other)

    def __rtruediv__(self, other):
        return _ops.div(other, self)

    def __pow__(self, other):
        return _ops.pow(self, other)

    def __rpow__(self, other):
        return _ops.pow(other, self)

    def __matmul__(self, other):
        return _ops.matmul(self, other)

    def __rmatmul__(self, other):
        return _ops.matmul(other, self)

    def __neg__(self):
        return _ops.neg(self)

    def __pos__(self):
        return self

    def __abs__(self):
        return _ops.abs(self)

    def __iadd__(self, other):
        return self.add_(other)

    def __isub__(self, other):
        return self.sub_(other)

    def __imul__(self, other):
        return self.mul_(other)

    def __itruediv__(self, other):
        return self.div_(other)

    def __eq__(self, other):
        return _ops.equal(self, other)

    def __ne__(self, other):
        return _ops.not_equal(self, other)

    def __lt__(self, other):
        return _ops.less(self, other)

    def __le__(self, other):
        return _ops.less_equal(self, other)

    def __gt__(self, other):
        return _ops.greater(self, other)

    def __ge__(self, other):
        return _ops.greater_equal(self, other)

    def __invert__(self):
        return _ops.logical_not(self)

    def __and__(self, other):
        return _ops.logical_and(self, other)

    def __or__(self, other):
        return _ops.logical_or(self, other)

    def __getitem__(self, index):
        return _ops.getitem(self, index)

    def __iter__(self):
        for k in range(len(self)):
            yield self[k]

    @property
    def T(self):
        """The tensor with its axes reversed."""
        return _ops.transpose(self)


class Size(int):
    """A tensor's element count (NumPy's ``x.size``) that PyTorch code can call: ``x.size()`` gives the
    shape (a tuple), ``x.size(d)`` the length of dim ``d`` (negative ``d`` counts from the end)."""

    def __new__(cls, count, shape):
        size = super().__new__(cls, count)
        size.shape = tuple(shape)
        return size

    def __call__(self, dim=None):
        if dim is None:
            return self.shape
        if not -len(self.shape) <= dim < len(self.shape):
            raise IndexError(f"size({dim}): dim out of range for a tensor of shape {self.shape}")
        return self.shape[dim]


def _is_dtype_name(text):
    """True for strings such as ``"float64"`` that name a dtype rather than a device."""
    try:
        _backend.Device.parse(text)
        return False
    except ValueError:
        pass
    try:
        _backend.dtype(text)
        return True
    except TypeError:
        return False


def _broadcasts_to(shape, target):
    """True when an array of ``shape`` broadcasts to ``target`` (the target itself never stretches)."""
    return len(shape) <= len(target) and all(n in (1, m) for n, m in zip(reversed(shape), reversed(target)))


def _describe(value):
    if isinstance(value, Tensor):
        return f"a tensor of shape {value.shape} and dtype {value.dtype}"
    return f"{type(value).__name__} {value!r}"


_function.Tensor = _engine.Tensor = Tensor

from . import ops as _ops  # noqa: E402  (ops need Tensor; Tensor methods call ops)
from .ops.inplace import overwrite as _overwrite  # noqa: E402

_ops.attach_methods(Tensor)
