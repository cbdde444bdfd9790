"""The GDT a multiboot loader writes must encode exactly the caches it hands over."""

import struct

from boot_builders import elf32_kernel

from pyvmm.boot import load_multiboot
from pyvmm.boot.gdt import encode_descriptor
from pyvmm.cpu.state import SegmentState


def decode(descriptor: int) -> dict[str, int]:
    """Independent decoding of SDM Vol. 3A Figure 3-8."""
    raw_limit = (descriptor & 0xFFFF) | ((descriptor >> 48) & 0xF) << 16
    g = descriptor >> 55 & 1
    return {
        "base": (descriptor >> 16 & 0xFFFFFF) | (descriptor >> 56 & 0xFF) << 24,
        "limit": (raw_limit << 12 | 0xFFF) if g else raw_limit,
        "type": descriptor >> 40 & 0xF, "s": descriptor >> 44 & 1,
        "dpl": descriptor >> 45 & 3, "present": descriptor >> 47 & 1,
        "avl": descriptor >> 52 & 1, "l": descriptor >> 53 & 1,
        "db": descriptor >> 54 & 1, "g": g,
    }


def cache_fields(seg: SegmentState) -> dict[str, int]:
    return {k: getattr(seg, k) for k in ("base", "limit", "type", "s", "dpl", "present", "avl",
                                         "l", "db", "g")}


def test_known_flat_descriptors():
    assert encode_descriptor(SegmentState.flat32(8, code=True)) == 0x00CF9B000000FFFF
    assert encode_descriptor(SegmentState.flat32(16, code=False)) == 0x00CF93000000FFFF


def test_encoding_round_trips_through_the_sdm_layout():
    seg = SegmentState(base=0x12345678, limit=0xABCDE, type=0x5, s=1, dpl=2, avl=1, db=0, g=0)
    assert decode(encode_descriptor(seg)) == cache_fields(seg)


def test_gdt_in_memory_matches_every_segment_cache(board):
    state = load_multiboot(board, elf32_kernel())
    assert state.gdtr.limit == 3 * 8 - 1
    table = board.memory.read(state.gdtr.base, state.gdtr.limit + 1)
    entries = struct.unpack("<3Q", table)
    assert entries[0] == 0
    for seg in state.segments.values():
        index = seg.selector >> 3
        assert seg.selector & 7 == 0 and 0 < index < 3
        assert decode(entries[index]) == cache_fields(seg)
