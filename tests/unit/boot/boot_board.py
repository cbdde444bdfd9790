"""The board the loader tests run on: a real PcBoard with a small RAM."""

from __future__ import annotations

from pyvmm.board.pc import PcBoard

MIB = 1 << 20
RAM_SIZE = 8 * MIB


def make_board(ram_size: int = RAM_SIZE) -> PcBoard:
    return PcBoard(ram_size=ram_size)
