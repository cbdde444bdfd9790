"""Shifts and rotates: ROL ROR RCL RCR SHL SAL SHR SAR SHLD SHRD.

Hardware facts relied on (Intel SDM Vol. 2B, "RCL/RCR/ROL/ROR", "SAL/SAR/SHL/SHR",
"SHLD", "SHRD"; 8086/80286 behaviour from the SingleStepTests recordings):

- The count is masked to 5 bits (6 for 64-bit operands) on the 80286 and later; the
  8086 uses all 8 bits of CL (its microcode simply loops CL times).
- A (masked) count of 0 changes nothing, not even the flags.
- Shifts set SF/ZF/PF from the result, CF to the last bit shifted out; OF is defined
  only for a count of 1 (SHL: MSB(result) ^ CF, SHR: MSB(original), SAR: 0).  For other
  counts we give the value of the last step of the microcode loop, which is what the
  iterative 8086/80286 implementations leave.  AF is undefined.
- Rotates change only CF and OF.  RCL/RCR rotate through CF over W+1 bits, so the
  effective count is count mod 9 / mod 17 for 8/16-bit operands.  A nonzero masked
  count whose effective rotation is 0 (ROL/ROR of an 8/16-bit operand by a multiple of
  8/16, RCL/RCR by a multiple of 9/17) leaves OF as it was on the 80386 and later
  (measured on the host CPU, an Intel family 6; OF is "undefined" there per the SDM);
  ROL/ROR still set CF from the result.  The 8086/80286 models keep OF from the last
  step of their microcode loop (the recordings of those chips).
- 8086 only: D0-D3 /6 is not SAL but the undocumented SETMO/SETMOC, which stores all
  ones (SETMOC only when CL != 0) and sets flags as a logical operation would.
- SHLD/SHRD (80386+): CF = last bit shifted out of the destination, OF (count 1) =
  sign change; a 16-bit operand with count > 16 shifts the 48-bit pattern
  dest:src:dest, which is what Intel processors do (result "undefined" per the SDM).
"""

from __future__ import annotations

from iced_x86 import Mnemonic, OpKind

from pyvmm.engines.interp.builder import Handler, Insn
from pyvmm.engines.interp.semantics import semantic

# RFLAGS masks, written as the negative literals the compiled bodies use.
CLEAR_STATUS = -2262  # ~(CF|PF|AF|ZF|SF|OF): all six status flags (SDM Vol. 1 §3.4.3.1)
CLEAR_CF_OF = -2050  # ~(CF|OF): the only flags a rotate writes
RCX = 1  # CL holds a variable shift count (SDM Vol. 2B "SAL/SAR/SHL/SHR")


def szp_src(r: str, bits: int) -> str:
    """Source for SF|ZF|PF of the masked result `r` of a `bits`-bit operation."""
    sf = f"({r} & 128)" if bits == 8 else f"(({r} >> {bits - 8}) & 128)"
    return f"{sf} | (({r} == 0) << 6) | PARITY[{r} & 255]"


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.strip("\n").splitlines())


# Bodies run with `n` = the (masked, nonzero) count, `v` = the destination's value;
# they leave the result in `r`.  W = operand width in bits, M = its mask.
def _shl(w: int, m: int) -> str:
    return f"""
r = v << n
cf = (r >> {w}) & 1
r &= {m:#x}
SET
cpu.flags = ((cpu.flags & {CLEAR_STATUS}) | cf | {szp_src("r", w)}
             | ((((r >> {w - 1}) ^ cf) & 1) << 11))
cpu.lf_op = 0
"""


def _shr(w: int, m: int) -> str:
    return f"""
t = v >> (n - 1)
r = t >> 1
SET
cpu.flags = ((cpu.flags & {CLEAR_STATUS}) | (t & 1) | {szp_src("r", w)}
             | (((t >> {w - 1}) & 1) << 11))
cpu.lf_op = 0
"""


def _sar(w: int, m: int) -> str:
    sign = 1 << (w - 1)
    return f"""
t = ((v ^ {sign:#x}) - {sign:#x}) >> (n - 1)
r = (t >> 1) & {m:#x}
SET
cpu.flags = (cpu.flags & {CLEAR_STATUS}) | (t & 1) | {szp_src("r", w)}
cpu.lf_op = 0
"""


def _of(expr: str, keep: bool) -> str:
    """OF from `expr`, or (`keep`: 80386+) the old OF when the rotation `c` is 0."""
    return f"({expr} if c else f & 2048)" if keep else expr


def _rol(w: int, m: int, keep: bool) -> str:
    return f"""
c = n & {w - 1}
r = ((v << c) | (v >> ({w} - c))) & {m:#x}
SET
cf = r & 1
f = cpu.flags if not cpu.lf_op else fl.materialize(cpu)
cpu.flags = (f & {CLEAR_CF_OF}) | cf | {_of(f"((((r >> {w - 1}) ^ cf) & 1) << 11)", keep)}
"""


def _ror(w: int, m: int, keep: bool) -> str:
    return f"""
c = n & {w - 1}
r = ((v >> c) | (v << ({w} - c))) & {m:#x}
SET
cf = r >> {w - 1}
f = cpu.flags if not cpu.lf_op else fl.materialize(cpu)
cpu.flags = (f & {CLEAR_CF_OF}) | cf | {_of(f"(((cf ^ (r >> {w - 2})) & 1) << 11)", keep)}
"""


def _rcl(w: int, m: int, keep: bool) -> str:
    return f"""
c = n % {w + 1}
f = cpu.flags if not cpu.lf_op else fl.materialize(cpu)
x = ((f & 1) << {w}) | v
x = ((x << c) | (x >> ({w + 1} - c))) & {(1 << (w + 1)) - 1:#x}
r = x & {m:#x}
SET
cf = x >> {w}
cpu.flags = (f & {CLEAR_CF_OF}) | cf | {_of(f"((((r >> {w - 1}) ^ cf) & 1) << 11)", keep)}
"""


def _rcr(w: int, m: int, keep: bool) -> str:
    return f"""
c = n % {w + 1}
f = cpu.flags if not cpu.lf_op else fl.materialize(cpu)
x = ((f & 1) << {w}) | v
x = ((x >> c) | (x << ({w + 1} - c))) & {(1 << (w + 1)) - 1:#x}
r = x & {m:#x}
SET
cpu.flags = ((f & {CLEAR_CF_OF}) | (x >> {w})
             | {_of(f"((((r >> {w - 1}) ^ (r >> {w - 2})) & 1) << 11)", keep)})
"""


def _setmo(w: int, m: int) -> str:
    """8086 SETMO/SETMOC: all ones, flags as OR with all ones (CF=OF=AF=0, SF=PF=1)."""
    return f"""
r = {m:#x}
SET
cpu.flags = (cpu.flags & {CLEAR_STATUS}) | 132
cpu.lf_op = 0
"""


_BODIES = {
    Mnemonic.SHL: _shl, Mnemonic.SAL: _shl, Mnemonic.SHR: _shr, Mnemonic.SAR: _sar,
    Mnemonic.ROL: _rol, Mnemonic.ROR: _ror, Mnemonic.RCL: _rcl, Mnemonic.RCR: _rcr,
}


_ROTATES = frozenset({Mnemonic.ROL, Mnemonic.ROR, Mnemonic.RCL, Mnemonic.RCR})


def _count_zero(b: Insn) -> Handler:
    """Masked count 0: no flags change, but a memory operand is still read (it can fault)
    and a 32-bit register destination is still written, i.e. zero-extended to 64 bits."""
    if b.is_mem(0):
        return b.compile(f"{b.get(0)}\n{b.next}")
    if b.size(0) == 4:
        return b.compile(f"{b.set(0, b.get(0))}\n{b.next}")
    return b.compile(b.next)


def _zero_else(b: Insn) -> str:
    """`else:` branch for a CL count of 0 (see _count_zero)."""
    if b.is_reg(0) and b.size(0) == 4:
        return f"else:\n    {b.set(0, 'v')}\n"
    return ""


def _count_mask(b: Insn) -> int:
    """80286+: 5-bit count (6 for 64-bit operands); 8086: CL used whole."""
    if b.cpu.is_8086:
        return 0xFF
    return 0x3F if b.size(0) == 8 else 0x1F


@semantic(Mnemonic.SHL, Mnemonic.SAL, Mnemonic.SHR, Mnemonic.SAR,
          Mnemonic.ROL, Mnemonic.ROR, Mnemonic.RCL, Mnemonic.RCR)
def build_shift(b: Insn) -> Handler:
    size = b.size(0)
    w = size * 8
    m = (1 << w) - 1
    make = _BODIES[b.mnemonic]
    if b.mnemonic == Mnemonic.SAL and b.cpu.is_8086:
        make = _setmo
    cmask = _count_mask(b)
    from_cl = b.kind(1) == OpKind.REGISTER
    if from_cl:
        count = None
    else:
        count = b.imm(1, 1) & cmask
        if count == 0:
            return _count_zero(b)
    # Read the destination first: a memory operand faults even when the count is 0.
    read = f"v = {b.get(0)}"
    if b.mnemonic in _ROTATES:  # only 8/16-bit operands have counts that rotate by 0
        body = make(w, m, not b.cpu.legacy and w <= 16)
    else:
        body = make(w, m)
    body = body.replace("SET", b.set(0, "r")).strip()
    if from_cl:
        text = (f"{read}\nn = regs[{RCX}] & {cmask:#x}\nif n:\n{_indent(body)}\n"
                f"{_zero_else(b)}{b.next}")
    else:
        text = f"{read}\nn = {b.const(count)}\n{body}\n{b.next}"
    return b.compile(text)


def _shld(w: int, m: int) -> str:
    if w == 16:  # counts 17..31 shift the pattern dest:src:dest
        return """
x = (((v << 16) | s) << 16 | v) << n
r = (x >> 32) & 0xffff
cf = (x >> 48) & 1
"""
    return f"""
x = ((v << {w}) | s) << n
r = (x >> {w}) & {m:#x}
cf = (x >> {2 * w}) & 1
"""


def _shrd(w: int, m: int) -> str:
    if w == 16:
        return """
x = (((v << 16) | s) << 16 | v) >> (n - 1)
cf = x & 1
r = (x >> 1) & 0xffff
"""
    return f"""
x = ((s << {w}) | v) >> (n - 1)
cf = x & 1
r = (x >> 1) & {m:#x}
"""


@semantic(Mnemonic.SHLD, Mnemonic.SHRD)
def build_double_shift(b: Insn) -> Handler:
    """SHLD/SHRD r/m, r, imm8|CL (SDM Vol. 2B): 80386 and later only."""
    if b.cpu.legacy:
        return b.compile("raise faults.ud()")
    size = b.size(0)
    w = size * 8
    m = (1 << w) - 1
    cmask = 0x3F if size == 8 else 0x1F
    from_cl = b.kind(2) == OpKind.REGISTER
    if not from_cl:
        count = b.imm(2, 1) & cmask
        if count == 0:
            return _count_zero(b)
    make = _shld if b.mnemonic == Mnemonic.SHLD else _shrd
    read = f"v = {b.get(0)}"
    body = f"""
s = {b.get(1)}
{make(w, m).strip()}
{b.set(0, "r")}
cpu.flags = ((cpu.flags & {CLEAR_STATUS}) | cf | {szp_src("r", w)}
             | ((((r ^ v) >> {w - 1}) & 1) << 11))
cpu.lf_op = 0
"""
    if from_cl:
        text = (f"{read}\nn = regs[{RCX}] & {cmask:#x}\nif n:\n{_indent(body)}\n"
                f"{_zero_else(b)}{b.next}")
    else:
        text = f"{read}\nn = {b.const(count)}\n{body.strip()}\n{b.next}"
    return b.compile(text)
