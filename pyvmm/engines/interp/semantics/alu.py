"""Integer ALU: ADD ADC SUB SBB CMP AND OR XOR TEST INC DEC NEG NOT (SDM Vol. 2 "ADD" etc.).

Flags are lazy (flags.py): each handler records op kind, operands and raw result.
"""

from __future__ import annotations

from iced_x86 import Mnemonic

from pyvmm.engines.interp.builder import Handler, Insn
from pyvmm.engines.interp.semantics import semantic

# mnemonic -> (result expression over a, v, c; lazy kind; writes result back)
_BINARY = {
    Mnemonic.ADD: ("a + v", "LF_ADD", True, False),
    Mnemonic.ADC: ("a + v + c", "LF_ADD", True, True),
    Mnemonic.SUB: ("a - v", "LF_SUB", True, False),
    Mnemonic.SBB: ("a - v - c", "LF_SUB", True, True),
    Mnemonic.CMP: ("a - v", "LF_SUB", False, False),
    Mnemonic.AND: ("a & v", "LF_LOGIC", True, False),
    Mnemonic.OR: ("a | v", "LF_LOGIC", True, False),
    Mnemonic.XOR: ("a ^ v", "LF_LOGIC", True, False),
    Mnemonic.TEST: ("a & v", "LF_LOGIC", False, False),
}


def _binary(b: Insn) -> Handler:
    expr, kind, writes, carry = _BINARY[b.mnemonic]
    size = b.size(0)
    lines = []
    if carry:
        lines.append("c = fl.get_cf(cpu)")
    lines.append(f"a = {b.get(0)}")
    lines.append(f"v = {b.get(1)}")
    if b.mnemonic in (Mnemonic.XOR, Mnemonic.SUB) and b.is_reg(0) and b.is_reg(1) and \
            b.reg(0) == b.reg(1):
        lines = ["a = v = 0"]  # xor r,r / sub r,r: no read needed
    lines.append(f"r = {expr}")
    if writes:
        lines.append(b.set(0, "r"))
    lines.append(f"cpu.lf_op = {kind}; cpu.lf_a = a; cpu.lf_b = v; cpu.lf_r = r; "
                 f"cpu.lf_size = {size}")
    lines.append(b.next)
    return b.compile("\n".join(lines))


for _m in _BINARY:
    semantic(_m)(_binary)


@semantic(Mnemonic.INC, Mnemonic.DEC)
def _incdec(b: Insn) -> Handler:
    size = b.size(0)
    op = "+" if b.mnemonic == Mnemonic.INC else "-"
    kind = "LF_INC" if b.mnemonic == Mnemonic.INC else "LF_DEC"
    return b.compile(f"""
a = {b.get(0)}
r = (a {op} 1) & {b.const(0xFFFFFFFFFFFFFFFF >> (64 - 8 * size))}
{b.set(0, "r")}
if cpu.lf_op:
    cpu.flags = (cpu.flags & -2) | fl.get_cf(cpu)
cpu.lf_op = {kind}; cpu.lf_a = a; cpu.lf_b = 1; cpu.lf_r = r; cpu.lf_size = {size}
{b.next}
""")


@semantic(Mnemonic.NEG)
def _neg(b: Insn) -> Handler:
    size = b.size(0)
    return b.compile(f"""
v = {b.get(0)}
r = -v
{b.set(0, "r")}
cpu.lf_op = LF_SUB; cpu.lf_a = 0; cpu.lf_b = v; cpu.lf_r = r; cpu.lf_size = {size}
{b.next}
""")


@semantic(Mnemonic.NOT)
def _not(b: Insn) -> Handler:
    return b.compile(f"""
{b.set(0, "~" + b.get(0))}
{b.next}
""")
