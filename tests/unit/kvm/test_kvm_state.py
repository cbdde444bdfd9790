"""CpuState <-> KVM: set_state/get_state must round-trip exactly."""

from __future__ import annotations

import pytest
from kvm_guest import long_mode_state, requires_kvm

from pyvmm.cpu.state import (
    FLAG_CF,
    FLAG_DF,
    FLAG_OF,
    FLAG_RESERVED1,
    FLAG_ZF,
    MSR_CSTAR,
    MSR_IA32_PAT,
    MSR_IA32_SYSENTER_CS,
    MSR_IA32_SYSENTER_EIP,
    MSR_IA32_SYSENTER_ESP,
    MSR_KERNEL_GS_BASE,
    MSR_LSTAR,
    MSR_SFMASK,
    MSR_STAR,
    MSR_TSC_AUX,
    CpuState,
    SegmentState,
    TableRegister,
)
from pyvmm.engines.kvm import ioctls as k
from pyvmm.engines.kvm import state as conv

pytestmark = requires_kvm


def _fpu_image(base: bytes | None = None) -> bytes:
    """An FXSAVE image with every field non-trivial; MXCSR_MASK and the reserved
    tail come from `base` (what the host reports), since loads do not take them."""
    fpu = k.kvm_fpu()
    fpu.fcw, fpu.fsw, fpu.ftwx, fpu.last_opcode = 0x37F, 0x3800, 0x81, 0x1D9
    fpu.last_ip, fpu.last_dp, fpu.mxcsr = 0x401234, 0x605678, 0x1FA0
    for i in range(8):
        fpu.fpr[i][:10] = bytes(range(i, i + 10))
    for i in range(16):
        fpu.xmm[i][:] = bytes((i * 16 + j) & 0xFF for j in range(16))
    image = bytearray(conv.fpu_to_fxsave(fpu))
    if base is not None:
        image[28:32] = base[28:32]  # MXCSR_MASK
        image[416:] = base[416:]
    return bytes(image)


def _busy_state(vm) -> CpuState:
    state = long_mode_state(0x123456, ring=0)
    state.gprs = [(0x0101010101010101 * (i + 1)) & 0xFFFFFFFFFFFFFFFF for i in range(16)]
    state.rflags = FLAG_RESERVED1 | FLAG_CF | FLAG_ZF | FLAG_DF | FLAG_OF
    state.segments["fs"] = SegmentState(selector=0x10, base=0x7FFF12345000, limit=0xFFFFFFFF,
                                        type=0x3, db=1, g=1)
    state.segments["gs"] = SegmentState(selector=0x10, base=0xFFFF880000001000,
                                        limit=0xFFFFFFFF, type=0x3, db=1, g=1)
    state.tr = SegmentState(selector=0x28, base=0xFFFF880000002000, limit=0x67, type=0xB, s=0)
    state.ldtr = SegmentState(selector=0x30, base=0x3000, limit=0xFF, type=0x2, s=0)
    state.gdtr = TableRegister(0xFFFF880000003000, 0x37)
    state.idtr = TableRegister(0xFFFF880000004000, 0xFFF)
    state.cr2 = 0xDEADBEEF000
    state.cr3 = 0x5000
    state.cr8 = 5
    state.dr = [0x1000, 0x2000, 0x3000, 0x4000, 0, 0, 0xFFFF0FF0, 0x401]
    state.msrs = {
        MSR_IA32_SYSENTER_CS: 0x10, MSR_IA32_SYSENTER_ESP: 0xFFFF880000010000,
        MSR_IA32_SYSENTER_EIP: 0xFFFFFFFF81000000,
        MSR_STAR: 0x0023001000000000, MSR_LSTAR: 0xFFFFFFFF81800000,
        MSR_CSTAR: 0xFFFFFFFF81900000, MSR_SFMASK: 0x47700,
        MSR_KERNEL_GS_BASE: 0x7F0000001000, MSR_IA32_PAT: 0x0007010600070106,
    }
    state.interrupt_shadow = True
    state.halted = True
    state.fpu_image = _fpu_image(vm.engine.get_state().fpu_image)
    return state


def test_busy_state_round_trips_exactly(vm):
    state = _busy_state(vm)
    vm.engine.set_state(state)
    back = vm.engine.get_state()
    assert back == state
    assert back.fpu_image[24:28] == (0x1FA0).to_bytes(4, "little")  # MXCSR survived


def test_extra_msr_in_state_is_carried(vm):
    state = _busy_state(vm)
    state.msrs[MSR_TSC_AUX] = 0x1234
    vm.engine.set_state(state)
    assert vm.engine.get_state().msrs[MSR_TSC_AUX] == 0x1234


def test_reset_state_round_trips(vm):
    first = vm.engine.get_state()
    assert first.rip == 0xFFF0 and first.segments["cs"].base == 0xFFFF0000  # SDM Table 9-1
    vm.engine.set_state(first)
    assert vm.engine.get_state() == first


def test_real_mode_cpustate_round_trips(vm):
    state = CpuState()
    state.rip = 0x7C00
    state.segments["cs"] = SegmentState.real_mode(0x07C0, code=True)
    state.set_gpr("rsp", 0xFFFE)
    state.fpu_image = vm.engine.get_state().fpu_image
    state.msrs = {m: v for m, v in vm.engine.get_state().msrs.items()}
    vm.engine.set_state(state)
    assert vm.engine.get_state() == state


def test_field_msrs_stay_in_their_fields(vm):
    # FS base lives in segments["fs"].base; an FS_BASE entry in msrs is not duplicated.
    state = _busy_state(vm)
    state.msrs[0xC0000100] = 0x1111
    vm.engine.set_state(state)
    back = vm.engine.get_state()
    assert back.segments["fs"].base == 0x7FFF12345000
    assert 0xC0000100 not in back.msrs


def test_invalid_msr_is_reported(vm):
    state = _busy_state(vm)
    state.msrs[0x12345678] = 1  # not an MSR
    with pytest.raises(k.KvmError, match="0x12345678"):
        vm.engine.set_state(state)
