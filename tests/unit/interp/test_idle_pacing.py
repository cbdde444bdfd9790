"""Idle pacing: an idle interpreter guest never runs ahead of host time.

Guest time advances one nanosecond per instruction, and HLT skips to the
next timer; but a halted guest whose next timer lies ahead of host time
waits for it (QEMU's icount sleep=on), so a guest that sleeps 200 ms sleeps
200 ms instead of burning a host core through its ticks.
"""

from __future__ import annotations

import time

import pytest

from pyvmm.machine.stop import StopKind
from pyvmm.vm import ImageSpec, VirtualMachine
from tests.unit.kvm.kvm_guest import assemble

PIT_HZ = 1_193_182
SLEEP_S = 0.2

# Program the PIC (vector base 0x20) and PIT channel 0 in mode 0 (one shot,
# 8254 datasheet) for SLEEP_S, then HLT; the IRQ0 handler exits through 0xF4.
# The count is 16 bits, so the guest chains four 50 ms shots.
SLEEPER = f"""
bits 16
org 0x7c00
    cli
    xor ax, ax
    mov ds, ax
    mov ss, ax
    mov sp, 0x7c00
    mov word [0x20*4], tick
    mov word [0x20*4+2], 0
    mov al, 0x11
    out 0x20, al
    mov al, 0x20
    out 0x21, al
    mov al, 4
    out 0x21, al
    mov al, 1
    out 0x21, al
    mov al, 0xfe
    out 0x21, al
    mov cx, 4
arm_timer:
    mov al, 0x30
    out 0x43, al
    mov ax, {PIT_HZ * SLEEP_S / 4:.0f}
    out 0x40, al
    mov al, ah
    out 0x40, al
    sti
idle:
    hlt
    jmp idle
tick:
    mov al, 0x20
    out 0x20, al
    loop rearm
    mov al, 0x10
    out 0xf4, al
rearm:
    add sp, 6
    jmp arm_timer
times 510-($-$$) db 0
dw 0xaa55
"""


@pytest.fixture(scope="module")
def sleeper(tmp_path_factory):
    path = tmp_path_factory.mktemp("pacing") / "sleeper.bin"
    path.write_bytes(assemble(SLEEPER))
    return ImageSpec("boot-sector", path)


@pytest.mark.parametrize("paced", [True, False])
def test_idle_guest_sleeps_in_host_time(sleeper, paced):
    vm = VirtualMachine(engine="interp")
    try:
        vm.engine.pace_idle = paced
        vm.load(sleeper)
        started = time.monotonic()
        reason = vm.run(timeout=10)
        elapsed = time.monotonic() - started
        assert reason.kind is StopKind.DEBUG_EXIT and reason.guest_status == 33
        assert vm.board.clock.now_ns() >= SLEEP_S * 1e9 * 0.99  # the guest's own view
        if paced:
            assert elapsed >= SLEEP_S * 0.95
        else:
            assert elapsed < SLEEP_S * 0.75  # skipped straight through its timers
    finally:
        vm.close()
