"""The emulator-side setup: page tables and initial CPU state match the native layout."""

from __future__ import annotations

from pyvmm.board.pc import PcBoard
from pyvmm.difftest.encode import encode_case
from pyvmm.difftest.engine_side import (
    RAM_SIZE,
    initial_state,
    write_32bit_tables,
    write_long_mode_tables,
)
from pyvmm.difftest.generator import generate_case
from pyvmm.oracle.layout import CODE_BASE, DATA_BASE, DATA_SIZE

MAPPED = [CODE_BASE, CODE_BASE + 0xF000, DATA_BASE, DATA_BASE + DATA_SIZE - 0x1000]
UNMAPPED = [CODE_BASE - 0x1000, DATA_BASE + DATA_SIZE, 0, 0x400000]


def walk_4level(board: PcBoard, cr3: int, linear: int) -> int | None:
    """A 4-level walk with 4 KiB pages (SDM Vol. 3A §4.5.4), None if not present."""
    table = cr3
    for shift in (39, 30, 21, 12):
        entry = board.memory.read_u64(table + 8 * (linear >> shift & 0x1FF))
        if not entry & 1:
            return None
        table = entry & 0x000FFFFFFFFFF000
    return table | linear & 0xFFF


def walk_32bit(board: PcBoard, cr3: int, linear: int) -> int | None:
    """A 32-bit paging walk with 4 KiB pages (SDM Vol. 3A §4.3)."""
    pde = board.memory.read_u32(cr3 + 4 * (linear >> 22))
    if not pde & 1:
        return None
    pte = board.memory.read_u32((pde & 0xFFFFF000) + 4 * (linear >> 12 & 0x3FF))
    return (pte & 0xFFFFF000) | linear & 0xFFF if pte & 1 else None


def test_long_mode_tables_identity_map_exactly_the_areas():
    board = PcBoard(ram_size=RAM_SIZE)
    cr3 = write_long_mode_tables(board)
    for address in MAPPED:
        assert walk_4level(board, cr3, address + 0x123) == address + 0x123
    for address in UNMAPPED:
        assert walk_4level(board, cr3, address) is None


def test_32bit_tables_identity_map_exactly_the_areas():
    board = PcBoard(ram_size=RAM_SIZE)
    cr3 = write_32bit_tables(board)
    for address in MAPPED:
        assert walk_32bit(board, cr3, address + 0x7) == address + 0x7
    for address in UNMAPPED:
        assert walk_32bit(board, cr3, address) is None


def test_initial_state_matches_the_mode():
    for mode, name in ((64, "64-bit"), (32, "protected-32"), (16, "protected-16")):
        enc = encode_case(generate_case(mode, 1, 0), exit_stub=0x30001000)
        state = initial_state(enc, cr3=0x1000)
        assert state.mode_name() == name
        assert state.cpl == 0 and not state.rflags & (1 << 9)  # HLT stops: CPL 0, IF=0
        assert state.gprs == enc.case.gprs
        if mode == 16:
            assert state.segments["cs"].base == CODE_BASE
            assert state.segments["ss"].base == DATA_BASE
            assert state.rip == 0
        else:
            assert state.rip == CODE_BASE
