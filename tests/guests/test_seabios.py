"""Debian's SeaBIOS (the `seabios` package) on the board's chipset: it finds
fw_cfg (signature and DMA), takes the e820 map from "etc/e820", prints its
banner on COM1 ("etc/sercon-port") and enumerates the PCI chipset functions
through configuration mechanism #1.

With the local APIC on the board it runs on to its boot step ("No bootable
device", then a 60-second retry and a reboot attempt that triple-faults);
these tests assert the early lines it prints on the way.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import requires_kvm, run_pyvmm

SEABIOS = Path("/usr/share/seabios/bios-256k.bin")
pytestmark = pytest.mark.skipif(not SEABIOS.exists(),
                                reason=f"{SEABIOS} is absent (Debian package seabios)")

EXPECTED_LINES = (
    "SeaBIOS (version ",
    "Found QEMU fw_cfg",
    "QEMU fw_cfg DMA interface supported",
    # The board's e820 map for -m 64M (PcBoard.e820_map), read from etc/e820.
    "qemu/e820: addr 0x0000000000000000 len 0x00000000000a0000 [RAM]",
    "qemu/e820: addr 0x0000000000100000 len 0x0000000003f00000 [RAM]",
    # i440FX 00.0, PIIX3 01.0, PIIX4 PM 01.3: bus 0 only.
    "Found 3 PCI devices (max PCI bus is 00)",
)


def seabios_serial(engine: str) -> str:
    result = run_pyvmm("run", "--engine", engine, "--bios", str(SEABIOS), "-m", "64M",
                       "--timeout", "300", timeout=600)
    assert b"Traceback" not in result.stderr
    return result.stdout.decode(errors="replace")


def assert_seabios_output(serial: str) -> None:
    lines = serial.splitlines()
    for expected in EXPECTED_LINES:
        assert any(line.startswith(expected) for line in lines), (expected, serial)


@pytest.fixture(scope="module")
def interp_serial() -> str:
    return seabios_serial("interp")


def test_seabios_banner_fw_cfg_and_pci_under_interp(interp_serial):
    assert_seabios_output(interp_serial)


def test_seabios_output_is_the_same_under_jit(interp_serial):
    serial = seabios_serial("jit")
    assert_seabios_output(serial)
    assert serial == interp_serial


@requires_kvm
def test_seabios_banner_fw_cfg_and_pci_under_kvm():
    assert_seabios_output(seabios_serial("kvm"))
