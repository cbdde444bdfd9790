"""Finding and checking the Multiboot (v1) header of a kernel image.

Multiboot Specification 0.6.96 §3.1: the header is 32-bit aligned, lies
entirely within the first 8192 bytes of the image, starts with the magic
0x1BADB002, and its checksum makes magic + flags + checksum == 0 (mod 2^32).
Flag bits 0-15 are requirements: a loader that cannot honour one must refuse
the image; bits 16-31 are optional features.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pyvmm.errors import ImageError

HEADER_MAGIC = 0x1BADB002  # §3.1.2
SEARCH_LIMIT = 8192  # §3.1: the header must be inside the first 8192 bytes
HEADER_ALIGN = 4  # §3.1: 32-bit aligned
_BASIC = struct.Struct("<III")  # magic, flags, checksum (§3.1.1, offsets 0-11)
_ADDRESS = struct.Struct("<IIIII")  # header_addr .. entry_addr (§3.1.1, offsets 12-31)

# Header flag bits (§3.1.2).
FLAG_PAGE_ALIGN = 1 << 0  # modules must be page aligned
FLAG_MEMORY_INFO = 1 << 1  # mem_* (and mmap_*) fields must be provided
FLAG_VIDEO_MODE = 1 << 2  # video mode table must be provided
FLAG_ADDRESS_FIELDS = 1 << 16  # header_addr..entry_addr are valid (the "a.out kludge")
REQUIRED_MASK = 0xFFFF  # bits 0-15: requirements
# Requirements this loader honours: no modules are loaded, so page alignment
# of modules holds trivially; memory information is always provided.
SUPPORTED_REQUIREMENTS = FLAG_PAGE_ALIGN | FLAG_MEMORY_INFO

_REQUIREMENT_NAMES = {2: "video mode table"}


@dataclass(frozen=True)
class AddressFields:
    """The a.out-kludge fields, valid when flag bit 16 is set (§3.1.3)."""

    header_addr: int  # physical address of the header's magic
    load_addr: int  # physical address of the start of the text segment
    load_end_addr: int  # end of the data segment; 0 = the rest of the file
    bss_end_addr: int  # end of the bss; 0 = no bss
    entry_addr: int  # physical entry point


@dataclass(frozen=True)
class MultibootHeader:
    offset: int  # file offset of the magic
    flags: int
    address: AddressFields | None  # present iff flag bit 16 is set


def scan(image: bytes) -> tuple[int | None, int | None]:
    """(offset of the first valid header, offset of the first bad-checksum magic)."""
    bad = None
    last = min(len(image), SEARCH_LIMIT) - _BASIC.size
    for offset in range(0, last + 1, HEADER_ALIGN):
        magic, flags, checksum = _BASIC.unpack_from(image, offset)
        if magic != HEADER_MAGIC:
            continue
        if (magic + flags + checksum) & 0xFFFFFFFF == 0:
            return offset, bad
        if bad is None:
            bad = offset
    return None, bad


def _magic_beyond_limit(image: bytes) -> int | None:
    needle = struct.pack("<I", HEADER_MAGIC)
    start = SEARCH_LIMIT - _BASIC.size + HEADER_ALIGN
    while True:
        found = image.find(needle, start)
        if found < 0:
            return None
        if found % HEADER_ALIGN == 0:
            return found
        start = found + 1


def find_header(image: bytes) -> MultibootHeader:
    """Locate and validate the Multiboot header, or raise `ImageError` saying why not."""
    offset, bad = scan(image)
    if offset is None:
        if bad is not None:
            magic, flags, checksum = _BASIC.unpack_from(image, bad)
            total = (magic + flags + checksum) & 0xFFFFFFFF
            raise ImageError(f"multiboot header at file offset {bad:#x} has a bad checksum "
                             f"{checksum:#010x}: magic + flags + checksum = {total:#010x}, "
                             "must be 0 (mod 2^32)")
        beyond = _magic_beyond_limit(image)
        if beyond is not None:
            raise ImageError(f"multiboot magic {HEADER_MAGIC:#010x} found at file offset "
                             f"{beyond:#x}, beyond the first {SEARCH_LIMIT} bytes where the "
                             "header must lie")
        raise ImageError(f"no multiboot header: magic {HEADER_MAGIC:#010x} not found at any "
                         f"4-byte-aligned offset in the first {SEARCH_LIMIT} bytes")
    _, flags, _ = _BASIC.unpack_from(image, offset)
    unsupported = flags & REQUIRED_MASK & ~SUPPORTED_REQUIREMENTS
    if unsupported:
        bits = [bit for bit in range(16) if unsupported >> bit & 1]
        names = ", ".join(f"bit {bit} ({_REQUIREMENT_NAMES.get(bit, 'unknown requirement')})"
                          for bit in bits)
        raise ImageError(f"multiboot header at file offset {offset:#x} has flags {flags:#010x} "
                         f"requiring {names}, which this loader cannot provide")
    address = None
    if flags & FLAG_ADDRESS_FIELDS:
        end = offset + _BASIC.size + _ADDRESS.size
        if end > len(image) or end > SEARCH_LIMIT:
            raise ImageError(f"multiboot header at file offset {offset:#x} is truncated: flag "
                             f"bit 16 needs address fields up to offset {end:#x}, but "
                             f"{'the file ends' if end > len(image) else 'the header must end'}"
                             f" at {min(len(image), SEARCH_LIMIT):#x}")
        address = AddressFields(*_ADDRESS.unpack_from(image, offset + _BASIC.size))
    return MultibootHeader(offset, flags, address)
