"""Decimal adjust: DAA DAS AAA AAS AAM AAD (invalid in 64-bit mode; iced decodes them so).

Hardware facts relied on (Intel SDM Vol. 2A "AAA", "AAD", "AAM", "AAS", "DAA", "DAS";
8086/80286 behaviour from the SingleStepTests recordings):

- DAA/DAS adjust AL after a packed-BCD add/subtract: +/-6 when the low nibble is > 9
  or AF is set (AF := 1), +/-0x60 when the original AL was > 0x99 or CF was set
  (CF := 1); DAS on the 80286+ also sets CF on
  a borrow out of the -6 step (the 8086 does not).  SF/ZF/PF from the result; OF undefined.
- AAA/AAS adjust AL after an unpacked-BCD add/subtract: when the low nibble is > 9 or
  AF is set, AL +/- 6 and AH +/- 1, AF := CF := 1, else AF := CF := 0; then AL &= 0x0F.
  The 8086 adjusts AL and AH separately; the 80286 and later add/subtract 0x106 to all
  of AX (so a carry/borrow out of AL reaches AH).  OF/SF/ZF/PF are undefined.
- AAM imm8: AH := AL / imm8, AL := AL mod imm8, #DE when imm8 = 0.  AAD imm8:
  AL := AL + AH * imm8 (8 bits), AH := 0.  SF/ZF/PF from AL; OF/AF/CF undefined: AAD
  gives those of the 8-bit addition it performs, AAM those of a logical operation.
"""

from __future__ import annotations

from iced_x86 import Mnemonic

from pyvmm.engines.interp.builder import Handler, Insn
from pyvmm.engines.interp.semantics import semantic
from pyvmm.engines.interp.semantics.shift import CLEAR_STATUS, szp_src

DE = 0  # divide error vector (SDM Vol. 3A Table 6-1)
CF, AF = 0x01, 0x10  # RFLAGS bits (SDM Vol. 1 §3.4.3.1)

_LOAD = "f = cpu.flags if not cpu.lf_op else fl.materialize(cpu)\nax = regs[0]\nal = ax & 0xff"
_STORE_FLAGS = f"cpu.flags = (f & {CLEAR_STATUS}) | cf | af | {szp_src('al', 8)}"


@semantic(Mnemonic.DAA)
def build_daa(b: Insn) -> Handler:
    return b.compile(f"""
{_LOAD}
cf = f & 1
if (al & 0xf) > 9 or f & {AF}:
    af = {AF}
    r = al + 6
else:
    af = 0
    r = al
if al > 0x99 or cf:
    r += 0x60
    cf = 1
al = r & 0xff
regs[0] = (ax & -256) | al
{_STORE_FLAGS}
{b.next}
""")


@semantic(Mnemonic.DAS)
def build_das(b: Insn) -> Handler:
    # 80286+: a borrow out of the -6 step sets CF; the 8086 ignores it.
    borrow = "" if b.cpu.is_8086 else "\n    if al < 6:\n        cf = 1"
    return b.compile(f"""
{_LOAD}
cf = f & 1
if (al & 0xf) > 9 or f & {AF}:
    af = {AF}
    r = al - 6{borrow}
else:
    af = 0
    r = al
if al > 0x99 or f & 1:
    r -= 0x60
    cf = 1
al = r & 0xff
regs[0] = (ax & -256) | al
{_STORE_FLAGS}
{b.next}
""")


@semantic(Mnemonic.AAA, Mnemonic.AAS)
def build_aaa(b: Insn) -> Handler:
    sub = b.mnemonic == Mnemonic.AAS
    if b.cpu.is_8086:  # AL and AH adjusted separately
        op = "-" if sub else "+"
        adjust = (f"ax = (ax & -65536) | ((((ax >> 8) {op} 1) & 0xff) << 8) "
                  f"| ((al {op} 6) & 0xff)")
    else:  # AX +/- 0x106
        adjust = f"ax = (ax & -65536) | ((ax {'-' if sub else '+'} 0x106) & 0xffff)"
    return b.compile(f"""
{_LOAD}
if (al & 0xf) > 9 or f & {AF}:
    {adjust}
    cf = 1
    af = {AF}
else:
    cf = af = 0
regs[0] = ax & -241
al = ax & 0xf
{_STORE_FLAGS}
{b.next}
""")


@semantic(Mnemonic.AAM)
def build_aam(b: Insn) -> Handler:
    base = b.imm(0, 1)
    if base == 0:
        return b.compile(f"raise CpuFault({DE})")
    return b.compile(f"""
ah, al = divmod(regs[0] & 0xff, {b.const(base)})
regs[0] = (regs[0] & -65536) | (ah << 8) | al
cpu.flags = (cpu.flags & {CLEAR_STATUS}) | {szp_src('al', 8)}
cpu.lf_op = 0
{b.next}
""")


@semantic(Mnemonic.AAD)
def build_aad(b: Insn) -> Handler:
    base = b.imm(0, 1)
    return b.compile(f"""
ax = regs[0]
a = ax & 0xff
m = ((ax >> 8) * {b.const(base)}) & 0xff
regs[0] = (ax & -65536) | ((a + m) & 0xff)
cpu.lf_op = LF_ADD
cpu.lf_a = a
cpu.lf_b = m
cpu.lf_r = a + m
cpu.lf_size = 1
{b.next}
""")
