"""MMX/SSE/SSE2 integer semantics: lane facts from the SDM and the state checks."""

from __future__ import annotations

import pytest
from iced_x86 import Mnemonic as M

from pyvmm.cpu.state import CR0_EM, CR0_TS, CR4_OSFXSR
from pyvmm.engines.interp.faults import GP, NM, UD, CpuFault
from pyvmm.engines.interp.semantics import _simd
from pyvmm.engines.interp.semantics.sse_int import ROWS


def op(mnemonic: int, a: int, b: int, imm: int = 0, width: int = 128) -> int:
    return ROWS[mnemonic](a, b, imm, width)


def test_saturating_and_wrapping_adds():
    assert op(M.PADDB, 0xFF, 0x01, width=64) == 0x00  # wraps
    assert op(M.PADDUSB, 0xFF, 0x01, width=64) == 0xFF  # unsigned saturation
    assert op(M.PADDSB, 0x7F, 0x01, width=64) == 0x7F  # signed saturation
    assert op(M.PSUBSW, 0x8000, 0x0001, width=64) == 0x8000
    assert op(M.PSUBUSW, 0x0001, 0x0002, width=64) == 0


def test_compares_multiplies_and_averages():
    assert op(M.PCMPGTB, 0x01, 0xFF, width=64) == 0xFF  # 1 > -1 (signed)
    assert op(M.PCMPEQD, 5 << 32 | 7, 5 << 32 | 8, width=64) == 0xFFFFFFFF << 32
    assert op(M.PMULHW, 0x8000, 0x8000, width=64) == 0x4000  # (-32768)^2 >> 16
    assert op(M.PMULHUW, 0xFFFF, 0xFFFF, width=64) == 0xFFFE
    assert op(M.PAVGB, 1, 2, width=64) == 2  # rounds up
    assert op(M.PMADDWD, 0x8000_8000, 0x8000_8000, width=64) == 0x8000_0000  # wraps
    assert op(M.PSADBW, 0x00FF, 0xFF00, width=64) == 0x1FE


def test_shift_counts_beyond_the_lane_width():
    assert op(M.PSRLW, 0xFFFF, 16, width=64) == 0
    assert op(M.PSRAW, 0x8000, 200, width=64) == 0xFFFF  # sign fills the lane
    assert op(M.PSLLQ, 1, 1 << 32, width=64) == 0  # the whole quadword is the count
    assert op(M.PSRLDQ, 1 << 120, 15) == 1
    assert op(M.PSLLDQ, 1, 16) == 0


def test_shuffles_unpacks_packs():
    src = 0x33333333_22222222_11111111_00000000
    assert op(M.PSHUFD, 0, src, 0x1B) == 0x00000000_11111111_22222222_33333333
    assert op(M.PUNPCKLBW, 0x0201, 0x0B0A, width=64) == 0x0B020A01
    assert op(M.PACKUSWB, 0xFFFF_0100, 0, width=64) == 0x00FF
    assert op(M.PACKSSDW, 0x7FFFFFFF, 0, width=64) == 0x7FFF
    assert op(M.SHUFPD, 1 | 2 << 64, 3 | 4 << 64, 0b10) == 1 | 4 << 64


class _Cpu:
    def __init__(self, cr0: int = 0, cr4: int = CR4_OSFXSR) -> None:
        self.cr0, self.cr4 = cr0, cr4
        self.seg_base = [0] * 6


@pytest.mark.parametrize(("cr0", "cr4", "vector"), [
    (CR0_EM, CR4_OSFXSR, UD), (0, 0, UD), (CR0_TS, CR4_OSFXSR, NM), (CR0_EM | CR0_TS, 0, UD)])
def test_sse_state_checks(cr0, cr4, vector):
    with pytest.raises(CpuFault) as info:
        _simd.sse_check(_Cpu(cr0, cr4))
    assert info.value.vector == vector


def test_mmx_checks_ignore_osfxsr():
    _simd.mmx_check(_Cpu(0, 0))
    with pytest.raises(CpuFault) as info:
        _simd.mmx_check(_Cpu(CR0_TS, 0))
    assert info.value.vector == NM


def test_aligned_forms_fault_on_misaligned_operands():
    with pytest.raises(CpuFault) as info:
        _simd.read128(_Cpu(), 3, 0x1008, True, 0xFFFFFFFF)
    assert (info.value.vector, info.value.error_code) == (GP, 0)
