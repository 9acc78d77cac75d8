"""The IDX reader and writer: round trips and every malformed input."""

import gzip
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minigrad.data import IDXFormatError, parse_idx, read_idx, write_idx

IDX_TYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


@given(
    array=st.sampled_from(IDX_TYPES).flatmap(
        lambda dtype: hnp.arrays(
            dtype,
            hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5),
            elements=hnp.from_dtype(np.dtype(dtype), allow_nan=False),
        )
    ),
    gzipped=st.booleans(),
)
@settings(max_examples=150)
def test_write_then_read_round_trips(tmp_path_factory, array, gzipped):
    path = tmp_path_factory.mktemp("idx") / ("a.idx.gz" if gzipped else "a.idx")
    write_idx(path, array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == gzipped
    back = read_idx(path)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_gzip_is_detected_by_content_not_name(tmp_path):
    array = np.arange(12, dtype=np.int32).reshape(3, 4)
    write_idx(tmp_path / "misnamed.idx", array, compress=True)
    write_idx(tmp_path / "misnamed.gz", array, compress=False)
    np.testing.assert_array_equal(read_idx(tmp_path / "misnamed.idx"), array)
    np.testing.assert_array_equal(read_idx(tmp_path / "misnamed.gz"), array)


def labels_file(count=5):
    return bytes([0, 0, 0x08, 1]) + struct.pack(">I", count) + bytes(i % 256 for i in range(count))


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "too short"),
        (labels_file()[:-1], "truncated: shape"),
        (labels_file()[:6], "truncated header"),
        (labels_file() + b"\x00\x00", "2 trailing bytes"),
        (gzip.compress(labels_file(), mtime=0), "gzip data read as raw"),  # mtime=0: the same test id in every process
        (b"<!DOCTYPE html><html><body>404 Not Found</body></html>", "HTML"),
        (b"\n  <html>", "HTML"),
        (bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 0]), "unknown IDX type code 0x07"),
        (b"\x01\x02\x08\x01", "not the two zero bytes"),
    ],
)
def test_malformed_bytes_raise_the_parsers_error_naming_the_file(content, message):
    with pytest.raises(IDXFormatError, match=message) as caught:
        parse_idx(content, "some-file.idx")
    assert "some-file.idx" in str(caught.value)


def test_truncated_gzip_file_is_a_format_error(tmp_path):
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(labels_file(1000))[:-20])
    with pytest.raises(IDXFormatError, match=f"{path}.*broken gzip"):
        read_idx(path)


def test_gzip_file_named_in_header_shows_the_documented_magic():
    raw = gzip.compress(labels_file())
    raw = raw[:3] + b"\x08" + raw[4:]  # FNAME flag, as when gzip stored a file name
    assert int.from_bytes(raw[:4], "big") == 529205256
    with pytest.raises(IDXFormatError, match="529205256"):
        parse_idx(raw)


@given(st.binary(max_size=300))
@settings(max_examples=300)
def test_random_bytes_give_only_the_parsers_error(content):
    try:
        parse_idx(content)
    except IDXFormatError:
        pass


@given(st.binary(max_size=300))
@settings(max_examples=200)
def test_random_bytes_after_a_gzip_magic_give_only_the_parsers_error(tmp_path_factory, tail):
    path = tmp_path_factory.mktemp("rnd") / "x.gz"
    path.write_bytes(b"\x1f\x8b" + tail)
    try:
        read_idx(path)
    except IDXFormatError:
        pass


def test_huge_claimed_shape_is_rejected_without_allocating():
    content = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 60000, 28, 28) + b"\x00" * 10
    with pytest.raises(IDXFormatError, match="needs 47040000 bytes of data, the file has 10"):
        parse_idx(content)


def test_write_rejects_unsupported_dtypes(tmp_path):
    with pytest.raises(ValueError, match="IDX cannot store dtype int64"):
        write_idx(tmp_path / "x.idx", np.zeros(3, dtype=np.int64))
    assert not list(tmp_path.iterdir())
