"""``gpudl.save`` / ``gpudl.load``: checkpoints as ``.npz`` files, readable without pickle.

A checkpoint holds one nested structure of dicts (string or int keys), lists and tuples whose
leaves are tensors, arrays, NumPy scalars, Python numbers, strings, booleans or None. Arrays are
stored as host arrays under flattened keys built from their path (``"model/fc.weight"``,
``"optimizer/state/0/exp_avg"``); the structure, the scalar leaves and each tensor's dtype, device
and ``requires_grad`` are JSON in a 0-d string array under ``__gpudl_metadata__``.

Writing is atomic: the file is written to a temporary file in the target folder, flushed and
fsynced, moved onto the target with ``os.replace`` and the folder is fsynced, so a crash or an
error mid-write leaves any previous checkpoint intact. This module is a host-side reader/writer,
so it uses NumPy directly.
"""
import contextlib
import json
import os
import secrets
import zipfile

import numpy

from . import backend as _backend
from .tensor import Tensor

FORMAT = "gpudl-checkpoint"
VERSION = 1
METADATA_KEY = "__gpudl_metadata__"
# np.savez takes the arrays as keyword arguments, so these names would clash with its parameters.
_RESERVED_KEYS = {METADATA_KEY, "file", "args", "kwds", "allow_pickle"}
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


class CheckpointError(ValueError):
    """A checkpoint cannot be written or read; the message names the file and the reason."""


# --------------------------------------------------------------------------------------- saving
def save(state, path) -> None:
    """Write ``state`` (nested dicts/lists of tensors, arrays and plain values) to the ``.npz`` file ``path``.

    The file is written exactly at ``path`` (no ``.npz`` suffix is added). Unsavable values (arbitrary
    objects, object arrays, dict keys that are not str/int) raise CheckpointError naming where they are;
    nothing is written then, and an existing file at ``path`` is left as it was.
    """
    path = os.fspath(path)
    arrays = {}
    tree = _encode(state, (), arrays, path)
    arrays[METADATA_KEY] = numpy.array(json.dumps({"format": FORMAT, "version": VERSION, "tree": tree}))
    folder = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    try:
        with open(temporary, "xb") as file:
            numpy.savez(file, **arrays)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        raise CheckpointError(f"could not write checkpoint {path!r}: {exc}") from exc
    finally:  # after os.replace the temporary is gone; after a failure it is removed here
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    _fsync_folder(folder)


def _fsync_folder(folder):
    """Make the rename durable (directories cannot be opened for fsync on every platform)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _encode(value, path, arrays, file):
    """The JSON node describing ``value``; its arrays go into ``arrays`` under flattened keys."""
    if isinstance(value, Tensor):
        return {"type": "tensor", "key": _store(value.data, path, arrays, file), "dtype": str(value.dtype),
                "device": str(value.device), "requires_grad": value.requires_grad}
    if _backend.is_array(value):
        return {"type": "array", "key": _store(value, path, arrays, file), "dtype": str(value.dtype),
                "device": str(_backend.device_of(value))}
    if isinstance(value, numpy.generic):
        return {"type": "numpy_scalar", "key": _store(numpy.asarray(value), path, arrays, file),
                "dtype": str(value.dtype)}
    if value is None or type(value) in (bool, int, float, str):
        return {"type": "value", "value": value}
    if isinstance(value, dict):
        items = []
        for key, item in value.items():
            if type(key) not in (str, int):
                raise CheckpointError(f"cannot save checkpoint {file!r}: the dict at {_describe_path(path)} has a "
                                      f"key {key!r} of type {type(key).__name__}; keys must be str or int")
            items.append([key, _encode(item, path + (key,), arrays, file)])
        return {"type": "dict", "items": items}
    if isinstance(value, (list, tuple)):
        return {"type": type(value).__name__ if type(value) in (list, tuple) else "list",
                "items": [_encode(item, path + (k,), arrays, file) for k, item in enumerate(value)]}
    raise CheckpointError(f"cannot save checkpoint {file!r}: {_describe_path(path)} has unsupported type "
                          f"{type(value).__name__}; a checkpoint holds dicts, lists, tuples, tensors, arrays, "
                          "numbers, strings and None")


def _store(array, path, arrays, file):
    if array.dtype.hasobject:
        raise CheckpointError(f"cannot save checkpoint {file!r}: the array at {_describe_path(path)} has dtype "
                              f"{array.dtype}, which needs pickle")
    key = "/".join(str(part) for part in path) or "root"
    unique, n = key, 1
    while unique in arrays or unique in _RESERVED_KEYS:
        unique, n = f"{key}~{n}", n + 1
    arrays[unique] = _backend.to_host(array)
    return unique


def _describe_path(path):
    return "the top level" if not path else "state" + "".join(f"[{part!r}]" for part in path)


# --------------------------------------------------------------------------------------- loading
def load(path, map_location=None, weights_only=True):
    """Read a checkpoint written by ``save``; tensors and arrays go to ``map_location``.

    ``weights_only`` is accepted for PyTorch's ``torch.load(path, weights_only=True)``: a gpudl
    checkpoint holds only arrays and plain values and is never unpickled, whatever its value.

    ``map_location`` is ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or None (the default device), so a checkpoint
    saved from GPU tensors loads on a CPU-only machine. A missing, truncated or corrupt file, or one that
    is not a gpudl checkpoint, raises CheckpointError naming the file.
    """
    path = os.fspath(path)
    device = _backend.get_device(map_location)
    arrays = _read_arrays(path)
    if METADATA_KEY not in arrays:
        raise CheckpointError(f"{path!r} is an .npz file but not a gpudl checkpoint (it has no {METADATA_KEY!r} "
                              "entry); use numpy.load for plain .npz files")
    try:
        metadata = json.loads(str(arrays.pop(METADATA_KEY)[()]))
        if metadata.get("format") != FORMAT:
            raise CheckpointError(f"{path!r} is not a gpudl checkpoint (format {metadata.get('format')!r})")
        if metadata.get("version") != VERSION:
            raise CheckpointError(f"checkpoint {path!r} has format version {metadata.get('version')!r}; this "
                                  f"gpudl reads version {VERSION} (was it written by a newer gpudl?)")
        return _decode(metadata["tree"], arrays, device)
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # JSONDecodeError is a ValueError
        raise CheckpointError(f"checkpoint {path!r} has corrupt metadata ({type(exc).__name__}: {exc})") from exc


def _read_arrays(path):
    """Every array of the .npz file, read now: a damaged zip member fails only when it is read."""
    try:
        with open(path, "rb") as file:
            if file.read(4) not in _ZIP_MAGIC:
                raise CheckpointError(f"{path!r} is not a gpudl checkpoint: it is not an .npz (zip) file")
            file.seek(0)
            with numpy.load(file, allow_pickle=False) as npz:
                return {key: npz[key] for key in npz.files}
    except FileNotFoundError as exc:
        raise CheckpointError(f"checkpoint file {path!r} does not exist") from exc
    except IsADirectoryError as exc:
        raise CheckpointError(f"checkpoint path {path!r} is a directory, not a file") from exc
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {path!r} is truncated or corrupt and cannot be read "
                              f"({type(exc).__name__}: {exc})") from exc


def _decode(node, arrays, device):
    kind = node["type"]
    if kind == "value":
        return node["value"]
    if kind == "dict":
        return {key: _decode(item, arrays, device) for key, item in node["items"]}
    if kind in ("list", "tuple"):
        items = [_decode(item, arrays, device) for item in node["items"]]
        return items if kind == "list" else tuple(items)
    array = arrays[node["key"]]
    if str(array.dtype) != node["dtype"]:
        raise ValueError(f"array {node['key']!r} has dtype {array.dtype}, the metadata says {node['dtype']}")
    if kind == "numpy_scalar":
        return array[()]
    data = _backend.to_device(array, device)
    if kind == "array":
        return data
    if kind == "tensor":
        return Tensor(data, requires_grad=node["requires_grad"])
    raise ValueError(f"unknown node type {kind!r}")
