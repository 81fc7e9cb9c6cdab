"""IDX reader: round trips (raw and gzip), byte-exact decoding, and a clear error for every kind of bad file."""
import gzip

import numpy as np
import pytest

from gpudl.data import DataError, read_idx, write_idx

HINT = "Get a fresh copy from the project."


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype,shape", [("uint8", (3, 4, 5)), ("int8", (7,)), ("int16", (2, 3)),
                                         ("int32", (4, 1)), ("float32", (2, 2, 2)), ("float64", (3, 2))])
def test_round_trip(tmp_path, suffix, dtype, shape):
    rng = np.random.default_rng(0)
    array = (rng.standard_normal(shape) * 100).astype(dtype)
    path = tmp_path / f"data-idx{suffix}"
    write_idx(path, array)
    loaded = read_idx(path)
    assert loaded.dtype == np.dtype(dtype) and loaded.dtype.isnative
    assert loaded.shape == shape
    np.testing.assert_array_equal(loaded, array)
    loaded[...] = 0  # the result is an ordinary writable array


def test_write_compresses_gz_paths(tmp_path):
    write_idx(tmp_path / "a.gz", np.arange(5, dtype=np.uint8))
    assert (tmp_path / "a.gz").read_bytes()[:2] == b"\x1f\x8b"
    assert gzip.decompress((tmp_path / "a.gz").read_bytes())[:4] == b"\x00\x00\x08\x01"


def test_decodes_big_endian_header_and_data(tmp_path):
    # hand-written file: type 0x0B (int16), 2 dims 2x2, big-endian values 1, -2, 256, 3
    payload = bytes([0, 0, 0x0B, 2, 0, 0, 0, 2, 0, 0, 0, 2]) + bytes([0, 1, 0xFF, 0xFE, 1, 0, 0, 3])
    path = tmp_path / "hand-idx2-short"
    path.write_bytes(payload)
    np.testing.assert_array_equal(read_idx(path), np.array([[1, -2], [256, 3]], dtype=np.int16))


def test_reads_gzip_by_content_not_name(tmp_path):
    path = tmp_path / "no-suffix"
    path.write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 2, 9, 7])))
    np.testing.assert_array_equal(read_idx(path), [9, 7])


def _bad_file(tmp_path, payload, compress=False):
    path = tmp_path / ("bad-idx.gz" if compress else "bad-idx")
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


HEADER_1D_3 = bytes([0, 0, 8, 1, 0, 0, 0, 3])


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("payload,ndim,problem", [
    (bytes([1, 2, 8, 1, 0, 0, 0, 1, 5]), None, "magic number 01 02 08 01"),
    (bytes([0, 0, 0x42, 1, 0, 0, 0, 1, 5]), None, "unknown IDX data type code 0x42"),
    (bytes([0, 0, 8, 0]), None, "declares 0 dimensions"),
    (HEADER_1D_3 + b"\x01\x02\x03", 3, "expected a 3-D array, but the IDX header declares 1 dimensions"),
    (HEADER_1D_3 + b"\x01\x02", None, "truncated: the header declares shape (3,)"),
    (HEADER_1D_3 + b"\x01\x02\x03\x04", None, "has trailing bytes"),
    (bytes([0, 0, 8, 3, 0, 0, 0, 2]), None, "truncated: the header needs 16 bytes for 3 dimensions"),
    (b"\x00\x00", None, "only 2 bytes"),
])
def test_bad_files_name_the_file_the_problem_and_the_remedy(tmp_path, compress, payload, ndim, problem):
    path = _bad_file(tmp_path, payload, compress)
    with pytest.raises(DataError) as info:
        read_idx(path, ndim=ndim, hint=HINT)
    message = str(info.value)
    assert str(path) in message and problem in message and message.endswith(HINT)


def test_truncated_real_size_file(tmp_path):
    path = tmp_path / "images-idx3-ubyte"
    write_idx(path, np.zeros((10, 28, 28), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"truncated: the header declares shape \(10, 28, 28\) of uint8 "
                                        r"\(7856 bytes in all\), the file has 7756 bytes"):
        read_idx(path)


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "broken.gz"
    path.write_bytes(gzip.compress(HEADER_1D_3 + b"\x01\x02\x03")[:-6])
    with pytest.raises(DataError, match="corrupt gzip data") as info:
        read_idx(path, hint=HINT)
    assert str(path) in str(info.value) and HINT in str(info.value)


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere-idx1-ubyte.gz"
    with pytest.raises(DataError, match="file not found") as info:
        read_idx(path, hint=HINT)
    assert str(path) in str(info.value) and str(info.value).endswith(HINT)
    assert isinstance(info.value, ValueError)


def test_directory_is_an_unreadable_file(tmp_path):
    with pytest.raises(DataError, match="cannot read the file"):
        read_idx(tmp_path)


def test_write_rejects_unsupported_arrays(tmp_path):
    with pytest.raises(DataError, match="cannot store a 1-D uint16 array as IDX"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.uint16))
    with pytest.raises(DataError, match="cannot store a 0-D"):
        write_idx(tmp_path / "x", np.float32(1))
