"""x87 and XMM state moves interp -> kvm -> interp through CpuState.fpu_image."""

from __future__ import annotations

from kvm_guest import requires_kvm

from pyvmm.cpu import fxsave
from tests.unit.interp.guest import machine

pytestmark = requires_kvm


def test_fpu_state_survives_interp_kvm_interp(vm) -> None:
    _board, interp = machine()
    cpu = interp.cpu
    cpu.fpu.fcw = 0x0E7F  # round toward zero, 64-bit precision
    cpu.fpu.push(0x3FFF_8000000000000000)
    cpu.fpu.push(0xC000_C90FDAA22168C235)
    cpu.fpu.fsw = 0x4100  # C3, C0
    cpu.xmm = [(i * 0x1111111111111111) << 64 | (i + 0xABC) for i in range(16)]
    cpu.mxcsr = 0x3F80
    state = interp.get_state()
    kvm_base = vm.engine.get_state()
    state.msrs = kvm_base.msrs
    vm.engine.set_state(state)
    back = vm.engine.get_state()
    assert fxsave.head(back.fpu_image)[:7] == fxsave.head(state.fpu_image)[:7]
    _board2, interp2 = machine()
    interp2.set_state(back)
    c2 = interp2.cpu
    assert c2.fpu.top == 6 and c2.fpu.st(0) == 0xC000_C90FDAA22168C235
    assert c2.fpu.st(1) == 0x3FFF_8000000000000000 and c2.fpu.valid == 0xC0
    assert c2.fpu.fcw == 0x0E7F and c2.fpu.fsw & 0x4100 == 0x4100
    assert c2.xmm == cpu.xmm and c2.mxcsr == 0x3F80
