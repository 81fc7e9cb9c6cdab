"""Reading IDX files, the format of MNIST and Fashion-MNIST (raw or gzip-compressed).

An IDX file is a big-endian header ``0x00 0x00 <type code> <ndim>``, then ``ndim`` dimensions as
unsigned 32-bit integers, then the elements in C order.
"""
import gzip
import os
import zlib

import numpy

# type code -> big-endian element type
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"
_DEFAULT_HINT = "Replace it with an intact copy of the IDX file."


class DataError(ValueError):
    """A data file is missing, unreadable or not what it should be."""


def _read_bytes(path, hint):
    try:
        with open(path, "rb") as file:
            raw = file.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found. {hint}") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc.strerror or exc}). {hint}") from None
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: corrupt gzip data ({exc}). {hint}") from None


def read_idx(path, ndim=None, hint=_DEFAULT_HINT) -> numpy.ndarray:
    """The array stored in the IDX file ``path`` (gzip-compressed or not), in native byte order.

    Checks the magic number, the type code, the number of dimensions (``ndim``, if given) and that
    the file holds exactly the bytes its header promises. Any problem raises a ``DataError`` that
    names the file, says what is wrong and ends with ``hint`` (how to get a good copy).
    """
    path = os.fspath(path)
    data = _read_bytes(path, hint)

    def fail(problem):
        return DataError(f"{path}: {problem}. {hint}")

    if len(data) < 4:
        raise fail(f"not an IDX file: only {len(data)} bytes, shorter than the 4-byte magic number")
    if data[0] != 0 or data[1] != 0:
        raise fail(f"not an IDX file: magic number {data[:4].hex(' ')} does not start with 00 00")
    type_code, file_ndim = data[2], data[3]
    if type_code not in _IDX_TYPES:
        known = ", ".join(f"0x{code:02X}" for code in _IDX_TYPES)
        raise fail(f"unknown IDX data type code 0x{type_code:02X} (known: {known})")
    if file_ndim == 0:
        raise fail("IDX header declares 0 dimensions")
    if ndim is not None and file_ndim != ndim:
        raise fail(f"expected a {ndim}-D array, but the IDX header declares {file_ndim} dimensions")
    header_size = 4 + 4 * file_ndim
    if len(data) < header_size:
        raise fail(f"truncated: the header needs {header_size} bytes for {file_ndim} dimensions, "
                   f"the file has {len(data)}")
    shape = tuple(int(n) for n in numpy.frombuffer(data, dtype=">u4", count=file_ndim, offset=4))
    element = numpy.dtype(_IDX_TYPES[type_code])
    expected = header_size + element.itemsize * int(numpy.prod(shape, dtype=numpy.int64))
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "has trailing bytes"
        raise fail(f"{state}: the header declares shape {shape} of {element.newbyteorder('=')} "
                   f"({expected} bytes in all), the file has {len(data)} bytes")
    array = numpy.frombuffer(data, dtype=element, offset=header_size).reshape(shape)
    return array.astype(element.newbyteorder("="))  # a writable copy in native byte order


def write_idx(path, array) -> None:
    """Write ``array`` as an IDX file (gzip-compressed when ``path`` ends in ``.gz``)."""
    array = numpy.asarray(array)
    codes = {numpy.dtype(spec).newbyteorder("="): code for code, spec in _IDX_TYPES.items()}
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None or array.ndim == 0 or array.ndim > 255:
        raise DataError(f"{path}: cannot store a {array.ndim}-D {array.dtype} array as IDX "
                        f"(types: {', '.join(str(dt) for dt in codes)}; 1 to 255 dimensions)")
    header = bytes([0, 0, code, array.ndim]) + numpy.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + array.astype(_IDX_TYPES[code], copy=False).tobytes()
    opener = gzip.open if os.fspath(path).endswith(".gz") else open
    with opener(path, "wb") as file:
        file.write(payload)
