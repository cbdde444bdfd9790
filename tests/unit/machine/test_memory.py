"""GuestMemory (pyvmm/machine/memory.py): regions, holes, ROM and bounds checks.

The layout under test is a PcBoard's (the PC/AT map): RAM at 0-640 KiB, the
legacy hole at 640 KiB-1 MiB (VGA window and option ROMs, no RAM), RAM again
from 1 MiB to the end of memory.  Every access that is not wholly inside one
region must raise GuestMemoryError, never read or write host memory beside
the guest's.
"""

from __future__ import annotations

import pytest

from pyvmm.board.pc import HIGH_RAM_START, LOW_RAM_END, MIB, PcBoard
from pyvmm.errors import GuestMemoryError, PyvmmError
from pyvmm.machine.memory import PAGE_SIZE, GuestMemory, allocate_backing

RAM = 4 * MIB


@pytest.fixture
def board():
    pc = PcBoard(ram_size=RAM)
    yield pc
    pc.close()


@pytest.fixture
def memory():
    mem = GuestMemory()
    yield mem
    mem.close()


# -- holes and bounds ---------------------------------------------------------

@pytest.mark.parametrize("gpa", [LOW_RAM_END, 0xB8000, 0xC0000, 0xF0000, HIGH_RAM_START - 1])
def test_legacy_hole_is_not_memory(board, gpa):
    """640 KiB-1 MiB is a hole on a PcBoard without a BIOS: reads and writes raise."""
    with pytest.raises(GuestMemoryError) as error:
        board.memory.read(gpa, 1)
    assert (error.value.gpa, error.value.length) == (gpa, 1)
    with pytest.raises(GuestMemoryError):
        board.memory.write(gpa, b"\x00")
    with pytest.raises(GuestMemoryError):
        board.memory.load_rom_bytes(gpa, b"\x00")
    assert not board.memory.is_mapped(gpa)


@pytest.mark.parametrize("gpa", [RAM, RAM + PAGE_SIZE, 1 << 32, (1 << 52) - 8])
def test_above_ram_is_not_memory(board, gpa):
    with pytest.raises(GuestMemoryError):
        board.memory.read_u64(gpa)
    with pytest.raises(GuestMemoryError):
        board.memory.write_u64(gpa, 0x1122334455667788)


@pytest.mark.parametrize("gpa, length, mapped_byte", [
    (LOW_RAM_END - 4, 8, LOW_RAM_END - 1),        # low RAM into the hole
    (HIGH_RAM_START - 2, 4, HIGH_RAM_START),      # the hole into high RAM
    (RAM - 1, 2, RAM - 1),                        # the last byte of RAM and one past it
    (RAM - 8, 9, RAM - 8),
])
def test_access_straddling_a_region_end_is_refused_whole(board, gpa, length, mapped_byte):
    """Partly mapped is not mapped: nothing is read, nothing is written."""
    mem = board.memory
    mem.write_u8(mapped_byte, 0x5A)
    with pytest.raises(GuestMemoryError) as error:
        mem.read(gpa, length)
    assert (error.value.gpa, error.value.length) == (gpa, length)
    with pytest.raises(GuestMemoryError):
        mem.write(gpa, b"\xAA" * length)
    with pytest.raises(GuestMemoryError):
        mem.load_rom_bytes(gpa, b"\xAA" * length)
    assert mem.read_u8(mapped_byte) == 0x5A  # the mapped part was not touched


def test_region_edges_are_inclusive_exclusive(board):
    mem = board.memory
    mem.write(LOW_RAM_END - 4, b"LAST")
    mem.write(HIGH_RAM_START, b"1MiB")
    mem.write(RAM - 4, b"TOP!")
    assert mem.read(LOW_RAM_END - 4, 4) == b"LAST"
    assert mem.read(HIGH_RAM_START, 4) == b"1MiB"
    assert mem.read(RAM - 4, 4) == b"TOP!"


def test_guest_memory_error_is_a_one_line_pyvmm_error(board):
    with pytest.raises(PyvmmError) as error:
        board.memory.read(0xA0000, 2)
    message = str(error.value)
    assert "0xa0000" in message and "\n" not in message


def test_low_and_high_ram_share_one_backing_at_matching_offsets(board):
    """One anonymous mmap backs all RAM (KVM maps it once): a write at 1 MiB
    lands at host offset 1 MiB of that mapping."""
    board.memory.write(HIGH_RAM_START + 0x10, b"shared")
    assert board._ram[HIGH_RAM_START + 0x10:HIGH_RAM_START + 0x16] == b"shared"


def test_integer_accessors_are_little_endian_and_truncate(memory):
    memory.add_region("ram", 0, PAGE_SIZE)
    memory.write_u32(0x10, 0x1_AABBCCDD)  # 33 bits: the top bit is dropped
    assert memory.read(0x10, 4) == bytes.fromhex("DDCCBBAA")
    assert memory.read_u16(0x12) == 0xAABB
    memory.write_int(0x20, 3, 0x112233)
    assert memory.read_int(0x20, 3) == 0x112233
    assert memory.read_u8(0x22) == 0x11


# -- ROM ----------------------------------------------------------------------

def test_guest_writes_to_rom_are_dropped_but_loaders_can_fill_it(memory):
    backing = allocate_backing(PAGE_SIZE)
    memory.add_region("rom", 0xF0000, PAGE_SIZE, backing, readonly=True)
    memory.load_rom_bytes(0xF0000, b"\xEA\x5B\xE0")
    memory.write(0xF0000, b"\x90\x90\x90")          # a guest write: dropped
    memory.write_u32(0xF0004, 0xDEADBEEF)
    assert memory.read(0xF0000, 3) == b"\xEA\x5B\xE0"
    assert memory.read_u32(0xF0004) == 0
    assert backing[:3] == b"\xEA\x5B\xE0"


def test_bios_rom_on_a_board_is_read_only_in_both_windows(board):
    image = bytes(range(256)) * (64 * 1024 // 256)
    board.map_bios(image)
    top = (1 << 32) - len(image)
    assert board.memory.read(top, 4) == image[:4]
    assert board.memory.read(0xFFFF0, 16) == image[-16:]  # the reset vector, below 1 MiB
    board.memory.write(0xFFFF0, b"\xCC" * 16)
    assert board.memory.read(0xFFFF0, 16) == image[-16:]
    assert board.memory.ram_size == RAM - (HIGH_RAM_START - LOW_RAM_END)  # ROM is not RAM


# -- layout -------------------------------------------------------------------

@pytest.mark.parametrize("gpa, size", [
    (0x2000, 0x2000),   # the same range
    (0x1000, 0x2000),   # its end overlaps the first page
    (0x3000, 0x2000),   # its start overlaps the last page
    (0x3000, 0x1000),   # inside
    (0x0000, 0x10000),  # contains it
])
def test_overlapping_regions_are_refused(memory, gpa, size):
    memory.add_region("first", 0x2000, 0x2000)
    with pytest.raises(ValueError, match="overlaps first"):
        memory.add_region("second", gpa, size)
    assert [r.name for r in memory.regions] == ["first"]


def test_adjacent_regions_are_allowed_and_an_access_may_not_span_them(memory):
    """Two regions that touch are still two: an access across the seam raises
    (each region may have its own backing and its own access rules)."""
    memory.add_region("a", 0x0000, 0x1000)
    memory.add_region("b", 0x1000, 0x1000)
    memory.write(0x0FFC, b"abcd")
    memory.write(0x1000, b"efgh")
    with pytest.raises(GuestMemoryError):
        memory.read(0x0FFE, 4)


@pytest.mark.parametrize("gpa, size", [(0x800, 0x1000), (0x1000, 0x800), (0, 0)])
def test_regions_must_be_page_aligned(memory, gpa, size):
    with pytest.raises(ValueError, match="page-aligned"):
        memory.add_region("odd", gpa, size)


def test_region_larger_than_its_backing_is_refused(memory):
    with pytest.raises(ValueError, match="exceeds its backing"):
        memory.add_region("big", 0, 2 * PAGE_SIZE, allocate_backing(PAGE_SIZE))


# -- write observers ------------------------------------------------------------

def test_write_observers_see_every_write_made_through_memory(memory):
    memory.add_region("ram", 0, 2 * PAGE_SIZE)
    memory.add_region("rom", 0x10000, PAGE_SIZE, readonly=True)
    seen: list[tuple[int, int]] = []
    memory.write_observers.append(lambda gpa, length: seen.append((gpa, length)))
    memory.write(0x123, b"abc")
    memory.write_u64(0x1FF8, 7)
    memory.load_rom_bytes(0x10000, b"\x01\x02")
    assert seen == [(0x123, 3), (0x1FF8, 8), (0x10000, 2)]


def test_write_observers_are_not_told_of_dropped_or_refused_writes(memory):
    memory.add_region("rom", 0, PAGE_SIZE, readonly=True)
    seen: list[tuple[int, int]] = []
    memory.write_observers.append(lambda gpa, length: seen.append((gpa, length)))
    memory.write(0x10, b"x")                  # ROM: dropped
    with pytest.raises(GuestMemoryError):
        memory.write(PAGE_SIZE, b"x")         # a hole
    assert seen == []
