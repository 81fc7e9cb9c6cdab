"""Devices: ``"cpu"`` (NumPy) and ``"cuda"`` / ``"cuda:N"`` (CuPy)."""


class Device:
    """A place where arrays live: the host (``cpu``) or one CUDA GPU (``cuda:N``)."""

    __slots__ = ("kind", "index")

    def __init__(self, kind: str, index: int = 0):
        self.kind = kind
        self.index = index

    @classmethod
    def parse(cls, spec) -> "Device":
        """Turn ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a Device into a Device."""
        if isinstance(spec, Device):
            return spec
        if not isinstance(spec, str):
            raise TypeError(f"device must be a string such as 'cpu', 'cuda' or 'cuda:0', got {spec!r}")
        kind, _, index = spec.strip().lower().partition(":")
        if kind == "cpu" and not index:
            return CPU
        if kind == "cuda" and (not index or index.isdigit()):
            return cls("cuda", int(index) if index else 0)
        raise ValueError(f"unknown device {spec!r}: expected 'cpu', 'cuda' or 'cuda:N'")

    def __eq__(self, other):
        if isinstance(other, str):
            try:
                other = Device.parse(other)
            except ValueError:
                return False
        return isinstance(other, Device) and self.kind == other.kind and self.index == other.index

    def __hash__(self):
        return hash((self.kind, self.index))

    def __repr__(self):
        return "cpu" if self.kind == "cpu" else f"cuda:{self.index}"

    __str__ = __repr__


CPU = Device("cpu")
