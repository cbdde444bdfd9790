"""`--linux-entry real`: Linux entered through its 16-bit real-mode setup code.

A boot loader's way in, with SeaBIOS as the firmware (as QEMU boots
`-kernel` under SeaBIOS): pyvmm lays the kernel out as a boot loader would
(Documentation/arch/x86/boot.rst, cited as "boot.rst §..."), publishes the
pieces through fw_cfg (QEMU docs/specs/fw_cfg.rst: the KERNEL_*, SETUP_*,
CMDLINE_* and INITRD_* items, each an address, a size and the data) and
maps SeaBIOS at the reset vector.  pyvmm's own option ROM (guests/linuxboot/,
published as fw_cfg file genroms/linuxboot.bin and named first in
"bootorder") is SeaBIOS's first boot device: its Bootstrap Entry Vector
copies the items into RAM with fw_cfg DMA and jumps to the setup code, which
then asks the BIOS for the memory map (INT 15h E820), the keyboard (INT 16h)
and the video state (INT 10h), switches to protected mode and starts the
protected-mode kernel at code32_start.

The layout (boot.rst §"Sample Boot Configuration", for protocol >= 2.02
with LOADED_HIGH, loaded below 0x90000; X = REAL_MODE_BASE, as low as the
firmware's own use of low memory permits -- QEMU's choice too):
    X + 0x0000-0x7FFF   the real-mode part (boot sector + setup sectors)
    X + 0x8000-0xDFFF   stack and heap: heap_end = 0xE000,
                        heap_end_ptr = heap_end - 0x200, CAN_USE_HEAP
    X + 0xE000-0xFFFF   the command line (cmd_line_ptr = X + heap_end)
    0x100000            the protected-mode kernel (boot.rst §"Loading The Rest
                        of The Kernel": a bzImage's load address)
    the initrd          the highest page below initrd_addr_max and below the
                        RAM SeaBIOS keeps for itself at the top of memory
The setup header in the real-mode part is the file's with type_of_loader,
loadflags, heap_end_ptr, cmd_line_ptr, code32_start and ramdisk_image/size
filled in (boot.rst §"Details of Header Fields").

The VM is firmware-booted: a reset re-enters SeaBIOS, which boots the ROM
and so the kernel again (fw_cfg keeps its items over a reset).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pyvmm.boot.bios import load_bios
from pyvmm.boot.linux import (
    CAN_USE_HEAP,
    KERNEL_LOAD,
    LOADED_HIGH,
    TYPE_OF_LOADER,
    SetupHeader,
    _cmdline_bytes,
    _get,
    _initrd_address,
    _put,
    _ram_top,
    parse_header,
)
from pyvmm.cpu.state import CpuState
from pyvmm.devices import fw_cfg as cfg
from pyvmm.errors import ConfigError, ImageError
from pyvmm.files import read_user_file

if TYPE_CHECKING:
    from pyvmm.board.pc import PcBoard
    from pyvmm.devices.fw_cfg import FwCfg

REAL_MODE_BASE = 0x10000
REAL_MODE_CODE_MAX = 0x8000  # the real-mode part: X+0x0000-0x7FFF
HEAP_END = 0xE000  # relative to X; the stack/heap ends here, the command line starts
CMDLINE_MAX = 0x10000 - HEAP_END  # X+0xE000-0xFFFF, with the NUL
SETUP_CODE_OFFSET = 0x200  # the entry: segment X/16 + 0x20, offset 0
# SeaBIOS keeps the top of RAM below 4 GiB for its tables (ACPI, SMBIOS, its
# own data): BUILD_MAX_HIGHTABLE, 256 KiB (SeaBIOS src/config.h), reserved in
# the e820 map it hands the kernel.  The initrd stays below it.
SEABIOS_HIGH_ZONE = 256 * 1024

ROM_FILE = "genroms/linuxboot.bin"
BOOTORDER = f"/rom@{ROM_FILE}\n".encode()  # SeaBIOS's name for a genroms/ file's BEV
DEFAULT_FIRMWARE = Path("/usr/share/seabios/bios-256k.bin")  # Debian's seabios package
MAX_FIRMWARE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Piece:
    """One fw_cfg triple: where the ROM puts `data` (the *_ADDR and *_SIZE items)."""

    address: int
    data: bytes


@dataclass(frozen=True)
class RealModeLayout:
    """What the option ROM copies into RAM, by fw_cfg item."""

    setup: Piece
    kernel: Piece
    cmdline: Piece
    initrd: Piece

    @property
    def entry_segment(self) -> int:
        """The CS the ROM jumps to: the setup segment + 0x20 (boot.rst §"Running the Kernel")."""
        return (self.setup.address + SETUP_CODE_OFFSET) >> 4


# fw_cfg (address item, size item, data item) for each piece; the ROM reads the same table.
FW_CFG_PIECES: dict[str, tuple[int, int, int]] = {
    "kernel": (cfg.KERNEL_ADDR, cfg.KERNEL_SIZE, cfg.KERNEL_DATA),
    "initrd": (cfg.INITRD_ADDR, cfg.INITRD_SIZE, cfg.INITRD_DATA),
    "cmdline": (cfg.CMDLINE_ADDR, cfg.CMDLINE_SIZE, cfg.CMDLINE_DATA),
    "setup": (cfg.SETUP_ADDR, cfg.SETUP_SIZE, cfg.SETUP_DATA),
}


def _check_real_mode_kernel(image: bytes, header: SetupHeader) -> None:
    """A bzImage whose real-mode part fits the layout (boot.rst §"Loading The Rest")."""
    if not _get(image, "loadflags") & LOADED_HIGH:
        raise ImageError("a zImage (loadflags bit 0, LOADED_HIGH, clear) loads at 0x10000 "
                         "with its real-mode part at 0x90000: pyvmm boots bzImages only")
    if header.setup_size > REAL_MODE_CODE_MAX:
        raise ImageError(f"the real-mode part is {header.setup_size} bytes; boot.rst's "
                         f"layout has room for {REAL_MODE_CODE_MAX:#x}")


def real_mode_layout(image: bytes, ram_top: int, cmdline: str = "",
                     initrd: bytes | None = None) -> RealModeLayout:
    """Lay a bzImage out for the real-mode entry; one-line errors for what does not fit."""
    image = bytes(image)
    header = parse_header(image)
    _check_real_mode_kernel(image, header)
    kernel = image[header.setup_size:]
    decompress_end = max(KERNEL_LOAD, header.pref_address) + header.init_size
    kernel_end = max(KERNEL_LOAD + len(kernel), decompress_end)
    if kernel_end > ram_top - SEABIOS_HIGH_ZONE:
        raise ImageError(f"the kernel needs RAM up to {kernel_end:#x}; guest RAM ends at "
                         f"{ram_top:#x}, SeaBIOS keeps the last {SEABIOS_HIGH_ZONE // 1024} "
                         "KiB: give more -m")
    command = _cmdline_bytes(cmdline, header)
    if len(command) > CMDLINE_MAX:
        raise ConfigError(f"kernel command line is {len(command) - 1} bytes; the real-mode "
                          f"layout has room for {CMDLINE_MAX - 1}")
    initrd_data = initrd or b""
    initrd_at = (_initrd_address(header, ram_top - SEABIOS_HIGH_ZONE, kernel_end,
                                 len(initrd_data)) if initrd_data else 0)
    setup = bytearray(image[:header.setup_size])
    _put(setup, "type_of_loader", TYPE_OF_LOADER)
    _put(setup, "loadflags", _get(setup, "loadflags") | CAN_USE_HEAP)
    _put(setup, "heap_end_ptr", HEAP_END - 0x200)
    _put(setup, "cmd_line_ptr", REAL_MODE_BASE + HEAP_END)
    _put(setup, "code32_start", KERNEL_LOAD)
    _put(setup, "ramdisk_image", initrd_at)
    _put(setup, "ramdisk_size", len(initrd_data))
    return RealModeLayout(setup=Piece(REAL_MODE_BASE, bytes(setup)),
                          kernel=Piece(KERNEL_LOAD, kernel),
                          cmdline=Piece(REAL_MODE_BASE + HEAP_END, command),
                          initrd=Piece(initrd_at, initrd_data))


def linuxboot_rom() -> bytes:
    """The option ROM's image (guests/linuxboot/, built by `make -C guests install`)."""
    from pyvmm.guests import LINUXBOOT_ROM

    return LINUXBOOT_ROM.read_bytes()


def publish(fw_cfg: FwCfg, layout: RealModeLayout, rom: bytes) -> None:
    """The layout as fw_cfg items, the ROM as genroms/linuxboot.bin, booted first."""
    for name, (address_item, size_item, data_item) in FW_CFG_PIECES.items():
        piece: Piece = getattr(layout, name)
        fw_cfg.add_u32(address_item, piece.address)
        fw_cfg.add_u32(size_item, len(piece.data))
        fw_cfg.add(data_item, piece.data)
    fw_cfg.add_file(ROM_FILE, rom)
    fw_cfg.add_file("bootorder", BOOTORDER)


def read_firmware(path: Path | None) -> bytes:
    """The BIOS the real entry boots through: `path`, or Debian's SeaBIOS."""
    if path is None:
        if not DEFAULT_FIRMWARE.exists():
            raise ConfigError(f"--linux-entry real boots through SeaBIOS: {DEFAULT_FIRMWARE} "
                              "is absent (Debian package seabios); give --bios FILE")
        path = DEFAULT_FIRMWARE
    return read_user_file(path, MAX_FIRMWARE_BYTES, ImageError, "BIOS image")


def load_linux_real(board: PcBoard, image: bytes, cmdline: str = "",
                    initrd: bytes | None = None, firmware: Path | None = None) -> CpuState:
    """Publish the kernel for the option ROM and map the BIOS; return the reset state.

    Everything is checked (the kernel, the layout, the BIOS image) before the
    board is changed.
    """
    layout = real_mode_layout(image, _ram_top(board), cmdline, initrd)
    bios = read_firmware(firmware)
    rom = linuxboot_rom()
    state = load_bios(board, bios)
    publish(board.devices["fw_cfg"], layout, rom)
    return state


def publish_kernel(board: PcBoard, image: bytes, cmdline: str = "",
                   initrd: bytes | None = None) -> None:
    """Only the fw_cfg items: for a board restored from a snapshot, whose memory
    (the BIOS included) the snapshot holds but whose fw_cfg items it does not,
    so that a reset boots the kernel again."""
    publish(board.devices["fw_cfg"], real_mode_layout(image, _ram_top(board), cmdline, initrd),
            linuxboot_rom())
