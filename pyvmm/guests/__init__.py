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
# Built with the guests but not a guest: the option ROM that --linux-entry real
# boots through SeaBIOS (guests/linuxboot/, pyvmm/boot/linux_real.py).
LINUXBOOT_ROM = _IMAGE_DIR / "linuxboot.bin"


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


# The benchmark kernels (guests/bench/, run by `python -m bench`): name -> what it measures.
BENCH_GUESTS: dict[str, str] = {
    "int": "integer and branch loop in ring 3, paging on",
    "mem": "pointer chase over 8192 pages (more than a TLB holds); pages=P shrinks it",
    "sys": "int 0x80 system calls and context switches between two ring-3 tasks",
    "io": "one OUT to port 0x80 per iteration (ring 0): VM-exit round trips",
    "kloop": "32-bit protected-mode kernel loop (ring 0, 2-level paging): xorshift, table "
             "load, imul, store, data-dependent branch",
}

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
                "command line: work=N (slices per task, default 20), spin=N (task A's slices "
                "take N times as long, so the timer preempts it; same checksums), pv (pyvmm's "
                "PV timer and console when the hypervisor leaf is present)"
            ),
            default_cmdline="work=20",
        ),
        BundledGuest(
            name="ping",
            filename="ping.elf",
            kind="multiboot",
            description=(
                "64-bit multiboot kernel for two VMs on pyvmm's virtual switch: exchanges "
                "datagrams with its peer through hypercalls and checks every payload "
                "(docs/PARAVIRT.md); command line: count=N (default 16), peer=ID"
            ),
            default_cmdline="count=16",
        ),
        BundledGuest(
            name="apic",
            filename="apic.elf",
            kind="multiboot",
            description=(
                "64-bit multiboot kernel on the local APIC and I/O APIC: the LAPIC timer "
                "periodic then TSC-deadline, the PIT (GSI 2) and COM1's THR-empty interrupt "
                "(GSI 4) through the I/O APIC, a self-IPI; prints one line of counts"
            ),
        ),
        *(
            BundledGuest(
                name=f"bench-{name}",
                filename=f"bench-{name}.elf",
                kind="multiboot",
                description=f"benchmark: {what}; prints its exact instruction count; "
                            "command line: n=N (iterations, default 100000), reps=R",
                default_cmdline="n=100000",
            )
            for name, what in BENCH_GUESTS.items()
        ),
    )
}


# Guests built from Debian packages on first use into a cache, never committed
# (pyvmm/guests/linux_build.py): name -> description.
BUILT_GUESTS: dict[str, str] = {
    "linux": "Linux 6.1 (Debian's linux-source, guests/linux/config.fragment) with a busybox "
             "initramfs, booted by the Linux boot protocol; built into ~/.cache/pyvmm on "
             "first use (minutes); command line default: console=ttyS0 nolapic noapic",
}


def guest_path(name: str) -> Path:
    """The image file of the bundled guest `name`."""
    try:
        guest = BUNDLED_GUESTS[name]
    except KeyError:
        known = ", ".join(sorted(BUNDLED_GUESTS))
        raise ConfigError(f"no bundled guest named {name!r} (bundled: {known})") from None
    return guest.path
