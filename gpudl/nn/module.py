"""``Module``: the base class of layers and models, with PyTorch's registration and state API.

Parameters, buffers and submodules are registered by attribute assignment. Each is kept in
its own dict (``_parameters``, ``_buffers``, ``_modules``) for iteration and ``state_dict``,
and also in the instance ``__dict__``, so reading ``self.weight`` in ``forward`` is a plain
attribute lookup with no ``__getattr__`` detour.
"""
from typing import NamedTuple

from .. import backend as _backend
from ..autograd.grad_mode import no_grad
from ..tensor import Tensor
from .parameter import Parameter


class IncompatibleKeys(NamedTuple):
    """What ``load_state_dict(strict=False)`` skipped: keys the model has but the dict lacked, and the reverse."""

    missing_keys: list
    unexpected_keys: list


class Module:
    """Base class of every layer and model: subclass it, assign layers and ``Parameter``s as
    attributes in ``__init__`` (after ``super().__init__()``) and define ``forward``."""

    def __init__(self):
        d = self.__dict__
        d["training"] = True
        d["_parameters"] = {}
        d["_buffers"] = {}
        d["_non_persistent_buffers"] = set()
        d["_modules"] = {}

    def forward(self, *args, **kwargs):
        """The computation of this module; subclasses define it."""
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ----------------------------------------------------------------- registration
    def __setattr__(self, name, value):
        d = self.__dict__
        params = d.get("_parameters")
        if isinstance(value, (Parameter, Module)):
            if params is None:
                raise AttributeError(f"cannot assign {type(value).__name__} '{name}' before Module.__init__() "
                                     "was called (call super().__init__() first)")
            registry = params if isinstance(value, Parameter) else d["_modules"]
            self._unregister(name, keep=registry)
            registry[name] = value
        elif params is not None and name in params:
            if value is not None:
                raise TypeError(f"cannot assign {_type_name(value)} as parameter '{name}' "
                                "(nn.Parameter or None expected)")
            params[name] = None
        elif params is not None and name in d["_modules"]:
            if value is not None:
                raise TypeError(f"cannot assign {_type_name(value)} as child module '{name}' "
                                "(nn.Module or None expected)")
            d["_modules"][name] = None
        elif params is not None and name in d["_buffers"]:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign {_type_name(value)} as buffer '{name}' (a tensor or None expected)")
            d["_buffers"][name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        self._unregister(name)
        object.__delattr__(self, name)

    def _unregister(self, name, keep=None):
        """Remove ``name`` from every registry except ``keep`` (where assigning keeps its position)."""
        d = self.__dict__
        for registry in (d["_parameters"], d["_buffers"], d["_modules"]):
            if registry is not keep:
                registry.pop(name, None)
        d["_non_persistent_buffers"].discard(name)

    def _check_new_name(self, name, kind, registry):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"cannot register {kind} '{name}' before Module.__init__() was called")
        if not isinstance(name, str) or not name or "." in name:
            raise KeyError(f"{kind} name must be a non-empty string without '.', got {name!r}")
        if hasattr(self, name) and name not in self.__dict__[registry]:
            raise KeyError(f"attribute '{name}' already exists on {type(self).__name__}; cannot register a {kind} "
                           "under that name")

    def register_parameter(self, name, param):
        """Register ``param`` (a Parameter, or None for an absent one such as ``bias=False``) as ``name``."""
        self._check_new_name(name, "parameter", "_parameters")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot register {_type_name(param)} as parameter '{name}' "
                            "(nn.Parameter or None expected)")
        self._unregister(name, keep=self._parameters)
        self._parameters[name] = param
        object.__setattr__(self, name, param)

    def register_buffer(self, name, tensor, persistent=True):
        """Register ``tensor`` (state that is not trained, e.g. running statistics; None allowed) as ``name``.

        Persistent buffers are part of ``state_dict()``; all buffers move with ``to()``.
        """
        self._check_new_name(name, "buffer", "_buffers")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"cannot register {_type_name(tensor)} as buffer '{name}' (a tensor or None expected)")
        self._unregister(name, keep=self._buffers)
        self._buffers[name] = tensor
        if not persistent:
            self._non_persistent_buffers.add(name)
        object.__setattr__(self, name, tensor)

    def add_module(self, name, module):
        """Register ``module`` (or None) as the child ``name``."""
        self._check_new_name(name, "module", "_modules")
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{_type_name(module)} is not a Module subclass (child '{name}')")
        self._unregister(name, keep=self._modules)
        self._modules[name] = module
        object.__setattr__(self, name, module)

    register_module = add_module

    # ----------------------------------------------------------------- iteration
    def named_modules(self, memo=None, prefix=""):
        """``(name, module)`` for this module and every descendant, each module once."""
        memo = set() if memo is None else memo
        if self in memo:
            return
        memo.add(self)
        yield prefix, self
        for name, module in self._modules.items():
            if module is not None:
                yield from module.named_modules(memo, f"{prefix}.{name}" if prefix else name)

    def modules(self):
        """This module and every descendant, each once."""
        for _, module in self.named_modules():
            yield module

    def named_children(self):
        """``(name, module)`` for the direct children."""
        seen = set()
        for name, module in self._modules.items():
            if module is not None and module not in seen:
                seen.add(module)
                yield name, module

    def children(self):
        """The direct children."""
        for _, module in self.named_children():
            yield module

    def _named_members(self, kind, prefix, recurse):
        seen = set()  # ids: a tensor's == is elementwise, so tensors cannot be set members
        modules = self.named_modules(prefix=prefix) if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            for name, value in module.__dict__[kind].items():
                if value is None or id(value) in seen:
                    continue
                seen.add(id(value))
                yield (f"{module_prefix}.{name}" if module_prefix else name), value

    def named_parameters(self, prefix="", recurse=True):
        """``(dotted name, Parameter)`` for every parameter (a shared one once)."""
        return self._named_members("_parameters", prefix, recurse)

    def parameters(self, recurse=True):
        """Every parameter (a shared one once), e.g. for an optimizer."""
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(self, prefix="", recurse=True):
        """``(dotted name, tensor)`` for every buffer."""
        return self._named_members("_buffers", prefix, recurse)

    def buffers(self, recurse=True):
        """Every buffer."""
        for _, buffer in self.named_buffers(recurse=recurse):
            yield buffer

    def apply(self, fn):
        """Call ``fn(module)`` on every child (recursively) and then on self; return self."""
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    # ----------------------------------------------------------------- modes and gradients
    def train(self, mode=True):
        """Set training mode (``mode=True``) or evaluation mode here and in every descendant; return self."""
        if not isinstance(mode, bool):
            raise ValueError(f"train(mode): mode must be a bool, got {mode!r}")
        self.training = mode
        for module in self.children():
            module.train(mode)
        return self

    def eval(self):
        """Evaluation mode (dropout off, batch norm uses running statistics); same as ``train(False)``."""
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        """Switch gradient tracking of every parameter on or off (``False`` freezes them); return self."""
        for param in self.parameters():
            param.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none=True):
        """Clear the gradients of every parameter: drop them (default) or fill them with zeros."""
        for param in self.parameters():
            if param.grad is None:
                continue
            if set_to_none:
                param.grad = None
            else:
                param.grad.zero_()

    # ----------------------------------------------------------------- devices and dtypes
    def to(self, *args, device=None, dtype=None):
        """Move every parameter and buffer to ``device`` and/or cast the floating ones to ``dtype``, in place
        (the Parameter objects stay the same, so an optimizer built before keeps working); return self.

        Accepts ``to(device)``, ``to(dtype)``, ``to(device, dtype)`` and the keyword forms; dtypes may be
        strings (``to("float64")``).
        """
        for arg in args:
            if device is None and _is_device(arg):
                device = arg
            elif dtype is None and not _is_device(arg):
                dtype = arg
            else:
                raise TypeError(f"Module.to: unexpected argument {arg!r} (expected a device and/or a dtype)")
        target = None if device is None else _backend.get_device(device)
        cast = None if dtype is None else _backend.dtype(dtype)
        if cast is not None and not _backend.is_float_dtype(cast):
            raise TypeError(f"Module.to only accepts floating-point dtypes, got {cast}")

        def convert(array):
            if target is not None:
                array = _backend.to_device(array, target)
            if cast is not None and array.dtype.kind == "f" and array.dtype != cast:
                array = _backend.backend_of(array).xp.asarray(array, dtype=cast)
            return array

        for module in self.modules():
            for tensor in (*module._parameters.values(), *module._buffers.values()):
                if tensor is None:
                    continue
                tensor.data = convert(tensor.data)
                if tensor.grad is not None:
                    tensor.grad.data = convert(tensor.grad.data)
        return self

    def cpu(self):
        """Move to the host; return self."""
        return self.to(device="cpu")

    def cuda(self, device=0):
        """Move to GPU ``device``; return self."""
        return self.to(device=device if isinstance(device, str) else f"cuda:{device}")

    def float(self):
        """Cast floating parameters and buffers to float32; return self."""
        return self.to(dtype=_backend.float32)

    def double(self):
        """Cast floating parameters and buffers to float64; return self."""
        return self.to(dtype=_backend.float64)

    def half(self):
        """Cast floating parameters and buffers to float16; return self."""
        return self.to(dtype=_backend.float16)

    # ----------------------------------------------------------------- state
    def state_dict(self, *, destination=None, prefix="", keep_vars=False):
        """A dict from dotted names to every parameter and persistent buffer, in PyTorch's order and naming.

        Values are detached tensors sharing storage with the module (``keep_vars=True``: the tensors themselves).
        """
        destination = {} if destination is None else destination
        for name, param in self._parameters.items():
            if param is not None:
                destination[prefix + name] = param if keep_vars else param.detach()
        for name, buffer in self._buffers.items():
            if buffer is not None and name not in self._non_persistent_buffers:
                destination[prefix + name] = buffer if keep_vars else buffer.detach()
        for name, module in self._modules.items():
            if module is not None:
                module.state_dict(destination=destination, prefix=f"{prefix}{name}.", keep_vars=keep_vars)
        return destination

    def load_state_dict(self, state_dict, strict=True):
        """Copy values (gpudl tensors or NumPy/CuPy arrays) into the parameters and buffers, in place.

        Values are cast to each target's dtype and moved to its device. Every key is checked before
        anything is copied: a wrongly shaped or unreadable value is always an error; with ``strict``
        (default) missing and unexpected keys are errors too. The error names every offending key.
        Returns ``IncompatibleKeys(missing_keys, unexpected_keys)``.
        """
        if not hasattr(state_dict, "items"):
            raise TypeError(f"load_state_dict: expected a dict of name -> tensor, got {type(state_dict).__name__}")
        own = self.state_dict(keep_vars=True)
        missing = [key for key in own if key not in state_dict]
        unexpected = [key for key in state_dict if key not in own]
        problems = []
        sources = {}
        for key, target in own.items():
            if key not in state_dict:
                continue
            value = _as_array(state_dict[key])
            if value is None:
                problems.append(f"value for {key} is a {type(state_dict[key]).__name__}, "
                                "expected a gpudl tensor or a NumPy/CuPy array")
            elif tuple(value.shape) != target.shape:
                problems.append(f"size mismatch for {key}: copying a param with shape {tuple(value.shape)} from "
                                f"checkpoint, the shape in current model is {target.shape}.")
            else:
                sources[key] = value
        if strict:
            if unexpected:
                problems.insert(0, "Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ".")
            if missing:
                problems.insert(0, "Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ".")
        if problems:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t" + "\n\t".join(problems))
        with no_grad():
            for key, value in sources.items():
                own[key].copy_(_backend.to_device(value, own[key].device))
        return IncompatibleKeys(missing, unexpected)

    # ----------------------------------------------------------------- printing
    def extra_repr(self):
        """The part of this module's repr between the parentheses (its settings); subclasses override it."""
        return ""

    def __repr__(self):
        extra = self.extra_repr()
        extra_lines = extra.split("\n") if extra else []
        child_lines = [f"({name}): " + _indent(repr(module), 2) for name, module in self._modules.items()]
        lines = extra_lines + child_lines
        body = ""
        if len(extra_lines) == 1 and not child_lines:
            body = extra_lines[0]
        elif lines:
            body = "\n  " + "\n  ".join(lines) + "\n"
        return f"{type(self).__name__}({body})"


def _is_device(value):
    """True for a Device or a device string (``'cpu'``, ``'cuda:1'``); other strings name dtypes."""
    if isinstance(value, _backend.Device):
        return True
    try:
        _backend.Device.parse(value)
    except (TypeError, ValueError):
        return False
    return True


def _indent(text, spaces):
    lines = text.split("\n")
    return "\n".join(lines[:1] + [" " * spaces + line for line in lines[1:]])


def _type_name(value):
    return "a tensor" if isinstance(value, Tensor) else f"a {type(value).__name__}"


def _as_array(value):
    """A state-dict value as a backend array, or None if it is not a tensor or an array."""
    if isinstance(value, Tensor):
        return value.data
    if _backend.is_array(value):
        return value
    if hasattr(value, "dtype") and hasattr(value, "shape"):
        return _backend.host_array_from_data(value)
    return None
