"""A minimal flat GDT that matches the segment caches a loader hands over.

A loader may start the CPU in protected mode with hand-filled hidden segment
caches, but a guest that reloads a segment register (e.g. `mov ds, ax` or a
far jump) before installing its own GDT reads the descriptor from memory.
So loaders also write a GDT whose entries encode exactly those caches.

Segment descriptor layout: Intel SDM Vol. 3A §3.4.5, Figure 3-8.
"""

from __future__ import annotations

import struct

from pyvmm.cpu.state import SegmentState, TableRegister

DESCRIPTOR_SIZE = 8  # bytes per GDT entry (SDM Vol. 3A §3.5.1)
GRANULE_SHIFT = 12  # G=1: limit counts 4 KiB units (SDM Vol. 3A §3.4.5)
MAX_RAW_LIMIT = 0xFFFFF  # 20-bit limit field

# Selectors of the flat GDT written by `flat_gdt` (index << 3, TI=0, RPL=0).
FLAT_CODE_SELECTOR = 0x08
FLAT_DATA_SELECTOR = 0x10


def encode_descriptor(segment: SegmentState) -> int:
    """The 64-bit descriptor whose loading yields `segment`'s hidden cache."""
    limit = segment.limit
    if segment.g:
        if limit & 0xFFF != 0xFFF:
            raise ValueError(f"limit {limit:#x} is not expressible with G=1")
        limit >>= GRANULE_SHIFT
    if limit > MAX_RAW_LIMIT or segment.base > 0xFFFFFFFF:
        raise ValueError(f"base {segment.base:#x} / limit {segment.limit:#x} do not fit")
    base = segment.base
    return ((limit & 0xFFFF)  # limit 15:0
            | (base & 0xFFFFFF) << 16  # base 23:0
            | (segment.type & 0xF) << 40
            | (segment.s & 1) << 44
            | (segment.dpl & 3) << 45
            | (segment.present & 1) << 47
            | (limit >> 16) << 48  # limit 19:16
            | (segment.avl & 1) << 52
            | (segment.l & 1) << 53
            | (segment.db & 1) << 54
            | (segment.g & 1) << 55
            | (base >> 24) << 56)  # base 31:24


def flat_code_segment() -> SegmentState:
    """Selector 0x08: flat 32-bit execute/read code, accessed (type 0xB)."""
    return SegmentState.flat32(FLAT_CODE_SELECTOR, code=True)


def flat_data_segment() -> SegmentState:
    """Selector 0x10: flat 32-bit read/write data, accessed (type 0x3)."""
    return SegmentState.flat32(FLAT_DATA_SELECTOR, code=False)


def flat_gdt(base: int) -> tuple[bytes, TableRegister]:
    """GDT bytes [null, flat code, flat data] and the GDTR that points at them at `base`.

    The accessed bit is pre-set in each type so that a reload neither changes
    the cached type nor makes the CPU write to the table.
    """
    entries = [0, encode_descriptor(flat_code_segment()), encode_descriptor(flat_data_segment())]
    table = b"".join(struct.pack("<Q", entry) for entry in entries)
    return table, TableRegister(base=base, limit=len(table) - 1)
