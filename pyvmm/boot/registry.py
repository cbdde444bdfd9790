"""The image kinds: one row per loader, one row per image option.

Everything that depends on what kind of image a VM boots reads this table:
`pyvmm.vm.load_image` (which loader), the CLI and the hypervisor's TOML
files (which option or key names an image file, and which kind that is),
snapshots (the kind they record must be one of these), and the board's
reset (whether a reset re-enters the image: only firmware at the reset
vector survives a reset; a kernel loaded directly has nothing to restart).

A new loader is its module plus one `LOADERS` row (and an `IMAGE_OPTIONS`
row if a new option names its files).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pyvmm.boot.linux import FIRMWARE_ENTRIES
from pyvmm.errors import ConfigError

if TYPE_CHECKING:
    from pyvmm.board.pc import PcBoard
    from pyvmm.cpu.state import CpuState


@dataclass(frozen=True)
class BootInputs:
    """What a loader gets besides the image's bytes."""

    cmdline: str = ""
    initrd: bytes | None = None
    linux_entry: str = "64"  # linux: how a bzImage starts (boot.linux.LINUX_ENTRIES)
    firmware: Path | None = None  # linux, --linux-entry real: the BIOS (--bios)


LoadFunction = Callable[["PcBoard", bytes, BootInputs], "CpuState"]
RepublishFunction = Callable[["PcBoard", bytes, BootInputs], None]


@dataclass(frozen=True)
class Loader:
    """One image kind.

    `cmdline`/`initrd`: whether --append/--initrd apply.  `firmware`: the
    image is a ROM entered at the reset vector, so a machine reset re-enters
    it (SDM Vol. 3A §9.1.1); `firmware_entries`: the --linux-entry values
    that boot through firmware too.  For every other image a reset stops the VM.
    `republish`, for the `firmware_entries`: what a board restored from a
    snapshot needs from the image besides the memory the snapshot holds (the
    fw_cfg items the firmware loads the kernel from at each reset).
    """

    kind: str
    load: LoadFunction
    cmdline: bool = False
    initrd: bool = False
    firmware: bool = False
    firmware_entries: frozenset[str] = frozenset()
    republish: RepublishFunction | None = None

    def boots_firmware(self, linux_entry: str) -> bool:
        """Whether the VM starts at the reset vector, so that a reset re-enters it."""
        return self.firmware or linux_entry in self.firmware_entries


def _multiboot(board: PcBoard, data: bytes, inputs: BootInputs) -> CpuState:
    from pyvmm.boot.multiboot import load_multiboot

    return load_multiboot(board, data, inputs.cmdline)


def _linux_cmdline(board: PcBoard, inputs: BootInputs) -> str:
    # The virtio-mmio devices are announced on the command line (virtio_mmio.device=).
    return " ".join(part for part in (inputs.cmdline, board.virtio_cmdline()) if part)


def _linux(board: PcBoard, data: bytes, inputs: BootInputs) -> CpuState:
    from pyvmm.boot.linux import load_linux

    cmdline = _linux_cmdline(board, inputs)
    if inputs.linux_entry in FIRMWARE_ENTRIES:
        from pyvmm.boot.linux_real import load_linux_real

        return load_linux_real(board, data, cmdline, inputs.initrd, inputs.firmware)
    return load_linux(board, data, cmdline, inputs.initrd, inputs.linux_entry)


def _linux_republish(board: PcBoard, data: bytes, inputs: BootInputs) -> None:
    from pyvmm.boot.linux_real import publish_kernel

    publish_kernel(board, data, _linux_cmdline(board, inputs), inputs.initrd)


def _boot_sector(board: PcBoard, data: bytes, inputs: BootInputs) -> CpuState:
    from pyvmm.boot.boot_sector import load_boot_sector

    return load_boot_sector(board, data)


def _bios(board: PcBoard, data: bytes, inputs: BootInputs) -> CpuState:
    from pyvmm.boot.bios import load_bios

    return load_bios(board, data)


LOADERS: dict[str, Loader] = {row.kind: row for row in (
    Loader("multiboot", _multiboot, cmdline=True),
    Loader("linux", _linux, cmdline=True, initrd=True, firmware_entries=FIRMWARE_ENTRIES,
           republish=_linux_republish),
    Loader("boot-sector", _boot_sector),
    Loader("bios", _bios, firmware=True),
)}


def _kernel_kind(data: bytes, name: str) -> str:
    from pyvmm.boot.detect import detect_kernel_kind

    return detect_kernel_kind(data, name)


@dataclass(frozen=True)
class ImageOption:
    """A command-line option (and hypervisor TOML key) naming an image file.

    `kind` is the kind a file given there has; `detect`, when present, reads
    the file and refines it (`--kernel` takes a bzImage or a multiboot kernel).
    """

    flag: str
    kind: str
    help: str
    detect: Callable[[bytes, str], str] | None = None

    @property
    def key(self) -> str:
        """The argparse destination and the hypervisor file's key: boot_sector."""
        return self.flag.removeprefix("--").replace("-", "_")


IMAGE_OPTIONS: tuple[ImageOption, ...] = (
    ImageOption("--kernel", "multiboot",
                "a Linux bzImage (boot protocol 2.10+, entered in 64-bit mode or, with "
                "--linux-entry real, through SeaBIOS and its real-mode setup code), a Linux "
                "vmlinux (ELF64) or a multiboot v1 kernel (ELF32, ELF64 or a.out kludge)",
                detect=_kernel_kind),
    ImageOption("--boot-sector", "boot-sector",
                "a 512-byte boot sector, run at 0000:7C00 in real mode"),
    ImageOption("--bios", "bios", "a flat BIOS ROM, entered at the reset vector (beside "
                "--kernel with --linux-entry real: the BIOS the kernel boots through)"),
)


def loader(kind: str) -> Loader:
    """The row of `kind`; ConfigError for a kind no loader has."""
    try:
        return LOADERS[kind]
    except KeyError:
        raise ConfigError(f"unknown image kind {kind!r}") from None


def kinds_taking(attribute: str) -> tuple[str, ...]:
    """The kinds whose row has `attribute` ("cmdline", "initrd") set, in table order."""
    return tuple(kind for kind, row in LOADERS.items() if getattr(row, attribute))
