"""Mapping a flat BIOS ROM image and starting the CPU at the reset vector.

After RESET the processor fetches its first instruction at physical
0xFFFFFFF0: CS holds selector 0xF000 but its hidden base is 0xFFFF0000 and
EIP is 0xFFF0 (Intel SDM Vol. 3A §9.1.4, "First Instruction Executed").  The
ROM therefore sits at the top of the 4 GiB space; the board also aliases its
last 128 KiB below 1 MiB (0xE0000-0xFFFFF), where real-mode BIOS code runs
once it far-jumps to an F000 segment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyvmm.cpu.state import CpuState
from pyvmm.errors import ImageError
from pyvmm.machine.reset import reset_state

if TYPE_CHECKING:
    from pyvmm.board.pc import PcBoard

KIB = 1024
MIB = 1024 * KIB
BIOS_GRANULE = 4 * KIB  # page granularity of guest memory regions
BIOS_MIN_SIZE = 64 * KIB  # one real-mode segment: the F000 segment must be filled
BIOS_MAX_SIZE = 16 * MIB  # the largest flash part mapped below 4 GiB on a PC

def check_bios_size(image: bytes) -> None:
    """Raise `ImageError` unless 64 KiB <= size <= 16 MiB and size is a multiple of 4 KiB."""
    size = len(image)
    if size < BIOS_MIN_SIZE:
        raise ImageError(f"BIOS image is {size} bytes: too small, it must be at least "
                         f"{BIOS_MIN_SIZE // KIB} KiB")
    if size > BIOS_MAX_SIZE:
        raise ImageError(f"BIOS image is {size} bytes: too large, it must be at most "
                         f"{BIOS_MAX_SIZE // MIB} MiB")
    if size % BIOS_GRANULE:
        raise ImageError(f"BIOS image is {size} bytes: not a multiple of "
                         f"{BIOS_GRANULE // KIB} KiB")


def load_bios(board: PcBoard, image: bytes) -> CpuState:
    """Map `image` as the board's BIOS ROM and return the reset state."""
    check_bios_size(image)
    if getattr(board, "bios_loaded", False):
        raise ImageError("a BIOS image is already mapped on this board")
    try:
        board.map_bios(bytes(image))
    except ValueError as exc:  # the ROM window collides with another region
        raise ImageError(f"cannot map the {len(image)}-byte BIOS image: {exc}") from None
    return reset_state()
