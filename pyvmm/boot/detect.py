"""Telling image kinds apart, for an automatic `--image` mode.

A Multiboot kernel is recognised by its header in the first 8192 bytes
(Multiboot Specification 0.6.96 §3.1); a boot sector by being exactly 512
bytes ending in 0x55 0xAA (BIOS Boot Specification 1.01 §6.5.1).  The
multiboot check comes first: a valid header is unambiguous, while any
512-byte file may end in 0x55 0xAA.
"""

from __future__ import annotations

from pyvmm.boot.boot_sector import BOOT_SIGNATURE, SECTOR_SIZE, SIGNATURE_OFFSET
from pyvmm.boot.multiboot_header import SEARCH_LIMIT, find_header, scan
from pyvmm.errors import ImageError

KIND_MULTIBOOT = "multiboot"
KIND_BOOT_SECTOR = "boot-sector"
KIND_LINUX = "linux"


def detect_kernel_kind(image: bytes, name: str = "kernel") -> str:
    """What `--kernel FILE` is: "linux" (a bzImage: "HdrS" at 0x202, the
    kernel's Documentation/arch/x86/boot.rst; or a vmlinux: an ELF64 file with
    "Linux" ELF notes) or "multiboot" (a valid header in the first 8192 bytes);
    otherwise one `ImageError` naming the three."""
    from pyvmm.boot.linux import is_bzimage, is_vmlinux

    if is_bzimage(image):
        return KIND_LINUX
    valid, broken = scan(image)
    if valid is not None or broken is not None:
        find_header(image)  # raises for a broken or unsupported header
        return KIND_MULTIBOOT
    if is_vmlinux(image):
        return KIND_LINUX
    raise ImageError(f"{name}: neither a Linux bzImage (no \"HdrS\" at 0x202), a Linux "
                     "vmlinux (no ELF64 file with \"Linux\" notes) nor a multiboot kernel "
                     f"(no multiboot header in the first {SEARCH_LIMIT} bytes)")


def detect_image_kind(image: bytes) -> str:
    """"multiboot" or "boot-sector"; `ImageError` if the image is neither.

    An image carrying the multiboot magic but a broken header (bad checksum,
    unsupported requirement) raises that header's error, which says more
    than "unrecognised".
    """
    valid, broken = scan(image)
    if valid is not None:
        find_header(image)  # raises if the header demands what the loader cannot do
        return KIND_MULTIBOOT
    if len(image) == SECTOR_SIZE and image[SIGNATURE_OFFSET:] == BOOT_SIGNATURE:
        return KIND_BOOT_SECTOR
    if broken is not None:
        find_header(image)  # raises the bad-checksum error
    raise ImageError(f"unrecognised image ({len(image)} bytes): no multiboot header in the "
                     f"first {SEARCH_LIMIT} bytes and not a {SECTOR_SIZE}-byte boot sector "
                     "ending in 0x55 0xaa")
