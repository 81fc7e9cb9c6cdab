"""Containers: ``Sequential`` (a pipeline of modules) and ``ModuleList`` (a list that registers its modules)."""
import operator

from .module import Module


class _ModuleSequence(Module):
    """Indexing, length, iteration and append shared by Sequential and ModuleList."""

    def _key(self, index):
        try:
            index = operator.index(index)
        except TypeError:
            raise TypeError(f"{type(self).__name__} indices must be integers or slices, "
                            f"not {type(index).__name__}") from None
        n = len(self._modules)
        if not -n <= index < n:
            raise IndexError(f"index {index} is out of range for a {type(self).__name__} of length {n}")
        return list(self._modules)[index % n]

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self._from_items(list(self._modules.items())[index])
        return self._modules[self._key(index)]

    def __setitem__(self, index, module):
        setattr(self, self._key(index), module)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module):
        """Add ``module`` at the end; return self."""
        self.add_module(str(len(self._modules)), module)
        return self

    def extend(self, modules):
        """Append every module of ``modules``; return self."""
        for module in modules:
            self.append(module)
        return self


class Sequential(_ModuleSequence):
    """Modules applied one after the other: ``Sequential(a, b, c)(x) == c(b(a(x)))``.

    Children are named ``"0"``, ``"1"``, ... (as in PyTorch, so state_dict keys match), or by the
    keys of a dict passed as the only argument.
    """

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], dict):
            for name, module in modules[0].items():
                self.add_module(name, module)
        else:
            for k, module in enumerate(modules):
                self.add_module(str(k), module)

    def _from_items(self, items):
        return Sequential(dict(items))

    def forward(self, x):
        for module in self._modules.values():
            x = module(x)
        return x


class ModuleList(_ModuleSequence):
    """A list of modules whose parameters the owning module registers; index it like a list."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def _from_items(self, items):
        return ModuleList(module for _, module in items)

    def insert(self, index, module):
        """Insert ``module`` before position ``index``."""
        modules = list(self._modules.values())
        modules.insert(index, module)
        for name in list(self._modules):
            delattr(self, name)
        self.extend(modules)

    def __iadd__(self, modules):
        return self.extend(modules)
