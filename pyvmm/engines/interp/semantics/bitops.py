"""Bit instructions: BT BTS BTR BTC, BSF BSR, and POPCNT LZCNT TZCNT when CPUID has them.

Hardware facts relied on (Intel SDM Vol. 2A "BSF", "BSR", "BT", "BTC", "BTR", "BTS",
"LZCNT", "POPCNT", "TZCNT"; Vol. 1 §7.3.7):

- BT* copy the selected bit to CF (then set/clear/complement it); ZF is unchanged and
  OF/SF/AF/PF are undefined (left unchanged here).  An immediate bit offset, or any
  offset into a register, is taken modulo the operand width.
- With a memory operand and a *register* offset, the offset is a signed integer that
  can reach outside the addressed word: the operand used is the one at
  ea + (offset >> log2(width)) * (width / 8), bit (offset mod width).
- BSF/BSR with a zero source set ZF and leave the destination unchanged (what
  Intel and AMD processors do; the SDM calls it undefined); otherwise ZF = 0 and the
  destination gets the index of the lowest/highest set bit.  CF/OF/SF/AF/PF undefined:
  left unchanged.
- POPCNT: ZF = (source == 0), the other five status flags cleared.  LZCNT/TZCNT:
  CF = (source == 0), ZF = (result == 0), the rest undefined (unchanged).  Without the
  CPUID feature, F3 0F BD/BC execute as BSR/BSF (the F3 prefix is ignored) and POPCNT
  is #UD; the interpreter's CPUID decides (pyvmm.cpu.cpuid).
- All of these are 80386+ instructions: #UD on the 8086/80286 models.
"""

from __future__ import annotations

from iced_x86 import Mnemonic

from pyvmm.engines.interp.builder import Handler, Insn
from pyvmm.engines.interp.semantics import semantic
from pyvmm.engines.interp.semantics.shift import CLEAR_STATUS

CF, ZF = 0x01, 0x40  # RFLAGS bits (SDM Vol. 1 §3.4.3.1)
_FLAGS = "f = cpu.flags if not cpu.lf_op else fl.materialize(cpu)"

# CPUID feature bits that gate the optional instructions (SDM Vol. 2A, CPUID).
_POPCNT = (1, 2, 23)  # leaf 1, ECX (register index 2), bit 23
_LZCNT = (0x80000001, 2, 5)  # leaf 0x80000001 ECX bit 5 (ABM / LZCNT)
_BMI1 = (7, 1, 3)  # leaf 7 EBX bit 3 (BMI1: TZCNT)
_features: dict[tuple[int, int, int], bool] = {}


def has_feature(feature: tuple[int, int, int]) -> bool:
    """Whether the interpreter's CPUID table reports `feature` (leaf, register, bit)."""
    if feature not in _features:
        from pyvmm.cpu.cpuid import cpuid_lookup, interpreter_cpuid_table
        leaf, reg, bit = feature
        table = interpreter_cpuid_table()
        max_leaf = cpuid_lookup(table, leaf & 0x80000000)[0]
        present = leaf <= max_leaf and bool(cpuid_lookup(table, leaf)[reg] >> bit & 1)
        _features[feature] = present
    return _features[feature]


_BT_UPDATE = {
    Mnemonic.BT: None,
    Mnemonic.BTS: "v | (1 << bit)",
    Mnemonic.BTR: "v & ~(1 << bit)",
    Mnemonic.BTC: "v ^ (1 << bit)",
}


@semantic(Mnemonic.BT, Mnemonic.BTS, Mnemonic.BTR, Mnemonic.BTC)
def build_bt(b: Insn) -> Handler:
    if b.cpu.legacy:
        return b.compile("raise faults.ud()")
    size = b.size(0)
    w = size * 8
    update = _BT_UPDATE[b.mnemonic]
    flags = f"{_FLAGS}\ncpu.flags = (f & -2) | ((v >> bit) & 1)"
    if b.is_imm(1):
        bit = b.imm(1, 1) & (w - 1)
        head = f"bit = {b.const(bit)}\nv = {b.get(0)}"
        store = b.set(0, update) if update else ""
    elif b.is_reg(0):
        head = f"bit = {b.get(1)} & {w - 1}\nv = {b.get(0)}"
        store = b.set(0, update) if update else ""
    else:
        # Register offset into memory: signed offset selects the operand (bit string).
        sign = 1 << (w - 1)
        seg = b.seg()
        head = (f"o = ({b.get(1)} ^ {sign:#x}) - {sign:#x}\n"
                f"a = (({b.ea()}) + ((o >> {w.bit_length() - 1}) * {size})) & {b.addr_mask:#x}\n"
                f"bit = o & {w - 1}\n"
                f"v = {'cpu.read_rmw' if update else 'read'}({seg}, a, {size})")
        store = f"write({seg}, a, {size}, {update})" if update else ""
    return b.compile("\n".join(x for x in (head, store, flags, b.next) if x))


def _scan(b: Insn, forward: bool) -> Handler:
    """BSF (forward) / BSR: index of the lowest / highest set bit."""
    index = "(s & -s).bit_length() - 1" if forward else "s.bit_length() - 1"
    return b.compile(f"""
s = {b.get(1)}
{_FLAGS}
if s:
    {b.set(0, index)}
    cpu.flags = f & {~ZF}
else:
    cpu.flags = f | {ZF}
{b.next}
""")


@semantic(Mnemonic.BSF)
def build_bsf(b: Insn) -> Handler:
    if b.cpu.legacy:
        return b.compile("raise faults.ud()")
    return _scan(b, True)


@semantic(Mnemonic.BSR)
def build_bsr(b: Insn) -> Handler:
    if b.cpu.legacy:
        return b.compile("raise faults.ud()")
    return _scan(b, False)


@semantic(Mnemonic.POPCNT)
def build_popcnt(b: Insn) -> Handler:
    if b.cpu.legacy or not has_feature(_POPCNT):
        return b.compile("raise faults.ud()")
    return b.compile(f"""
s = {b.get(1)}
{b.set(0, "s.bit_count()")}
cpu.flags = (cpu.flags & {CLEAR_STATUS}) | (0 if s else {ZF})
cpu.lf_op = 0
{b.next}
""")


def _count(b: Insn, leading: bool) -> Handler:
    w = b.size(0) * 8
    count = f"{w} - s.bit_length()" if leading else f"((s & -s).bit_length() - 1) if s else {w}"
    return b.compile(f"""
s = {b.get(1)}
r = {count}
{b.set(0, "r")}
{_FLAGS}
cpu.flags = (f & {~(CF | ZF)}) | (0 if s else {CF}) | (0 if r else {ZF})
{b.next}
""")


@semantic(Mnemonic.LZCNT)
def build_lzcnt(b: Insn) -> Handler:
    if b.cpu.legacy:
        return b.compile("raise faults.ud()")
    if not has_feature(_LZCNT):
        return _scan(b, False)  # F3 0F BD without LZCNT is BSR
    return _count(b, True)


@semantic(Mnemonic.TZCNT)
def build_tzcnt(b: Insn) -> Handler:
    if b.cpu.legacy:
        return b.compile("raise faults.ud()")
    if not has_feature(_BMI1):
        return _scan(b, True)  # F3 0F BC without BMI1 is BSF
    return _count(b, False)
