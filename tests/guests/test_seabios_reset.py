"""SeaBIOS reboots the machine after a failed boot, and the machine restarts it.

With fw_cfg's "etc/boot-fail-wait" at 0 ms (`--reboot-timeout 0`, QEMU's
-boot reboot-timeout), SeaBIOS prints "No bootable device.  Retrying in 0
seconds.", then "Rebooting." and resets the PC through the PIIX3's reset
control register (outb 0x02, then 0x06, to port 0xCF9).  The board returns
its devices to their power-on state (the PAM registers too, so the ROM is
decoded below 1 MiB again) and the CPU starts at the reset vector: SeaBIOS
runs its POST again and prints its banner a second time.  With --no-reboot
that reset stops the VM with the reset status instead.
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

from pyvmm.machine.stop import StopKind, StopReason
from tests.conftest import requires_kvm

SEABIOS = Path("/usr/share/seabios/bios-256k.bin")
pytestmark = pytest.mark.skipif(not SEABIOS.exists(),
                                reason=f"{SEABIOS} is absent (Debian package seabios)")
BANNER = b"SeaBIOS (version "
FAILED = b"No bootable device.  Retrying in 0 seconds."
ROOT = Path(__file__).resolve().parents[2]


class _UntilSecondBanner(io.RawIOBase):
    """COM1: stops the VM once SeaBIOS's banner line has been printed twice."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.board = None

    def write(self, data: bytes) -> int:
        self.data += data
        if self.board is not None and self.data.count(BANNER) >= 2 \
                and self.data.endswith(b"\n"):
            self.board.request_stop(StopReason(StopKind.PAUSED, "second banner"))
        return len(data)


def test_seabios_reboots_and_prints_its_banner_again_under_interp():
    from pyvmm.vm import ImageSpec, VirtualMachine

    serial = _UntilSecondBanner()
    vm = VirtualMachine(engine="interp", ram_size=64 << 20, serial_output=serial,
                        reboot_timeout=0)
    serial.board = vm.board
    try:
        vm.load(ImageSpec("bios", SEABIOS))
        reason = vm.run(timeout=900)
        assert reason.kind is StopKind.PAUSED, (reason, bytes(serial.data))
        out = bytes(serial.data)
        first, second = out.index(BANNER), out.rindex(BANNER)
        assert first < out.index(FAILED) < out.index(b"Rebooting") < second
        assert vm.stats.get("reset", "hard resets") == 1
    finally:
        vm.close()


def _cli(tmp_path: Path, *options: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`pyvmm run` on SeaBIOS; its 0x402 log kept apart from COM1 (--debugcon)."""
    return subprocess.run([sys.executable, "-m", "pyvmm", "run", "--bios", str(SEABIOS),
                           "-m", "64M", "--reboot-timeout", "0",
                           "--debugcon", f"file:{tmp_path / 'debugcon.log'}", *options],
                          capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


@requires_kvm
@pytest.mark.parametrize("irqchip", ["kernel", "user"])
def test_seabios_reboots_under_kvm(tmp_path, irqchip):
    """Through the CLI; read until the second banner line, then killed (it reboots forever).
    --irqchip kernel: KVM's PIC, I/O APIC, LAPIC and PIT are put back to power-on too."""
    argv = [sys.executable, "-m", "pyvmm", "run", "--engine", "kvm", "--irqchip", irqchip,
            "--bios", str(SEABIOS),
            "-m", "64M", "--reboot-timeout", "0", "--timeout", "600",
            "--debugcon", f"file:{tmp_path / 'debugcon.log'}"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})
    out = bytearray()
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline and not (out.count(BANNER) >= 2
                                                   and out.endswith(b"\n")):
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
    assert out.count(BANNER) >= 2, (bytes(out[-2000:]), err)
    assert out.index(BANNER) < out.index(FAILED) < out.index(BANNER, out.index(FAILED))


@requires_kvm
def test_seabios_with_no_reboot_stops_with_the_reset_status(tmp_path):
    result = _cli(tmp_path, "--engine", "kvm", "--no-reboot", "--timeout", "120")
    assert result.returncode == StopKind.RESET.exit_code, result.stderr
    assert result.stdout.count(BANNER) == 1 and FAILED in result.stdout
    assert b"0xCF9" in result.stderr and b"--no-reboot" in result.stderr
