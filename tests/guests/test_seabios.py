"""Debian's SeaBIOS (the `seabios` package) on the board's chipset, to its boot step.

SeaBIOS finds fw_cfg (signature and DMA), takes the e820 map from
"etc/e820", prints its banner on COM1 ("etc/sercon-port"), enumerates the
PCI chipset through configuration mechanism #1, installs pyvmm's ACPI tables
by running "etc/table-loader", and reaches its boot step: with no disks,
"Booting from Floppy..." (the CMOS reports no boot order, so SeaBIOS's
default), then "No bootable device.".  The run is stopped at that line (SeaBIOS
would wait 60 s and reboot); COM1 up to there is the same under every engine.
"""

from __future__ import annotations

import io
import os
import selectors
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyvmm.firmware.acpi import build_acpi
from pyvmm.machine.stop import StopKind, StopReason
from tests.conftest import requires_kvm
from tests.unit.firmware.acpi_parse import all_tables

SEABIOS = Path("/usr/share/seabios/bios-256k.bin")
pytestmark = pytest.mark.skipif(not SEABIOS.exists(),
                                reason=f"{SEABIOS} is absent (Debian package seabios)")
BOOT_STEP = b"No bootable device."
RAM = 64 << 20

SERIAL_LINES = ("SeaBIOS (version ", "Booting from Floppy...", "No bootable device.")
DEBUG_LINES = (
    "Found QEMU fw_cfg",
    "QEMU fw_cfg DMA interface supported",
    "Moving pm_base to 0x600",  # SeaBIOS saw etc/table-loader
    # The board's e820 map for -m 64M (PcBoard.e820_map), read from etc/e820.
    "qemu/e820: addr 0x0000000000000000 len 0x00000000000a0000 [RAM]",
    "qemu/e820: addr 0x0000000000100000 len 0x0000000003f00000 [RAM]",
    # i440FX 00.0, PIIX3 01.0, PIIX4 PM 01.3: bus 0 only.
    "Found 3 PCI devices (max PCI bus is 00)",
    "ACPI: parse DSDT at ",  # pyvmm's DSDT, reached through pyvmm's FADT
)


class _UntilBootStep(io.RawIOBase):
    """COM1: keeps the bytes and stops the VM once the boot-step line is complete."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.board = None

    def write(self, data: bytes) -> int:
        self.data += data
        if self.board is not None and BOOT_STEP in self.data and self.data.endswith(b"\n"):
            self.board.request_stop(StopReason(StopKind.PAUSED, "SeaBIOS reached its boot step"))
        return len(data)


def run_in_process(engine: str) -> tuple[str, str, object]:
    """(COM1, debug log, the VM stopped) at the boot step."""
    from pyvmm.vm import ImageSpec, VirtualMachine

    serial, debug = _UntilBootStep(), io.BytesIO()
    vm = VirtualMachine(engine=engine, ram_size=RAM, serial_output=serial,
                        debugcon_output=debug)
    serial.board = vm.board
    vm.load(ImageSpec("bios", SEABIOS))
    reason = vm.run(timeout=600)
    assert reason.kind is StopKind.PAUSED, reason
    return serial.data.decode("latin-1"), debug.getvalue().decode("latin-1"), vm


@pytest.fixture(scope="module")
def interp_run():
    serial, debug, vm = run_in_process("interp")
    yield serial, debug, vm
    vm.close()


def assert_reaches_boot_step(serial: str, debug: str) -> None:
    for expected in SERIAL_LINES:
        assert expected in serial, (expected, serial)
    for expected in DEBUG_LINES:
        assert any(line.startswith(expected) for line in debug.splitlines()), (expected, debug)


def test_seabios_reaches_its_boot_step_under_interp(interp_run):
    serial, debug, _ = interp_run
    assert_reaches_boot_step(serial, debug)


def test_the_rsdp_seabios_installs_leads_to_pyvmm_tables(interp_run):
    """SeaBIOS ran etc/table-loader: an RSDP on a 16-byte boundary in 0xE0000-0xFFFFF
    whose XSDT lists pyvmm's FADT, MADT and HPET table, byte for byte as pyvmm
    built them for the address SeaBIOS allocated."""
    _, debug, vm = interp_run
    memory = vm.board.memory
    found = [a for a in range(0xE0000, 0x100000, 16)
             if memory.read(a, 8) == b"RSD PTR " and sum(memory.read(a, 20)) & 0xFF == 0]
    assert len(found) == 1, [hex(a) for a in found]
    rsdp = memory.read(found[0], 36)
    acpi = build_acpi(vm.board.platform_description())
    xsdt_at = int.from_bytes(rsdp[24:32], "little")
    tables_at = xsdt_at - acpi.offsets["XSDT"]
    blob = memory.read(tables_at, len(acpi.tables))
    tables = all_tables(blob, tables_at, rsdp)
    assert {b"FACP", b"APIC", b"HPET", b"DSDT", b"FACS"} <= set(tables)
    assert (blob, rsdp) == acpi.placed(tables_at)
    # SeaBIOS reserved the memory it put them in, in the e820 map it hands the OS.
    reserved = [tuple(int(x, 16) for x in line.split(":", 1)[1].split("=")[0].split(" - "))
                for line in debug.splitlines() if line.endswith("= 2 RESERVED")]
    assert any(lo <= tables_at and tables_at + len(blob) <= hi for lo, hi in reserved), reserved


def test_seabios_output_is_the_same_under_jit(interp_run):
    serial, debug, vm = run_in_process("jit")
    vm.close()
    assert_reaches_boot_step(serial, debug)
    assert serial == interp_run[0]


def cli_serial_until_boot_step(engine: str, tmp_path: Path, timeout: float = 600) -> str:
    """`pyvmm run` as a user runs it, COM1 read until the boot-step line, then killed."""
    log = tmp_path / f"{engine}-debugcon.log"
    argv = [sys.executable, "-m", "pyvmm", "run", "--engine", engine, "--bios", str(SEABIOS),
            "-m", "64M", "--debugcon", f"file:{log}", "--timeout", str(timeout)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(
                                Path(__file__).resolve().parents[2])})
    out = bytearray()
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not (BOOT_STEP in out and out.endswith(b"\n")):
            if selector.select(1.0):
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                out += chunk
    finally:
        selector.close()
        proc.kill()
        _, err = proc.communicate()
    assert b"Traceback" not in err
    assert_reaches_boot_step(out.decode("latin-1"), log.read_text(errors="replace"))
    return out.decode("latin-1")


@requires_kvm
def test_seabios_reaches_its_boot_step_under_kvm(interp_run, tmp_path):
    assert cli_serial_until_boot_step("kvm", tmp_path) == interp_run[0]
