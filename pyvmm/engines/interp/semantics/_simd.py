"""Shared pieces of the MMX/SSE/SSE2 groups: state checks, vector operands, lanes.

Not a group module itself (the leading underscore keeps `load_groups` from
importing it as one).  Builders in sse_int.py, sse_move.py and sse_fp.py use
these helpers to write their handler bodies.

Facts used (Intel SDM):
- Vol. 3A §2.5 (Table 2-2) / Vol. 1 §11.6.2: an SSE/SSE2 instruction raises
  #UD when CR0.EM=1 or CR4.OSFXSR=0, then #NM when CR0.TS=1.
- Vol. 1 §9.5 / Vol. 3A Table 2-2: an MMX instruction (also the SSE integer
  instructions on MM registers) raises #UD when CR0.EM=1 and #NM when CR0.TS=1.
- Vol. 1 §11.4.1 / each instruction's "Protected Mode Exceptions": a legacy
  (non-VEX) SSE/SSE2 instruction with a 128-bit memory operand raises #GP(0)
  when that operand is not 16-byte aligned, except MOVUPS, MOVUPD, MOVDQU and
  MASKMOVDQU.
- Vol. 2 "CPUID": instructions whose CPUID feature is not MMX, SSE, SSE2 (or
  CLFSH) are not implemented, so they stay #UD like on a CPU without them.
"""

from __future__ import annotations

from iced_x86 import CpuidFeature, OpKind, Register

from pyvmm.cpu.state import CR0_EM, CR0_TS, CR4_OSFXSR
from pyvmm.engines.interp.builder import GPR, Insn
from pyvmm.engines.interp.faults import GP, NM, UD, CpuFault

XMM0, XMM15 = Register.XMM0, Register.XMM15
MM0, MM7 = Register.MM0, Register.MM7

# ISA features this CPU implements for these groups (advertised in CPUID leaf 1 EDX).
IMPLEMENTED_FEATURES = frozenset({CpuidFeature.MMX, CpuidFeature.SSE, CpuidFeature.SSE2,
                                  CpuidFeature.CLFSH, CpuidFeature.X64, CpuidFeature.INTEL386})


def require_features(b: Insn) -> None:
    """NotImplementedError (-> #UD) for encodings of a later extension (SSE4.1 PEXTRW m16...)."""
    if not set(b.ins.cpuid_features()) <= IMPLEMENTED_FEATURES:
        raise NotImplementedError


def sse_check(cpu) -> None:  # noqa: ANN001
    """#UD if CR0.EM=1 or CR4.OSFXSR=0; #NM if CR0.TS=1 (SDM Vol. 3A §2.5, Table 2-2)."""
    if cpu.cr0 & CR0_EM or not cpu.cr4 & CR4_OSFXSR:
        raise CpuFault(UD)
    if cpu.cr0 & CR0_TS:
        raise CpuFault(NM)


def mmx_check(cpu) -> None:  # noqa: ANN001
    """#UD if CR0.EM=1; #NM if CR0.TS=1 (SDM Vol. 3A Table 2-2, MMX row)."""
    if cpu.cr0 & CR0_EM:
        raise CpuFault(UD)
    if cpu.cr0 & CR0_TS:
        raise CpuFault(NM)


def both_check(cpu) -> None:  # noqa: ANN001
    """MOVQ2DQ/MOVDQ2Q touch both register files: the SSE conditions apply."""
    sse_check(cpu)


def _range_fault(cpu, seg: int) -> CpuFault:  # noqa: ANN001
    return cpu.canonical_fault(seg)


def read128(cpu, seg: int, off: int, aligned: bool, mask: int) -> int:  # noqa: ANN001
    """A 16-byte load at seg:off (two 8-byte halves; one operand for limit checks)."""
    if aligned and (cpu.seg_base[seg] + off) & 15:
        raise CpuFault(GP, 0)
    if off > mask - 15:
        raise _range_fault(cpu, seg)
    lo = cpu.read(seg, off, 8)
    return lo | cpu.read(seg, off + 8, 8) << 64


def write128(cpu, seg: int, off: int, value: int, aligned: bool, mask: int) -> None:  # noqa: ANN001
    """A 16-byte store: both halves are checked for writing before either is written."""
    if aligned and (cpu.seg_base[seg] + off) & 15:
        raise CpuFault(GP, 0)
    if off > mask - 15:
        raise _range_fault(cpu, seg)
    if (cpu.seg_base[seg] + off) & 0xFFF > 0xFF0:  # crosses a page: probe both first
        cpu.read_rmw(seg, off, 8)
        cpu.read_rmw(seg, off + 8, 8)
    cpu.write(seg, off, 8, value & 0xFFFFFFFFFFFFFFFF)
    cpu.write(seg, off + 8, 8, value >> 64)


def reg_kind(b: Insn, i: int) -> str:
    """'xmm', 'mm', 'gpr', 'mem' or 'imm' for operand i."""
    kind = b.kind(i)
    if kind == OpKind.REGISTER:
        reg = b.ins.op_register(i)
        if XMM0 <= reg <= XMM15:
            return "xmm"
        if MM0 <= reg <= MM7:
            return "mm"
        if reg in GPR:
            return "gpr"
        raise NotImplementedError
    if kind == OpKind.MEMORY:
        return "mem"
    if b.is_imm(i):
        return "imm"
    raise NotImplementedError


def uses_mmx(b: Insn) -> bool:
    return any(reg_kind(b, i) == "mm" for i in range(b.ins.op_count)
               if b.kind(i) == OpKind.REGISTER)


def uses_xmm(b: Insn) -> bool:
    return any(reg_kind(b, i) == "xmm" for i in range(b.ins.op_count)
               if b.kind(i) == OpKind.REGISTER)


def width_of(b: Insn, i: int) -> int:
    """Bits of the vector register operand i (MMX 64, XMM 128)."""
    return 128 if reg_kind(b, i) == "xmm" else 64


class Body:
    """Source of one handler under construction: a check, then statements."""

    def __init__(self, b: Insn, check: object) -> None:
        self.b = b
        self.lines = [f"{b.const(check)}(cpu)"]
        self._ea = False

    def _mem(self) -> None:
        if not self._ea:
            # The effective address is computed after the state checks (faults in order).
            self.lines.append(f"ea = {self.b.ea()}")
            self._ea = True

    def get(self, i: int, aligned: bool = True) -> str:
        """Expression reading operand i as an unsigned int of its full width."""
        b = self.b
        kind = reg_kind(b, i)
        if kind == "xmm":
            return f"cpu.xmm[{b.ins.op_register(i) - XMM0}]"
        if kind == "mm":
            return f"cpu.fpu.mmx_read({b.ins.op_register(i) - MM0})"
        if kind == "gpr":
            return b.get(i)
        if kind == "imm":
            return b.const(b.ins.immediate(i) & 0xFF)
        self._mem()
        size = b.size(i)
        if size == 16:
            return (f"{b.const(read128)}(cpu, {b.seg()}, ea, {b.const(aligned)}, "
                    f"{b.const(b.addr_mask)})")
        return f"read({b.seg()}, ea, {size})"

    def put(self, i: int, expr: str, aligned: bool = True) -> str:
        """Statement writing `expr` to operand i (its full width; GPRs as `b.set`)."""
        b = self.b
        kind = reg_kind(b, i)
        if kind == "xmm":
            return f"cpu.xmm[{b.ins.op_register(i) - XMM0}] = {expr}"
        if kind == "mm":
            return f"cpu.fpu.mmx_write({b.ins.op_register(i) - MM0}, {expr})"
        if kind == "gpr":
            return b.set(i, expr)
        self._mem()
        size = b.size(i)
        if size == 16:
            return (f"{b.const(write128)}(cpu, {b.seg()}, ea, {expr}, {b.const(aligned)}, "
                    f"{b.const(b.addr_mask)})")
        return f"write({b.seg()}, ea, {size}, {expr})"

    def add(self, *lines: str) -> Body:
        self.lines.extend(lines)
        return self

    def compile(self):  # noqa: ANN201
        self.lines.append(self.b.next)
        return self.b.compile("\n".join(self.lines))


def check_for(b: Insn) -> object:
    """The state check an instruction needs: MMX registers -> MMX rules, else SSE rules."""
    if uses_mmx(b):
        return both_check if uses_xmm(b) else mmx_check
    return sse_check


# -- lanes -----------------------------------------------------------------

def split(value: int, bits: int, count: int) -> list[int]:
    mask = (1 << bits) - 1
    return [(value >> (bits * k)) & mask for k in range(count)]


def join(lanes: list[int], bits: int) -> int:
    mask = (1 << bits) - 1
    result = 0
    for k, lane in enumerate(lanes):
        result |= (lane & mask) << (bits * k)
    return result


def signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value >> (bits - 1) & 1 else value


def sat_signed(value: int, bits: int) -> int:
    hi = (1 << (bits - 1)) - 1
    lo = -hi - 1
    return hi if value > hi else (lo if value < lo else value)


def sat_unsigned(value: int, bits: int) -> int:
    hi = (1 << bits) - 1
    return hi if value > hi else (0 if value < 0 else value)
