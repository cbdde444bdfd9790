"""The board loader tests run on: the real PcBoard, or a stand-in with its RAM layout.

The stand-in exists only while pyvmm/devices/* (imported by pyvmm.board.pc)
is being written; it mirrors PcBoard's memory map, e820 map and map_bios.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyvmm.machine.memory import GuestMemory, allocate_backing

MIB = 1 << 20

try:
    from pyvmm.board.pc import PcBoard
except ModuleNotFoundError:  # pyvmm/devices/* not all written yet
    PcBoard = None


@dataclass
class _E820Entry:
    base: int
    length: int
    type: int


class StandInBoard:
    """PcBoard's memory side only: ram-low 0-640K, ram-high 1M-end, BIOS at 4G-size."""

    def __init__(self, ram_size: int) -> None:
        self.ram_size = ram_size
        self.memory = GuestMemory()
        self._ram = allocate_backing(ram_size)
        self.memory.add_region("ram-low", 0, 0xA0000, self._ram, 0)
        self.memory.add_region("ram-high", 0x100000, ram_size - 0x100000, self._ram, 0x100000)
        self.bios_loaded = False

    def map_bios(self, image: bytes) -> None:
        size = len(image)
        backing = allocate_backing(size)
        backing[:] = image
        self.memory.add_region("bios", (1 << 32) - size, size, backing, 0, readonly=True)
        low = min(size, 128 * 1024)
        self.memory.add_region("bios-low", 0x100000 - low, low, backing, size - low,
                               readonly=True)
        self.bios_loaded = True

    def e820_map(self) -> list[_E820Entry]:
        return [_E820Entry(0, 0xA0000, 1), _E820Entry(0xF0000, 0x10000, 2),
                _E820Entry(0x100000, self.ram_size - 0x100000, 1)]

    def close(self) -> None:
        self.memory.close()


RAM_SIZE = 8 * MIB


def make_board(ram_size: int = RAM_SIZE):
    return PcBoard(ram_size=ram_size) if PcBoard is not None else StandInBoard(ram_size)

