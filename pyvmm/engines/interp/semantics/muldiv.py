"""Multiply and divide: MUL, IMUL (one, two and three operands), DIV, IDIV.

Hardware facts relied on (Intel SDM Vol. 2A "DIV", "IDIV", "IMUL", "MUL"; 8086/80286
behaviour from the SingleStepTests recordings):

- One-operand forms use AL/AX/EAX/RAX as the implicit operand and write the double-width
  product to AX, DX:AX, EDX:EAX or RDX:RAX; DIV/IDIV divide that pair by r/m and leave
  the quotient in AL/AX/EAX/RAX and the remainder in AH/DX/EDX/RDX.
- MUL: CF = OF = (upper half != 0).  IMUL: CF = OF = (the product does not fit the
  destination as a signed number).  SF, ZF, AF and PF are undefined: we give SF/ZF/PF
  of the low half and AF = 0.
- DIV/IDIV raise #DE for a zero divisor or a quotient that does not fit; IDIV
  truncates toward zero and the remainder takes the dividend's sign.  All six flags
  are undefined after a divide: they are left unchanged.
- 8086: the IDIV quotient must fit in 7 bits plus sign *magnitude* (|q| <= 0x7F /
  0x7FFF), so a quotient of -0x80/-0x8000 raises #DE; a REP/REPNE prefix makes IDIV
  negate its quotient (microcode sign-flag quirk).  The 80286 and later accept
  -0x80/-0x8000.
"""

from __future__ import annotations

from iced_x86 import Mnemonic

from pyvmm.engines.interp.builder import Handler, Insn
from pyvmm.engines.interp.semantics import semantic
from pyvmm.engines.interp.semantics.shift import CLEAR_STATUS, szp_src

RAX, RDX = 0, 2  # implicit operands of the one-operand forms
DE = 0  # divide error vector (SDM Vol. 3A Table 6-1)
CF_OF = 0x801  # CF | OF, set together by MUL/IMUL


def _store_pair(size: int, lo: str, hi: str) -> str:
    """Statements writing the low half to AL/AX/EAX/RAX and the high half to AH/DX/EDX/RDX."""
    if size == 1:
        return f"regs[{RAX}] = (regs[{RAX}] & -65536) | (({hi}) << 8) | ({lo})"
    if size == 2:
        return (f"regs[{RAX}] = (regs[{RAX}] & -65536) | ({lo})\n"
                f"regs[{RDX}] = (regs[{RDX}] & -65536) | ({hi})")
    return f"regs[{RAX}] = {lo}\nregs[{RDX}] = {hi}"


def _dividend(size: int) -> str:
    """Source for the unsigned double-width dividend AX / DX:AX / EDX:EAX / RDX:RAX."""
    if size == 1:
        return f"regs[{RAX}] & 0xffff"
    m = (1 << (size * 8)) - 1
    return f"((regs[{RDX}] & {m:#x}) << {size * 8}) | (regs[{RAX}] & {m:#x})"


def _flags_src(cfof: str, lo: str, w: int) -> str:
    return (f"cpu.flags = (cpu.flags & {CLEAR_STATUS}) | ({cfof}) | {szp_src(lo, w)}\n"
            "cpu.lf_op = 0")


@semantic(Mnemonic.MUL)
def build_mul(b: Insn) -> Handler:
    size = b.size(0)
    w = size * 8
    m = (1 << w) - 1
    acc = "(regs[0] & 0xff)" if size == 1 else f"(regs[{RAX}] & {m:#x})"
    return b.compile(f"""
p = {acc} * {b.get(0)}
lo = p & {m:#x}
hi = p >> {w}
{_store_pair(size, "lo", "hi")}
{_flags_src(f"{CF_OF} if hi else 0", "lo", w)}
{b.next}
""")


@semantic(Mnemonic.IMUL)
def build_imul(b: Insn) -> Handler:
    ops = b.ins.op_count
    size = b.size(0)
    w = size * 8
    m = (1 << w) - 1
    sign = 1 << (w - 1)

    def signed(src: str) -> str:
        return f"((({src}) ^ {sign:#x}) - {sign:#x})"

    if ops == 1:
        acc = "(regs[0] & 0xff)" if size == 1 else f"(regs[{RAX}] & {m:#x})"
        return b.compile(f"""
p = {signed(acc)} * {signed(b.get(0))}
lo = p & {m:#x}
{_store_pair(size, "lo", f"(p >> {w}) & {m:#x}")}
{_flags_src(f"0 if p == {signed('lo')} else {CF_OF}", "lo", w)}
{b.next}
""")
    # IMUL r, r/m (0F AF) and IMUL r, r/m, imm (69, 6B): truncated to the destination.
    src2, src3 = (b.get(0), b.get(1)) if ops == 2 else (b.get(1), b.get(2))
    return b.compile(f"""
p = {signed(src2)} * {signed(src3)}
lo = p & {m:#x}
{b.set(0, "lo")}
{_flags_src(f"0 if p == {signed('lo')} else {CF_OF}", "lo", w)}
{b.next}
""")


@semantic(Mnemonic.DIV)
def build_div(b: Insn) -> Handler:
    size = b.size(0)
    w = size * 8
    m = (1 << w) - 1
    return b.compile(f"""
d = {b.get(0)}
if not d:
    raise CpuFault({DE})
q, r = divmod({_dividend(size)}, d)
if q > {m:#x}:
    raise CpuFault({DE})
{_store_pair(size, "q", "r")}
{b.next}
""")


@semantic(Mnemonic.IDIV)
def build_idiv(b: Insn) -> Handler:
    size = b.size(0)
    w = size * 8
    m = (1 << w) - 1
    sign = 1 << (w - 1)
    dsign = 1 << (2 * w - 1)
    low = -(sign - 1) if b.cpu.is_8086 else -sign
    negate = b.cpu.is_8086 and b.rep != 0  # 8086 microcode: REP flips the quotient's sign
    return b.compile(f"""
d = ({b.get(0)} ^ {sign:#x}) - {sign:#x}
if not d:
    raise CpuFault({DE})
n = (({_dividend(size)}) ^ {dsign:#x}) - {dsign:#x}
q = abs(n) // abs(d)
if (n < 0) != (d < 0):
    q = -q
r = n - q * d
{"q = -q" if negate else ""}
if q > {sign - 1:#x} or q < {low}:
    raise CpuFault({DE})
{_store_pair(size, f"q & {m:#x}", f"r & {m:#x}")}
{b.next}
""")
