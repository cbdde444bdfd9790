"""MMX and SSE/SSE2 integer arithmetic, logic, shifts, shuffles, packs (SDM Vol. 2).

One row per mnemonic: the operation on (destination, source, imm8, width in
bits) as unsigned ints.  The same row serves the MMX form (64-bit MM
registers, m64 operands) and the SSE2 form (128-bit XMM registers, aligned
m128 operands): which one an encoding is follows from its registers, as in
the SDM's per-instruction pages ("PADDB/PADDW/PADDD/PADDQ", "PSHUFD", ...).
The bitwise ANDPS/ANDPD... rows belong here too: they do not look at the
floating-point values (no MXCSR exceptions, SDM "ANDPS").

Lane facts: wrap-around add/subtract; signed/unsigned saturation clamps to
the lane's range; PCMPxx lanes become all ones or zero; PAVG rounds up
((a + b + 1) >> 1); PMULH* keep the high half of the 32-bit product; shift
counts are the whole low quadword of the source (or imm8), and a count past
the lane width gives 0 (logical) or the sign in every bit (arithmetic);
PSLLDQ/PSRLDQ shift bytes, a count over 15 clears the register.
"""

from __future__ import annotations

from collections.abc import Callable

from iced_x86 import Mnemonic as M

from pyvmm.engines.interp.builder import Handler, Insn
from pyvmm.engines.interp.semantics import semantic
from pyvmm.engines.interp.semantics._simd import (
    Body,
    check_for,
    join,
    require_features,
    sat_signed,
    sat_unsigned,
    signed,
    split,
    width_of,
)

Op = Callable[[int, int, int, int], int]  # (dst, src, imm8, width bits) -> new dst
MASK64 = (1 << 64) - 1


def lanes(bits: int, f: Callable[[int, int], int]) -> Op:
    """`f` applied to each pair of `bits`-wide lanes (unsigned values in, masked out)."""
    def op(a: int, b: int, imm: int, width: int) -> int:
        n = width // bits
        return join([f(x, y) for x, y in zip(split(a, bits, n), split(b, bits, n),
                                               strict=True)], bits)
    return op


def _signed_lanes(bits: int, f: Callable[[int, int], int]) -> Op:
    return lanes(bits, lambda x, y: f(signed(x, bits), signed(y, bits)))


def _shift(bits: int, kind: str) -> Op:
    """PSLL/PSRL/PSRA: every lane shifted by the source's low quadword or imm8."""
    def op(a: int, b: int, imm: int, width: int) -> int:
        count = b & MASK64
        n = width // bits
        if kind == "sra":
            count = min(count, bits - 1)
            return join([signed(x, bits) >> count for x in split(a, bits, n)], bits)
        if count >= bits:
            return 0
        if kind == "sll":
            return join([x << count for x in split(a, bits, n)], bits)
        return join([x >> count for x in split(a, bits, n)], bits)
    return op


def _byte_shift(left: bool) -> Op:
    def op(a: int, b: int, imm: int, width: int) -> int:
        count = b & 0xFF
        if count > 15:
            return 0
        return (a << (8 * count)) & ((1 << 128) - 1) if left else a >> (8 * count)
    return op


def _unpack(bits: int, high: bool) -> Op:
    """PUNPCKL*/PUNPCKH*, UNPCKL/HPS/PD: interleave the low (high) halves' lanes."""
    def op(a: int, b: int, imm: int, width: int) -> int:
        n = width // bits
        start = n // 2 if high else 0
        xs, ys = split(a, bits, n)[start:start + n // 2], split(b, bits, n)[start:start + n // 2]
        return join([v for pair in zip(xs, ys, strict=True) for v in pair], bits)
    return op


def _pack(bits: int, unsigned: bool) -> Op:
    """PACKSSWB/PACKSSDW/PACKUSWB: signed source lanes saturated to half width."""
    half = bits // 2
    sat = sat_unsigned if unsigned else sat_signed

    def op(a: int, b: int, imm: int, width: int) -> int:
        n = width // bits
        values = [sat(signed(x, bits), half) for x in split(a, bits, n) + split(b, bits, n)]
        return join(values, half)
    return op


def _pmaddwd(a: int, b: int, imm: int, width: int) -> int:
    n = width // 16
    xs = [signed(x, 16) for x in split(a, 16, n)]
    ys = [signed(y, 16) for y in split(b, 16, n)]
    return join([xs[k] * ys[k] + xs[k + 1] * ys[k + 1] for k in range(0, n, 2)], 32)


def _psadbw(a: int, b: int, imm: int, width: int) -> int:
    out = []
    for q in range(width // 64):
        xs, ys = split(a >> (64 * q), 8, 8), split(b >> (64 * q), 8, 8)
        out.append(sum(abs(x - y) for x, y in zip(xs, ys, strict=True)))
    return join(out, 64)


def _pshufd(a: int, b: int, imm: int, width: int) -> int:
    xs = split(b, 32, 4)
    return join([xs[(imm >> (2 * k)) & 3] for k in range(4)], 32)


def _pshufw(a: int, b: int, imm: int, width: int) -> int:
    xs = split(b, 16, 4)
    return join([xs[(imm >> (2 * k)) & 3] for k in range(4)], 16)


def _pshuflw(a: int, b: int, imm: int, width: int) -> int:
    return (b >> 64) << 64 | _pshufw(0, b & MASK64, imm, 64)


def _pshufhw(a: int, b: int, imm: int, width: int) -> int:
    return _pshufw(0, b >> 64, imm, 64) << 64 | (b & MASK64)


def _shufps(a: int, b: int, imm: int, width: int) -> int:
    xs, ys = split(a, 32, 4), split(b, 32, 4)
    return join([xs[imm & 3], xs[imm >> 2 & 3], ys[imm >> 4 & 3], ys[imm >> 6 & 3]], 32)


def _shufpd(a: int, b: int, imm: int, width: int) -> int:
    return join([split(a, 64, 2)[imm & 1], split(b, 64, 2)[imm >> 1 & 1]], 64)


def _bitwise(f: Callable[[int, int], int]) -> Op:
    return lambda a, b, imm, width: f(a, b) & ((1 << width) - 1)


_AND = _bitwise(lambda a, b: a & b)
_ANDN = _bitwise(lambda a, b: ~a & b)
_OR = _bitwise(lambda a, b: a | b)
_XOR = _bitwise(lambda a, b: a ^ b)

ROWS: dict[int, Op] = {
    M.PADDB: lanes(8, lambda x, y: x + y),
    M.PADDW: lanes(16, lambda x, y: x + y),
    M.PADDD: lanes(32, lambda x, y: x + y),
    M.PADDQ: lanes(64, lambda x, y: x + y),
    M.PSUBB: lanes(8, lambda x, y: x - y),
    M.PSUBW: lanes(16, lambda x, y: x - y),
    M.PSUBD: lanes(32, lambda x, y: x - y),
    M.PSUBQ: lanes(64, lambda x, y: x - y),
    M.PADDSB: _signed_lanes(8, lambda x, y: sat_signed(x + y, 8)),
    M.PADDSW: _signed_lanes(16, lambda x, y: sat_signed(x + y, 16)),
    M.PSUBSB: _signed_lanes(8, lambda x, y: sat_signed(x - y, 8)),
    M.PSUBSW: _signed_lanes(16, lambda x, y: sat_signed(x - y, 16)),
    M.PADDUSB: lanes(8, lambda x, y: sat_unsigned(x + y, 8)),
    M.PADDUSW: lanes(16, lambda x, y: sat_unsigned(x + y, 16)),
    M.PSUBUSB: lanes(8, lambda x, y: sat_unsigned(x - y, 8)),
    M.PSUBUSW: lanes(16, lambda x, y: sat_unsigned(x - y, 16)),
    M.PCMPEQB: lanes(8, lambda x, y: -(x == y)),
    M.PCMPEQW: lanes(16, lambda x, y: -(x == y)),
    M.PCMPEQD: lanes(32, lambda x, y: -(x == y)),
    M.PCMPGTB: _signed_lanes(8, lambda x, y: -(x > y)),
    M.PCMPGTW: _signed_lanes(16, lambda x, y: -(x > y)),
    M.PCMPGTD: _signed_lanes(32, lambda x, y: -(x > y)),
    M.PMINUB: lanes(8, min),
    M.PMAXUB: lanes(8, max),
    M.PMINSW: _signed_lanes(16, min),
    M.PMAXSW: _signed_lanes(16, max),
    M.PAVGB: lanes(8, lambda x, y: (x + y + 1) >> 1),
    M.PAVGW: lanes(16, lambda x, y: (x + y + 1) >> 1),
    M.PMULLW: lanes(16, lambda x, y: x * y),
    M.PMULHW: _signed_lanes(16, lambda x, y: (x * y) >> 16),
    M.PMULHUW: lanes(16, lambda x, y: (x * y) >> 16),
    M.PMULUDQ: lanes(64, lambda x, y: (x & 0xFFFFFFFF) * (y & 0xFFFFFFFF)),
    M.PMADDWD: _pmaddwd,
    M.PSADBW: _psadbw,
    M.PAND: _AND, M.ANDPS: _AND, M.ANDPD: _AND,
    M.PANDN: _ANDN, M.ANDNPS: _ANDN, M.ANDNPD: _ANDN,
    M.POR: _OR, M.ORPS: _OR, M.ORPD: _OR,
    M.PXOR: _XOR, M.XORPS: _XOR, M.XORPD: _XOR,
    M.PSLLW: _shift(16, "sll"), M.PSLLD: _shift(32, "sll"), M.PSLLQ: _shift(64, "sll"),
    M.PSRLW: _shift(16, "srl"), M.PSRLD: _shift(32, "srl"), M.PSRLQ: _shift(64, "srl"),
    M.PSRAW: _shift(16, "sra"), M.PSRAD: _shift(32, "sra"),
    M.PSLLDQ: _byte_shift(True), M.PSRLDQ: _byte_shift(False),
    M.PUNPCKLBW: _unpack(8, False), M.PUNPCKLWD: _unpack(16, False),
    M.PUNPCKLDQ: _unpack(32, False), M.PUNPCKLQDQ: _unpack(64, False),
    M.PUNPCKHBW: _unpack(8, True), M.PUNPCKHWD: _unpack(16, True),
    M.PUNPCKHDQ: _unpack(32, True), M.PUNPCKHQDQ: _unpack(64, True),
    M.UNPCKLPS: _unpack(32, False), M.UNPCKHPS: _unpack(32, True),
    M.UNPCKLPD: _unpack(64, False), M.UNPCKHPD: _unpack(64, True),
    M.PACKSSWB: _pack(16, False), M.PACKSSDW: _pack(32, False), M.PACKUSWB: _pack(16, True),
    M.PSHUFD: _pshufd, M.PSHUFW: _pshufw, M.PSHUFLW: _pshuflw, M.PSHUFHW: _pshufhw,
    M.SHUFPS: _shufps, M.SHUFPD: _shufpd,
}


@semantic(*ROWS)
def _vector_op(b: Insn) -> Handler:
    require_features(b)
    op = ROWS[b.mnemonic]
    body = Body(b, check_for(b))
    src = body.get(1)  # a register, memory (aligned m128 / m64 / m32) or the imm8 count
    imm = b.ins.immediate(2) & 0xFF if b.ins.op_count == 3 else 0
    return body.add(body.put(0, f"{b.const(op)}({body.get(0)}, {src}, {b.const(imm)}, "
                                f"{width_of(b, 0)})")).compile()
