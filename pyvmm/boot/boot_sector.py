"""Loading a 512-byte boot sector the way a PC BIOS does (without the BIOS).

A BIOS reads the first sector of the boot disk to 0000:7C00, checks the
0x55 0xAA signature in its last two bytes, and jumps there in real mode with
the boot drive number in DL (BIOS Boot Specification 1.01, §6.5.1 and
Appendix D).

There is no BIOS here: the interrupt vector table is empty, so INT 10h
(video), INT 13h (disk) and the other BIOS services are NOT available; a boot
sector run this way must drive the hardware itself (pyvmm's bundled boot
sector talks to the 16550 UART at port 0x3F8 directly).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyvmm.boot.ram import Chunk, write_chunks
from pyvmm.cpu.state import CR0_ET, FLAG_RESERVED1, CpuState, SegmentState
from pyvmm.errors import ImageError

if TYPE_CHECKING:
    from pyvmm.board.pc import PcBoard

SECTOR_SIZE = 512
BOOT_SIGNATURE = b"\x55\xaa"  # bytes 510-511 of a bootable sector (BBS 1.01 §6.5.1)
SIGNATURE_OFFSET = SECTOR_SIZE - len(BOOT_SIGNATURE)
LOAD_ADDRESS = 0x7C00  # 0000:7C00, where every PC BIOS loads the boot sector
BOOT_DRIVE_HDD0 = 0x80  # DL on entry: first hard disk (BBS 1.01 Appendix D)
# SS:SP on entry.  Not architectural: a BIOS leaves whatever stack it used;
# 0000:7C00 (growing down, below the sector) is the common convention.
ENTRY_SP = 0x7C00


def check_boot_sector(image: bytes) -> None:
    """Raise `ImageError` unless `image` is exactly one sector with the 0x55AA signature."""
    if not image:
        raise ImageError("boot sector image is empty (expected exactly 512 bytes)")
    if len(image) > SECTOR_SIZE:
        raise ImageError(f"image is {len(image)} bytes: not a boot sector "
                         f"(a boot sector is exactly {SECTOR_SIZE} bytes)")
    if len(image) < SECTOR_SIZE:
        raise ImageError(f"boot sector image is truncated: {len(image)} bytes, "
                         f"expected exactly {SECTOR_SIZE}")
    signature = image[SIGNATURE_OFFSET:SECTOR_SIZE]
    if signature != BOOT_SIGNATURE:
        raise ImageError(f"boot sector signature at offset {SIGNATURE_OFFSET:#x} is "
                         f"{signature[0]:#04x} {signature[1]:#04x}, expected 0x55 0xaa")


def boot_sector_entry_state() -> CpuState:
    """Real mode, CS:IP = 0000:7C00, DS=ES=SS=0, SP=0x7C00, DL=0x80, IF=0.

    CR0 is left with caching enabled (CD=NW=0) as a BIOS leaves it before
    booting; PE=0, so the CPU is in real mode.
    """
    state = CpuState()
    state.segments = {name: SegmentState.real_mode(0) for name in state.segments}
    state.segments["cs"] = SegmentState.real_mode(0, code=True)
    state.rip = LOAD_ADDRESS
    state.set_gpr("rsp", ENTRY_SP)
    state.set_gpr("rdx", BOOT_DRIVE_HDD0)
    state.rflags = FLAG_RESERVED1
    state.cr0 = CR0_ET
    return state


def load_boot_sector(board: PcBoard, image: bytes) -> CpuState:
    """Copy a boot sector to 0x7C00 and return the CPU state a BIOS would jump with."""
    check_boot_sector(image)
    write_chunks(board.memory, [Chunk(LOAD_ADDRESS, bytes(image), SECTOR_SIZE, "boot sector")])
    return boot_sector_entry_state()
