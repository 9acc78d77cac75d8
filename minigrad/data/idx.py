"""The IDX file format of (Fashion-)MNIST: a strict reader and a writer.

Layout (big-endian): two zero bytes; one type byte (0x08 uint8, 0x09 int8, 0x0B int16,
0x0C int32, 0x0D float32, 0x0E float64); one byte with the number of dimensions d; d
uint32 sizes; then the values, row-major. Files are often gzip'd; the reader decides by
the first bytes, not by the name. Every malformed input raises :class:`IDXFormatError`.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib

import numpy

from ..files import PathLike, atomic_write

# type code -> big-endian dtype, as stored in the file
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
GZIP_MAGIC = b"\x1f\x8b"


class IDXFormatError(ValueError):
    """A file that is not a well-formed IDX file; the message names the file and the problem."""


def decompress_if_gzip(raw: bytes, name: str = "<bytes>") -> bytes:
    """Return the content of gzip'd bytes, or the bytes themselves when they are not gzip'd."""
    if not raw.startswith(GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise IDXFormatError(f"{name}: broken gzip data, probably a truncated download ({error})") from None


def read_idx(path: PathLike) -> numpy.ndarray:
    """Read a raw or gzip'd IDX file into a NumPy array of its native-endian dtype and shape."""
    with open(path, "rb") as file:
        raw = file.read()
    return parse_idx(decompress_if_gzip(raw, str(path)), str(path))


def parse_idx(content: bytes, name: str = "<bytes>") -> numpy.ndarray:
    """Parse the bytes of an (uncompressed) IDX file, checking every part of the layout."""
    if len(content) < 4:
        raise IDXFormatError(f"{name}: {len(content)} bytes, too short for the 4-byte IDX header")
    if content[:2] != b"\x00\x00":
        if content.startswith(GZIP_MAGIC):
            raise IDXFormatError(
                f"{name}: this is gzip data read as raw IDX (magic "
                f"{int.from_bytes(content[:4], 'big')}); decompress it first, e.g. with read_idx"
            )
        if content.lstrip()[:1] == b"<":
            raise IDXFormatError(
                f"{name}: this is an HTML or XML page, not an IDX file "
                f"(a failed download saved as data?); delete it and fetch the file again"
            )
        raise IDXFormatError(f"{name}: starts with bytes {content[:2].hex()}, not the two zero bytes of an IDX header")
    type_code, ndim = content[2], content[3]
    if type_code not in IDX_DTYPES:
        known = ", ".join(f"0x{code:02X}" for code in IDX_DTYPES)
        raise IDXFormatError(f"{name}: unknown IDX type code 0x{type_code:02X} (known: {known})")
    header_size = 4 + 4 * ndim
    if len(content) < header_size:
        raise IDXFormatError(
            f"{name}: truncated header: {ndim} dimensions need {header_size} bytes, the file has {len(content)}"
        )
    shape = struct.unpack(f">{ndim}I", content[4:header_size])
    dtype = numpy.dtype(IDX_DTYPES[type_code])
    expected = math.prod(shape) * dtype.itemsize
    payload = len(content) - header_size
    if payload < expected:
        raise IDXFormatError(
            f"{name}: truncated: shape {shape} of {dtype.name} needs {expected} bytes of data, the file has {payload}"
        )
    if payload > expected:
        raise IDXFormatError(
            f"{name}: {payload - expected} trailing bytes after the {expected} bytes that "
            f"shape {shape} of {dtype.name} needs"
        )
    values = numpy.frombuffer(content, dtype=dtype, count=math.prod(shape), offset=header_size)
    return values.astype(dtype.newbyteorder("="), copy=True).reshape(shape)


def write_idx(path: PathLike, array: numpy.ndarray, compress: bool | None = None) -> None:
    """Write ``array`` as IDX, gzip'd when ``compress`` (default: when the name ends in .gz); atomically."""
    array = numpy.asarray(array)
    codes = {numpy.dtype(big_endian).newbyteorder("="): code for code, big_endian in IDX_DTYPES.items()}
    if array.dtype not in codes:
        raise ValueError(
            f"IDX cannot store dtype {array.dtype}; use one of uint8, int8, int16, int32, float32, float64"
        )
    if array.ndim > 255:
        raise ValueError(f"IDX stores at most 255 dimensions, got {array.ndim}")
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    content = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    if compress is None:
        compress = str(path).endswith(".gz")
    with atomic_write(path) as file:
        file.write(gzip.compress(content, mtime=0) if compress else content)
