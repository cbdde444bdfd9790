"""The compressed kernel inside a bzImage, decompressed on the host.

boot.rst §"Details of Header Fields": since protocol 2.08 the setup header
gives `payload_offset` (0x248, from the start of the protected-mode code)
and `payload_length` (0x24C) of the compressed kernel, "vmlinux.bin" — the
kernel proper as an ELF file with its symbols stripped
(arch/x86/boot/compressed/Makefile).  The format is told by its magic
bytes, as the kernel's own scripts/extract-vmlinux does.  Formats the
Python standard library decodes are decompressed; the others are refused
with their name, and such a kernel boots with its own decompressor
(`--linux-entry 64`).
"""

from __future__ import annotations

import bz2
import lzma
import struct
import zlib
from collections.abc import Callable

from pyvmm.errors import ImageError

PAYLOAD_OFFSET = 0x248
PAYLOAD_LENGTH = 0x24C
MIN_PAYLOAD_PROTOCOL = 0x0208
# The kernel proper is far below this; a bigger output is a decompression bomb.
MAX_VMLINUX_BYTES = 512 << 20


def _gunzip(data: bytes) -> bytes:
    return _bounded(zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(
        data, MAX_VMLINUX_BYTES + 1))


def _xz(data: bytes) -> bytes:
    return _bounded(lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(
        data, max_length=MAX_VMLINUX_BYTES + 1))


def _lzma_alone(data: bytes) -> bytes:
    return _bounded(lzma.LZMADecompressor(format=lzma.FORMAT_ALONE).decompress(
        data, max_length=MAX_VMLINUX_BYTES + 1))


def _bunzip2(data: bytes) -> bytes:
    return _bounded(bz2.BZ2Decompressor().decompress(data, max_length=MAX_VMLINUX_BYTES + 1))


def _bounded(out: bytes) -> bytes:
    """One stream decompressed (trailing bytes, such as the uncompressed size the kernel
    build appends, are ignored), refused past MAX_VMLINUX_BYTES."""
    if len(out) > MAX_VMLINUX_BYTES:
        raise ImageError(f"the bzImage payload decompresses to more than "
                         f"{MAX_VMLINUX_BYTES >> 20} MiB")
    return out


# Magic bytes -> (format name, decompressor or None when the host cannot decode it).
PAYLOAD_FORMATS: tuple[tuple[bytes, str, Callable[[bytes], bytes] | None], ...] = (
    (b"\x1f\x8b", "gzip", _gunzip),
    (b"\xfd7zXZ\x00", "xz", _xz),
    (b"\x5d\x00\x00", "lzma", _lzma_alone),
    (b"BZh", "bzip2", _bunzip2),
    (b"\x28\xb5\x2f\xfd", "zstd", None),
    (b"\x02\x21\x4c\x18", "lz4", None),
    (b"\x89LZO", "lzo", None),
)


def payload(image: bytes, setup_size: int, version: int) -> tuple[str, bytes]:
    """(format name, compressed bytes) of a bzImage's payload."""
    if version < MIN_PAYLOAD_PROTOCOL:
        raise ImageError("the setup header has no payload fields (boot protocol before 2.08)")
    offset, length = struct.unpack_from("<II", image, PAYLOAD_OFFSET)
    start = setup_size + offset
    if length == 0 or start + length > len(image):
        raise ImageError(f"payload_offset {offset:#x} / payload_length {length:#x} lie outside "
                         f"the {len(image)}-byte file")
    data = image[start:start + length]
    for magic, name, _ in PAYLOAD_FORMATS:
        if data.startswith(magic):
            return name, data
    raise ImageError(f"the bzImage payload starts with {data[:6].hex()}: no known "
                     "compression format")


def decompress_vmlinux(image: bytes, setup_size: int, version: int) -> bytes:
    """The kernel proper (an ELF file) from a bzImage's payload."""
    name, data = payload(image, setup_size, version)
    decompress = next(fn for magic, fmt, fn in PAYLOAD_FORMATS if fmt == name)
    if decompress is None:
        decodable = ", ".join(fmt for _, fmt, fn in PAYLOAD_FORMATS if fn is not None)
        raise ImageError(f"this bzImage is compressed with {name}, which pyvmm cannot "
                         f"decompress on the host ({decodable} only): boot it with "
                         "--linux-entry 64, its own decompressor")
    try:
        return decompress(data)
    except (OSError, EOFError, lzma.LZMAError, zlib.error, ValueError) as error:
        raise ImageError(f"the bzImage's {name} payload is corrupt: {error}") from None
