"""Getting a guest image into memory and choosing the CPU's first state.

Each loader validates the whole image against the board's memory layout
before writing anything, and reports every problem as a one-line
`pyvmm.errors.ImageError`.
"""

from pyvmm.boot.bios import load_bios
from pyvmm.boot.boot_sector import load_boot_sector
from pyvmm.boot.detect import KIND_BOOT_SECTOR, KIND_MULTIBOOT, detect_image_kind
from pyvmm.boot.linux import load_linux
from pyvmm.boot.multiboot import load_multiboot

__all__ = [
    "KIND_BOOT_SECTOR",
    "KIND_MULTIBOOT",
    "detect_image_kind",
    "load_bios",
    "load_boot_sector",
    "load_linux",
    "load_multiboot",
]
