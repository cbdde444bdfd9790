"""The guests bundled with pyvmm: their built images ship in this package.

Sources, Makefile and a description of each guest live in the repository's
guests/ directory; `make -C guests install` rebuilds the images copied here.
Every bundled guest ends through the debug-exit port 0xF4: it writes 0x10 on
success (pyvmm/QEMU exit status 33) and 0x11 on failure (status 35).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pyvmm.errors import ConfigError

GuestKind = Literal["boot-sector", "multiboot"]

# Values the bundled guests write to the debug-exit port, and the status the
# VM then exits with ((value << 1) | 1, as QEMU's isa-debug-exit).
EXIT_SUCCESS_VALUE = 0x10
EXIT_FAILURE_VALUE = 0x11
EXIT_SUCCESS_STATUS = (EXIT_SUCCESS_VALUE << 1) | 1
EXIT_FAILURE_STATUS = (EXIT_FAILURE_VALUE << 1) | 1

_IMAGE_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class BundledGuest:
    """One guest image shipped with pyvmm."""

    name: str
    filename: str
    kind: GuestKind
    description: str
    default_cmdline: str = ""

    @property
    def path(self) -> Path:
        return _IMAGE_DIR / self.filename


BUNDLED_GUESTS: dict[str, BundledGuest] = {
    guest.name: guest
    for guest in (
        BundledGuest(
            name="hello",
            filename="hello.bin",
            kind="boot-sector",
            description="512-byte real-mode boot sector: prints one line on COM1 and exits",
        ),
        BundledGuest(
            name="demo",
            filename="demo.elf",
            kind="multiboot",
            description=(
                "64-bit multiboot kernel: long mode, GDT/IDT/TSS, PIC+PIT, two ring-3 tasks "
                "preempted by the timer, int 0x80 system calls, a demand-zero page fault; "
                "command line: work=N (slices per task, default 20), pv"
            ),
            default_cmdline="work=20",
        ),
    )
}


def guest_path(name: str) -> Path:
    """The image file of the bundled guest `name`."""
    try:
        guest = BUNDLED_GUESTS[name]
    except KeyError:
        known = ", ".join(sorted(BUNDLED_GUESTS))
        raise ConfigError(f"no bundled guest named {name!r} (bundled: {known})") from None
    return guest.path
