"""Machine reset under every engine: a ROM that resets the PC and counts its boots.

The ROM (64 KiB, entered at the reset vector F000:FFF0, Intel SDM Vol. 3A
§9.1.4) keeps a boot count in RAM, which a reset leaves alone.  Each boot
prints the count, the byte at 0xC0000 and the master i8259's mask register,
then changes both (the i440FX's PAM1 makes 0xC0000 shadow RAM, 0x42 is
written there; the mask becomes 0x5A) and resets the machine again, until
the third boot exits through the debug-exit port.  A hard reset returns the
PAM register and the i8259 to their power-on state, so every boot prints
what the first did; the PIIX3's soft reset (0xCF9 with SRST clear) is the
CPU's INIT alone, so the devices keep what the boot before left.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pytest

from pyvmm.compare import COLUMNS
from pyvmm.guests import EXIT_SUCCESS_STATUS
from pyvmm.machine.stop import StopKind
from tests.conftest import requires_kvm, run_pyvmm

pytestmark = pytest.mark.skipif(shutil.which("nasm") is None, reason="nasm is not installed")

RESETS = {
    "i8042": "mov al, 0xfe\n    out 0x64, al",
    "port92": "in al, 0x92\n    or al, 1\n    out 0x92, al",
    "cf9-hard": "mov dx, 0xcf9\n    mov al, 0x06\n    out dx, al",
    "cf9-soft": "mov dx, 0xcf9\n    mov al, 0x04\n    out dx, al",
}

ROM = """
bits 16
org 0
start:
    cli
    xor ax, ax
    mov ds, ax
    mov ax, 0xc000
    mov es, ax
    inc byte [0x500]        ; the boot count: RAM survives a reset
    mov dx, 0x3f8
    mov al, [0x500]
    add al, '0'
    out dx, al
    mov al, [es:0]          ; 0xC0000: open bus (0xFF) unless PAM1 shadows it
    out dx, al
    in al, 0x21             ; the master i8259's IMR
    out dx, al
    mov al, 0x5a
    out 0x21, al
    mov eax, 0x80000058     ; i440FX (bus 0, device 0) register 0x58..0x5B
    mov dx, 0xcf8
    out dx, eax
    mov dx, 0xcfe           ; byte 0x5A: PAM1, 0xC0000-0xC7FFF read/write
    mov al, 0x33
    out dx, al
    mov byte [es:0], 0x42
    cmp byte [0x500], 3
    jae done
    {reset}
    hlt
    jmp $
done:
    mov al, 0x10
    out 0xf4, al
    hlt
    times 0xfff0 - ($ - $$) db 0
    jmp 0xf000:start        ; the reset vector, 0xFFFFFFF0
    times 0x10000 - ($ - $$) db 0
"""


def build_rom(tmp_path: Path, method: str) -> Path:
    source = tmp_path / f"{method}.asm"
    source.write_text(ROM.replace("{reset}", RESETS[method]))
    out = tmp_path / f"{method}.rom"
    subprocess.run(["nasm", "-f", "bin", "-o", str(out), str(source)], check=True)
    return out


def run_rom(engine: str, rom: Path, **options) -> tuple[bytes, object, int]:
    from pyvmm.vm import ImageSpec, VirtualMachine

    name, column = COLUMNS.get(engine, (engine, {}))  # kvm:user is kvm --irqchip user
    serial = io.BytesIO()
    vm = VirtualMachine(engine=name, ram_size=4 << 20, serial_output=serial,
                        **column, **options)
    try:
        vm.load(ImageSpec("bios", rom))
        reason = vm.run(timeout=120)
        return serial.getvalue(), reason, vm.stats.get("reset", "hard resets")
    finally:
        vm.close()


ENGINES = ["interp", "jit", pytest.param("kvm", marks=requires_kvm),
           pytest.param("kvm:user", marks=requires_kvm)]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("method", ["i8042", "port92", "cf9-hard"])
def test_a_hard_reset_restarts_the_rom_with_devices_at_power_on(tmp_path, engine, method):
    serial, reason, resets = run_rom(engine, build_rom(tmp_path, method))
    assert reason.kind is StopKind.DEBUG_EXIT and reason.guest_status == EXIT_SUCCESS_STATUS, \
        reason
    boot = serial[1:3]
    assert boot[0] == 0xFF  # 0xC0000 is not shadowed at power-on: open bus
    assert serial == b"1" + boot + b"2" + boot + b"3" + boot
    assert resets == 2


@pytest.mark.parametrize("engine", ENGINES)
def test_a_soft_reset_is_init_and_keeps_the_devices(tmp_path, engine):
    serial, reason, resets = run_rom(engine, build_rom(tmp_path, "cf9-soft"))
    assert reason.kind is StopKind.DEBUG_EXIT, reason
    boot = serial[1:3]
    assert serial == b"1" + boot + b"2\x42\x5a" + b"3\x42\x5a"
    assert resets == 0


@pytest.mark.parametrize("engine", ENGINES)
def test_no_reboot_stops_at_the_first_reset(tmp_path, engine):
    serial, reason, _ = run_rom(engine, build_rom(tmp_path, "cf9-hard"), no_reboot=True)
    assert reason.kind is StopKind.RESET and reason.exit_code == 12
    assert "--no-reboot" in reason.message and "0xCF9" in reason.message
    assert serial[:1] == b"1" and len(serial) == 3


def test_cli_no_reboot_status(tmp_path):
    rom = build_rom(tmp_path, "i8042")
    result = run_pyvmm("run", "--engine", "interp", "--bios", str(rom), "--no-reboot",
                       "--timeout", "60")
    assert result.returncode == StopKind.RESET.exit_code, result.stderr
    assert b"port 0x64" in result.stderr and b"--no-reboot" in result.stderr
    result = run_pyvmm("run", "--engine", "interp", "--bios", str(rom), "--timeout", "60")
    assert result.returncode == EXIT_SUCCESS_STATUS, result.stderr
    assert result.stdout.count(b"\xff") == 3


def test_a_kernel_loaded_directly_stops_with_a_reason(tmp_path):
    """A boot sector has no firmware behind it: the reset stops the VM, saying why."""
    source = tmp_path / "reset.asm"
    source.write_text("bits 16\norg 0x7c00\n    mov al, 0xfe\n    out 0x64, al\n    jmp $\n"
                      "times 510 - ($ - $$) db 0\ndw 0xaa55\n")
    image = tmp_path / "reset.img"
    subprocess.run(["nasm", "-f", "bin", "-o", str(image), str(source)], check=True)
    result = run_pyvmm("run", "--engine", "interp", "--boot-sector", str(image),
                       "--timeout", "60")
    assert result.returncode == StopKind.RESET.exit_code
    assert b"boot-sector image loaded directly (no BIOS)" in result.stderr, result.stderr


@pytest.mark.parametrize("engine", ["interp", pytest.param("kvm", marks=requires_kvm)])
def test_the_hypervisor_restarts_a_reset_vm_too(tmp_path, engine):
    """Time-sliced (interp) and threaded (kvm) hypervisor VMs go through the same
    reset rule as `pyvmm run`."""
    from pyvmm.hypervisor import Hypervisor, VmConfig
    from pyvmm.vm import ImageSpec

    out = io.BytesIO()
    with Hypervisor(slice_seconds=0.002, stdout=out) as hv:
        hv.add(VmConfig("rom", ImageSpec("bios", build_rom(tmp_path, "cf9-hard")),
                        engine=engine, ram_size=4 << 20, timeout=120))
        [result] = hv.run()
    assert result.exit_status == EXIT_SUCCESS_STATUS, result.reason
    assert out.getvalue().count(b"\xff") == 3
