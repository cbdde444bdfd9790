"""The Multiboot (v1) boot information structure a loader hands the kernel.

Layout and flag bits: Multiboot Specification 0.6.96 §3.3.  All addresses
are physical and 32-bit.  The memory map (§3.3, "mmap_*") is a sequence of
entries each preceded by its own size field; `mmap_addr` points at the size
field of the first entry.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# Info flag bits (§3.3).
INFO_MEMORY = 1 << 0  # mem_lower / mem_upper valid
INFO_BOOT_DEVICE = 1 << 1  # boot_device valid (never set here: no boot disk)
INFO_CMDLINE = 1 << 2  # cmdline valid
INFO_MMAP = 1 << 6  # mmap_length / mmap_addr valid
INFO_BOOT_LOADER_NAME = 1 << 9  # boot_loader_name valid

# Field offsets in the info structure (§3.3).
OFF_FLAGS = 0
OFF_MEM_LOWER = 4
OFF_MEM_UPPER = 8
OFF_BOOT_DEVICE = 12
OFF_CMDLINE = 16
OFF_MMAP_LENGTH = 44
OFF_MMAP_ADDR = 48
OFF_BOOT_LOADER_NAME = 64
INFO_SIZE = 116  # through the framebuffer fields (offset 115); unused fields are 0

MMAP_ENTRY = struct.Struct("<IQQI")  # size, base_addr, length, type
MMAP_ENTRY_SIZE_FIELD = MMAP_ENTRY.size - 4  # "size" excludes itself: 20

# mem_lower is in KiB from 0.  A BIOS's INT 12h reports 639 KiB on a PC
# whose last KiB below 640 KiB holds the extended BIOS data area; that top
# KiB (0x9FC00-0x9FFFF) is treated as reserved by convention.
MEM_LOWER_MAX_KIB = 639
HIGH_MEMORY_START = 0x100000  # mem_upper counts KiB from 1 MiB (§3.3)


@dataclass(frozen=True)
class MemoryMapEntry:
    base: int
    length: int
    type: int  # 1 = available RAM, other values reserved (§3.3)


@dataclass(frozen=True)
class BootInfo:
    """What goes into the info structure; addresses of the pointed-to blobs included."""

    mem_lower: int  # KiB
    mem_upper: int  # KiB
    cmdline_addr: int
    mmap_addr: int
    mmap_length: int
    boot_loader_name_addr: int

    def encode(self) -> bytes:
        info = bytearray(INFO_SIZE)
        flags = INFO_MEMORY | INFO_CMDLINE | INFO_MMAP | INFO_BOOT_LOADER_NAME
        for offset, value in ((OFF_FLAGS, flags), (OFF_MEM_LOWER, self.mem_lower),
                              (OFF_MEM_UPPER, self.mem_upper),
                              (OFF_CMDLINE, self.cmdline_addr),
                              (OFF_MMAP_LENGTH, self.mmap_length),
                              (OFF_MMAP_ADDR, self.mmap_addr),
                              (OFF_BOOT_LOADER_NAME, self.boot_loader_name_addr)):
            struct.pack_into("<I", info, offset, value)
        return bytes(info)


def encode_mmap(entries: list[MemoryMapEntry]) -> bytes:
    return b"".join(MMAP_ENTRY.pack(MMAP_ENTRY_SIZE_FIELD, e.base, e.length, e.type)
                    for e in entries)


def memory_sizes(entries: list[MemoryMapEntry], ram_type: int = 1) -> tuple[int, int]:
    """(mem_lower, mem_upper) in KiB from the RAM entries at 0 and at 1 MiB."""
    lower = upper = 0
    for entry in entries:
        if entry.type != ram_type:
            continue
        if entry.base == 0:
            lower = min(entry.length // 1024, MEM_LOWER_MAX_KIB)
        elif entry.base == HIGH_MEMORY_START:
            upper = entry.length // 1024
    return lower, upper
