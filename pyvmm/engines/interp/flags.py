"""Lazy arithmetic flags (SDM Vol. 1 §3.4.3.1, "Status Flags").

Most instructions that write CF/PF/AF/ZF/SF/OF are followed by another one that
overwrites them unread, so the interpreter records only *what* the last
arithmetic operation was (`Cpu.lf_op`, operands `lf_a`/`lf_b`, raw result
`lf_r`, operand size `lf_size` in bytes) and computes a flag when something
reads it.  While `lf_op == LF_NONE` the six status bits in `Cpu.flags` are
valid; all other RFLAGS bits in `Cpu.flags` are always valid.

Raw results: for LF_ADD `lf_r = a + b (+ carry-in)` unmasked, so CF is
`lf_r > mask`; for LF_SUB `lf_r = a - b (- borrow-in)`, so CF is `lf_r < 0`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyvmm.engines.interp.cpu import Cpu

CF = 1 << 0  # carry
PF = 1 << 2  # parity of the low result byte (even -> 1)
AF = 1 << 4  # carry/borrow out of bit 3
ZF = 1 << 6  # zero
SF = 1 << 7  # sign
OF = 1 << 11  # signed overflow
ARITH_MASK = CF | PF | AF | ZF | SF | OF

# Lazy operation kinds.
LF_NONE = 0  # flags already materialised in Cpu.flags
LF_ADD = 1  # ADD, ADC: lf_r = a + b + cin (raw)
LF_SUB = 2  # SUB, SBB, CMP, NEG (a=0): lf_r = a - b - bin (raw)
LF_LOGIC = 3  # AND/OR/XOR/TEST: CF=OF=AF=0; lf_r already masked
LF_INC = 4  # INC: CF preserved in Cpu.flags bit 0; lf_a = old value
LF_DEC = 5  # DEC: CF preserved in Cpu.flags bit 0; lf_a = old value

MASK = (0, 0xFF, 0xFFFF, 0, 0xFFFFFFFF, 0, 0, 0, 0xFFFFFFFFFFFFFFFF)  # by size in bytes
SIGN = (0, 0x80, 0x8000, 0, 0x80000000, 0, 0, 0, 0x8000000000000000)  # sign bit by size
BITS = (0, 8, 16, 0, 32, 0, 0, 0, 64)

# PARITY[b] is PF for a low result byte b (set when the number of 1 bits is even).
PARITY = bytes(PF if bin(i).count("1") % 2 == 0 else 0 for i in range(256))


def szp(result: int, size: int) -> int:
    """SF, ZF and PF bits for an already-masked `result` of `size` bytes."""
    return ((SF if result & SIGN[size] else 0) | (0 if result else ZF)
            | PARITY[result & 0xFF])


def compute(cpu: Cpu) -> int:
    """The six status-flag bits described by the lazy state (LF_NONE: from Cpu.flags)."""
    op = cpu.lf_op
    if op == LF_NONE:
        return cpu.flags & ARITH_MASK
    size = cpu.lf_size
    mask = MASK[size]
    sign = SIGN[size]
    r = cpu.lf_r
    rm = r & mask
    bits = ((SF if rm & sign else 0) | (0 if rm else ZF) | PARITY[rm & 0xFF])
    if op == LF_LOGIC:
        return bits
    a = cpu.lf_a
    b = cpu.lf_b
    bits |= (a ^ b ^ rm) & AF
    if op == LF_ADD:
        if r > mask:
            bits |= CF
        if ~(a ^ b) & (a ^ rm) & sign:
            bits |= OF
    elif op == LF_SUB:
        if r < 0:
            bits |= CF
        if (a ^ b) & (a ^ rm) & sign:
            bits |= OF
    elif op == LF_INC:
        bits |= cpu.flags & CF
        if rm == sign:
            bits |= OF
    elif op == LF_DEC:
        bits |= cpu.flags & CF
        if rm == sign - 1:
            bits |= OF
    return bits


def materialize(cpu: Cpu) -> int:
    """Fold the lazy state into Cpu.flags; returns the full RFLAGS value."""
    if cpu.lf_op != LF_NONE:
        cpu.flags = (cpu.flags & ~ARITH_MASK) | compute(cpu)
        cpu.lf_op = LF_NONE
    return cpu.flags


def get_cf(cpu: Cpu) -> int:
    """CF as 0/1, cheaply for the common lazy kinds."""
    op = cpu.lf_op
    if op == LF_SUB:
        return 1 if cpu.lf_r < 0 else 0
    if op == LF_ADD:
        return 1 if cpu.lf_r > MASK[cpu.lf_size] else 0
    if op == LF_LOGIC:
        return 0
    return cpu.flags & CF


# -- condition codes (SDM Vol. 1 Appendix B, Table B-1), indexed by iced ConditionCode ---

def _z(cpu: Cpu) -> bool:
    if cpu.lf_op:
        return not cpu.lf_r & MASK[cpu.lf_size]
    return bool(cpu.flags & ZF)


def _c(cpu: Cpu) -> bool:
    return bool(get_cf(cpu))


def _s(cpu: Cpu) -> bool:
    if cpu.lf_op:
        return bool(cpu.lf_r & SIGN[cpu.lf_size])
    return bool(cpu.flags & SF)


def _o(cpu: Cpu) -> bool:
    return bool(compute(cpu) & OF)


def _p(cpu: Cpu) -> bool:
    if cpu.lf_op:
        return bool(PARITY[cpu.lf_r & 0xFF])
    return bool(cpu.flags & PF)


def _be(cpu: Cpu) -> bool:
    if cpu.lf_op == LF_SUB:
        return cpu.lf_r < 0 or not cpu.lf_r & MASK[cpu.lf_size]
    return bool(compute(cpu) & (CF | ZF))


def _l(cpu: Cpu) -> bool:
    if cpu.lf_op == LF_SUB and cpu.lf_r == cpu.lf_a - cpu.lf_b:
        sign = SIGN[cpu.lf_size]
        return ((cpu.lf_a ^ sign) - (cpu.lf_b ^ sign)) < 0
    f = compute(cpu)
    return bool(f & SF) != bool(f & OF)


def _le(cpu: Cpu) -> bool:
    f = compute(cpu)
    return bool(f & ZF) or (bool(f & SF) != bool(f & OF))


_POSITIVE = (None, _o, None, _c, None, _z, None, _be, None, _s, None, _p, None, _l, None, _le, None)


def _negate(fn):  # noqa: ANN001, ANN202 - tiny helper
    return lambda cpu: not fn(cpu)


# CONDITIONS[cc](cpu) -> bool for iced ConditionCode cc (1..16: o no b ae e ne be a s ns p np
# l ge le g).
CONDITIONS = tuple(
    None if i == 0 else (_POSITIVE[i] if i % 2 == 1 else _negate(_POSITIVE[i - 1]))
    for i in range(17)
)
