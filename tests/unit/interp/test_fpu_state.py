"""The interpreter's x87/SSE register file and CpuState's FXSAVE image."""

from __future__ import annotations

from pyvmm.cpu import fxsave
from pyvmm.cpu.state import CpuState
from pyvmm.engines.interp.fpu import TAG_EMPTY, TAG_SPECIAL, TAG_VALID, TAG_ZERO, Fpu
from tests.unit.interp.guest import machine

ONE = 0x3FFF_8000000000000000


def test_default_image_is_the_fninit_state_sdm_8_1_8() -> None:
    fcw, fsw, ftw, fop, fip, fdp, mxcsr, _ = fxsave.head(CpuState().fpu_image)
    assert (fcw, fsw, ftw, fop, fip, fdp, mxcsr) == (0x037F, 0, 0, 0, 0, 0, 0x1F80)
    assert len(CpuState().fpu_image) == 512


def test_stack_tags_and_status() -> None:
    fpu = Fpu()
    fpu.push(ONE)
    fpu.push(0)
    assert fpu.top == 6 and fpu.status >> 11 & 7 == 6
    assert fpu.st(0) == 0 and fpu.st(1) == ONE and fpu.regs[7] == ONE
    tags = fpu.tag_word()
    assert tags >> 14 == TAG_VALID and (tags >> 12) & 3 == TAG_ZERO
    assert all((tags >> (2 * p)) & 3 == TAG_EMPTY for p in range(6))
    fpu.set_st(1, 0x7FFF_8000000000000000)
    assert fpu.tag_word() >> 14 == TAG_SPECIAL
    fpu.pop()
    assert fpu.top == 7 and fpu.is_empty(-1 & 7) and not fpu.is_empty(0)


def test_mmx_aliases_physical_registers_sdm_9_5_1() -> None:
    fpu = Fpu()
    fpu.push(ONE)  # TOP=7
    fpu.mmx_write(3, 0x1122334455667788)
    assert fpu.top == 0 and fpu.valid == 0xFF
    assert fpu.regs[3] == 0xFFFF_1122334455667788 and fpu.st(3) == fpu.regs[3]
    assert fpu.mmx_read(7) == ONE & ((1 << 64) - 1)


def test_interp_state_round_trips_through_cpustate() -> None:
    _board, engine = machine()
    state = CpuState()
    st_regs = [ONE + i for i in range(8)]
    xmm = [(i + 1) * 0x0102030405060708_1112131415161718 for i in range(16)]
    state.fpu_image = fxsave.build(0x0A7F, 0x3800 | 0x41, 0xC1, 0x1D9, 0x401234, 0x605678,
                                   0x9FC0, st_regs, xmm)
    engine.set_state(state)
    cpu = engine.cpu
    assert cpu.fpu.top == 7 and cpu.fpu.st(0) == ONE and cpu.fpu.regs[7] == ONE
    assert cpu.fpu.fcw == 0x0A7F and cpu.mxcsr == 0x9FC0 and cpu.xmm == xmm
    assert engine.get_state().fpu_image == state.fpu_image
    cpu.fpu.push(0)
    cpu.xmm[5] = 0xFFFF
    image = engine.get_state().fpu_image
    assert fxsave.st(image, 0) == 0 and fxsave.st(image, 1) == ONE
    assert fxsave.xmm(image, 5) == 0xFFFF
    assert fxsave.head(image)[1] >> 11 & 7 == 6


def test_snapshot_dict_keeps_the_image() -> None:
    state = CpuState()
    state.fpu_image = fxsave.build(0x27F, 0, 0x80, 0, 0, 0, 0x1F80, [ONE] * 8, [7] * 16)
    assert CpuState.from_dict(state.to_dict()).fpu_image == state.fpu_image
