"""SSE/SSE2 conversions: the CVT* family (SDM Vol. 2 "CVTDQ2PD" ... "CVTTSS2SI").

One row per mnemonic: source lane kind, destination lane kind, how many
lanes, whether the destination's bits above the results are kept (the
scalar forms and CVTPI2PS) or zeroed, and whether the float -> integer
conversion truncates (CVTT*).  "int" lanes are signed two's complement,
32 bits for the packed forms and the operand size for the general-register
forms (CVTSI2SS r/m64, CVTSS2SI r64...).

Facts (the instruction pages):
- Float -> integer: rounded by MXCSR.RC (CVTT*: toward zero); a NaN,
  infinity or out-of-range value gives the integer indefinite (only the
  sign bit set) and IE; inexact -> PE.  These report no DE ("SIMD
  Floating-Point Exceptions: Invalid, Precision"); DAZ still reads a
  denormal as zero.
- Integer -> float: exact or rounded by MXCSR.RC with PE (CVTDQ2PD,
  CVTPI2PD and CVTSI2SD r/m32 are always exact).
- Float -> float: widening is exact (an SNaN is quieted with IE, a denormal
  raises DE); narrowing (CVTSD2SS, CVTPD2PS) rounds with every exception.
- CVTPD2PS, CVT(T)PD2DQ write the low quadword and zero the high one;
  CVTPI2PS keeps the destination's high quadword; CVTPI2PS/PD with an MM
  source and CVT(T)PS2PI/PD2PI make the x87 -> MMX transition (MMX register
  access, fpu.mmx_read/mmx_write).
"""

from __future__ import annotations

from collections.abc import Callable

from iced_x86 import Mnemonic as M

from pyvmm.engines.interp import softfloat as sf
from pyvmm.engines.interp.builder import Handler, Insn
from pyvmm.engines.interp.semantics import semantic
from pyvmm.engines.interp.semantics._simd import Body, check_for, reg_kind, require_features
from pyvmm.engines.interp.semantics._ssefp import commit, env_of, join, lanes, merge, signed

FLOATS = {"f32": sf.F32, "f64": sf.F64}

# mnemonic -> (source kind, destination kind, lanes, keep the destination's upper bits,
#              truncate)
ROWS: dict[int, tuple[str, str, int, bool, bool]] = {
    M.CVTSI2SS: ("int", "f32", 1, True, False),
    M.CVTSI2SD: ("int", "f64", 1, True, False),
    M.CVTSS2SI: ("f32", "int", 1, False, False),
    M.CVTTSS2SI: ("f32", "int", 1, False, True),
    M.CVTSD2SI: ("f64", "int", 1, False, False),
    M.CVTTSD2SI: ("f64", "int", 1, False, True),
    M.CVTSS2SD: ("f32", "f64", 1, True, False),
    M.CVTSD2SS: ("f64", "f32", 1, True, False),
    M.CVTPS2PD: ("f32", "f64", 2, False, False),
    M.CVTPD2PS: ("f64", "f32", 2, False, False),
    M.CVTDQ2PS: ("int", "f32", 4, False, False),
    M.CVTPS2DQ: ("f32", "int", 4, False, False),
    M.CVTTPS2DQ: ("f32", "int", 4, False, True),
    M.CVTDQ2PD: ("int", "f64", 2, False, False),
    M.CVTPD2DQ: ("f64", "int", 2, False, False),
    M.CVTTPD2DQ: ("f64", "int", 2, False, True),
    M.CVTPI2PS: ("int", "f32", 2, True, False),
    M.CVTPI2PD: ("int", "f64", 2, False, False),
    M.CVTPS2PI: ("f32", "int", 2, False, False),
    M.CVTTPS2PI: ("f32", "int", 2, False, True),
    M.CVTPD2PI: ("f64", "int", 2, False, False),
    M.CVTTPD2PI: ("f64", "int", 2, False, True),
}

Convert = Callable[[sf.Env, int], sf.Result]


def lane_op(src: str, src_bits: int, dst: str, dst_bits: int, truncate: bool) -> Convert:
    """The conversion of one lane's bits."""
    if src == "int":
        fmt = FLOATS[dst]
        return lambda env, x: sf.from_int(env, fmt, signed(x, src_bits))
    sfmt = FLOATS[src]
    if dst == "int":
        def to_int(env: sf.Env, x: int) -> sf.Result:
            bits, flags, up = sf.to_int(env, sf.unpack(sfmt, x), dst_bits, truncate)
            return sf.Result(bits, flags & ~sf.DE, up)
        return to_int
    dfmt = FLOATS[dst]
    return lambda env, x: sf.convert(env, dfmt, sf.unpack(sfmt, x))


def convert(cpu, op: Convert, src_bits: int, dst_bits: int, count: int,  # noqa: ANN001
            keep: bool, dst: int, src: int) -> int:
    env = env_of(cpu.mxcsr)
    results = [op(env, x) for x in lanes(src, src_bits, count)]
    flags = 0
    for r in results:
        flags |= r.flags
    commit(cpu, flags)
    values = [r.bits for r in results]
    return merge(dst, values, dst_bits) if keep else join(values, dst_bits)


def _bits(b: Insn, i: int, kind: str) -> int:
    if kind in FLOATS:
        return FLOATS[kind].width
    if reg_kind(b, i) == "gpr" or (reg_kind(b, i) == "mem" and ROWS[b.mnemonic][2] == 1):
        return 8 * b.size(i)  # CVTSI2SS r/m32|64, CVTSS2SI r32|64
    return 32


@semantic(*ROWS)
def _cvt(b: Insn) -> Handler:
    require_features(b)
    src, dst, count, keep, truncate = ROWS[b.mnemonic]
    src_bits, dst_bits = _bits(b, 1, src), _bits(b, 0, dst)
    op = lane_op(src, src_bits, dst, dst_bits, truncate)
    body = Body(b, check_for(b))
    source = body.get(1)
    old = body.get(0) if keep else "0"
    return body.add(body.put(0, f"{b.const(convert)}(cpu, {b.const(op)}, {src_bits}, "
                                f"{dst_bits}, {count}, {b.const(keep)}, {old}, {source})")
                    ).compile()
