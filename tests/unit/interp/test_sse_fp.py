"""SSE/SSE2 floating point: MXCSR rules and lane facts from the SDM.

(The bit-for-bit agreement with the real CPU is tests/differential/
test_sse_fp_vs_cpu.py; these pin the rules that decide a result.)
"""

from __future__ import annotations

import struct

import pytest
from iced_x86 import Mnemonic as M

from pyvmm.cpu.state import CR4_OSXMMEXCPT
from pyvmm.engines.interp import flags as fl
from pyvmm.engines.interp.faults import UD, XM, CpuFault
from pyvmm.engines.interp.semantics import sse_compare, sse_convert, sse_float
from pyvmm.engines.interp.semantics._ssefp import env_of


class FakeCpu:
    def __init__(self, mxcsr: int = 0x1F80, cr4: int = CR4_OSXMMEXCPT) -> None:
        self.mxcsr = mxcsr
        self.cr4 = cr4


def f32(*values: float) -> int:
    return int.from_bytes(struct.pack(f"<{len(values)}f", *values), "little")


def f64(*values: float) -> int:
    return int.from_bytes(struct.pack(f"<{len(values)}d", *values), "little")


def arith(cpu: FakeCpu, mnemonic: int, dst: int, src: int) -> int:
    lane, fmt, packed = sse_float.ROWS[mnemonic]
    return sse_float.apply(cpu, lane, fmt, 128 // fmt.width if packed else 1, dst, src)


def test_packed_and_scalar_lanes():
    cpu = FakeCpu()
    assert arith(cpu, M.ADDPS, f32(1, 2, 3, 4), f32(10, 20, 30, 40)) == f32(11, 22, 33, 44)
    # scalar: only the low lane, the destination's upper lanes kept
    assert arith(cpu, M.MULSS, f32(3, 7, 8, 9), f32(2, 100, 100, 100)) == f32(6, 7, 8, 9)
    assert arith(cpu, M.DIVPD, f64(1, 9), f64(4, 3)) == f64(0.25, 3)
    assert cpu.mxcsr == 0x1F80  # all exact: no flags


def test_rounding_control_and_inexact():
    down = FakeCpu(0x1F80 | 1 << 13)
    up = FakeCpu(0x1F80 | 2 << 13)
    third_down = arith(down, M.DIVSS, f32(1), f32(3))
    third_up = arith(up, M.DIVSS, f32(1), f32(3))
    assert third_up == third_down + 1  # adjacent binary32 values around 1/3
    assert down.mxcsr & 0x3F == 0x20  # PE


def test_unmasked_precomputation_exception_leaves_the_destination_and_post_flags():
    """SDM Vol. 1 §11.5.1: unmasked ZE in lane 1 -> only pre-computation flags, #XM."""
    cpu = FakeCpu(0x1F80 & ~(1 << 9))  # ZM clear
    with pytest.raises(CpuFault) as info:
        arith(cpu, M.DIVPS, f32(1, 1, 1, 1), f32(3, 0, 1, 1))  # lane 0 inexact, lane 1 1/0
    assert info.value.vector == XM
    assert cpu.mxcsr & 0x3F == 0x04  # ZE only: the inexact lane 0 was not computed


def test_unmasked_exception_without_osxmmexcpt_is_ud():
    cpu = FakeCpu(0x1F80 & ~(1 << 12), cr4=0)  # PM clear
    with pytest.raises(CpuFault) as info:
        arith(cpu, M.DIVSS, f32(1), f32(3))
    assert info.value.vector == UD
    assert cpu.mxcsr & 0x3F == 0x20  # post-computation PE is still recorded


def test_nan_rules():
    cpu = FakeCpu()
    qnan_a, qnan_b, snan = 0x7FC00001, 0xFFC00002, 0x7F800003
    assert arith(cpu, M.ADDSS, qnan_a, qnan_b) == qnan_a  # first source operand
    assert arith(cpu, M.ADDSS, f32(1), snan) == snan | 0x400000  # SNaN delivered quiet
    assert cpu.mxcsr & 1  # IE
    assert arith(FakeCpu(), M.SUBSS, f32(float("inf")), f32(float("inf"))) == 0xFFC00000
    # MIN/MAX: any NaN -> the second operand as is, and IE even for a QNaN
    cpu = FakeCpu()
    assert arith(cpu, M.MINSS, qnan_a, f32(5)) == f32(5)
    assert arith(cpu, M.MAXSS, f32(5), snan) == snan
    assert cpu.mxcsr & 1
    assert arith(FakeCpu(), M.MINSS, f32(-0.0), f32(0.0)) == f32(0.0)  # both zero: source


def test_daz_and_ftz():
    denormal = 0x00000001
    plain = FakeCpu()
    assert arith(plain, M.ADDSS, denormal, 0) == denormal and plain.mxcsr & 2  # DE
    daz = FakeCpu(0x1F80 | 1 << 6)
    assert arith(daz, M.ADDSS, denormal, 0) == 0 and not daz.mxcsr & 2
    ftz = FakeCpu(0x1F80 | 1 << 15)
    tiny = 0x00800000  # the smallest normal; halving it underflows
    assert arith(ftz, M.MULSS, tiny, f32(0.5)) == 0
    assert ftz.mxcsr & 0x30 == 0x30  # UE and PE


def test_compare_predicates():
    cpu = FakeCpu()
    ones = 0xFFFFFFFF
    a, b = f32(1, 2, 3, 0), f32(2, 2, 1, 0)
    expect = {0: (0, ones, 0, ones), 1: (ones, 0, 0, 0), 2: (ones, ones, 0, ones),
              4: (ones, 0, ones, 0), 5: (0, ones, ones, ones), 6: (0, 0, ones, 0),
              7: (ones, ones, ones, ones), 3: (0, 0, 0, 0)}
    for predicate, lanes in expect.items():
        got = sse_compare.compare_lanes(cpu, sse_float.F32, 4, predicate, a, b)
        assert got == sum(v << (32 * k) for k, v in enumerate(lanes)), predicate
    # LT signals on a QNaN, EQ does not
    quiet = FakeCpu()
    sse_compare.compare_lanes(quiet, sse_float.F32, 1, 0, 0x7FC00000, 0)
    assert not quiet.mxcsr & 1
    sse_compare.compare_lanes(quiet, sse_float.F32, 1, 1, 0x7FC00000, 0)
    assert quiet.mxcsr & 1


def test_comiss_flags():
    cpu = FakeCpu()
    assert sse_compare.comi(cpu, sse_float.F32, True, f32(1), f32(2)) == fl.CF
    assert sse_compare.comi(cpu, sse_float.F32, True, f32(2), f32(2)) == fl.ZF
    assert sse_compare.comi(cpu, sse_float.F32, True, f32(3), f32(2)) == 0
    u = FakeCpu()
    assert sse_compare.comi(u, sse_float.F32, False, 0x7FC00000, 0) == fl.ZF | fl.PF | fl.CF
    assert not u.mxcsr & 1  # UCOMISS: a QNaN is quiet
    sse_compare.comi(u, sse_float.F32, True, 0x7FC00000, 0)
    assert u.mxcsr & 1  # COMISS: IE


def test_float_to_integer_indefinite_and_truncation():
    cpu = FakeCpu()
    to_i32 = sse_convert.lane_op("f32", 32, "int", 32, False)
    trunc = sse_convert.lane_op("f32", 32, "int", 32, True)
    env = env_of(cpu.mxcsr)
    assert to_i32(env, f32(2.5)).bits == 2  # nearest, ties to even
    assert trunc(env, f32(-2.75)).bits == (-2) & 0xFFFFFFFF
    r = to_i32(env, f32(3e9))
    assert r.bits == 0x80000000 and r.flags & 1  # integer indefinite, IE
    r = to_i32(env, 0x00000001)  # denormal: no DE for conversions to integers
    assert r.bits == 0 and r.flags == 0x20
