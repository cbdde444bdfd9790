"""String instructions: MOVS CMPS SCAS LODS STOS INS OUTS, with REP/REPE/REPNE.

Hardware facts relied on (Intel SDM Vol. 2B "MOVS", "CMPS", "SCAS", "LODS", "STOS",
"INS", "OUTS", "REP/REPE/REPZ/REPNE/REPNZ"; Vol. 1 §7.3.9):

- The source is seg:(E/R)SI, seg = DS unless overridden; the destination is always
  ES:(E/R)DI (no override; ES base is 0 in 64-bit mode).  The *address size* picks SI,
  ESI or RSI (and CX/ECX/RCX as the count); a 32-bit index/count write zero-extends.
- After each element the index registers step by +size, or -size when DF = 1.
- REP repeats while the count is nonzero, decrementing it after each element; REPE /
  REPNE on CMPS and SCAS also stop when ZF = 0 / ZF = 1 after the comparison.  F2 on
  MOVS/LODS/STOS/INS/OUTS acts as plain REP.  A zero count does nothing (no flags).
- CMPS sets flags as for SUB [src] - [dest]; SCAS as for SUB acc - [dest].
- A fault in a later iteration leaves the registers as the completed iterations left
  them and IP at the instruction, so it restarts where it stopped.  A REPE/REPNE compare
  that faults, on any iteration, leaves EFLAGS as they were before the instruction (Vol.
  2B "REP": "the EFLAGS value is restored to the state prior to the execution of the
  instruction"): its flags are set only when the repetition ends.  Measured on the host
  CPU (Intel family 6 model 167) for #PF (32/64-bit) and #GP at a 16-bit segment limit,
  after 0 to 15 completed iterations (tests/differential/test_fixed_cases_vs_cpu.py).
- A repeated string instruction is interruptible between iterations (Vol. 1
  §7.3.9.2; Vol. 2B "REP": "the processor ... recognize[s] interrupts ... at
  iteration boundaries", IP left at the instruction).  Here one execution does
  at most REP_CHUNK element steps, then ends the batch with IP at the
  instruction, so the run loop looks at interrupts, stops and --timeout
  within a bounded amount of host work, however large the count.
"""

from __future__ import annotations

from iced_x86 import Code, Mnemonic

from pyvmm.engines.interp.builder import Handler, Insn
from pyvmm.engines.interp.semantics import semantic, semantic_code
from pyvmm.engines.interp.signals import END_BATCH

RAX, RCX, RDX, RSI, RDI = 0, 1, 2, 6, 7  # implicit GPR operands
REP_CHUNK = 16384  # element steps per execution before the run loop looks around
DF = 0x400  # RFLAGS direction flag (SDM Vol. 1 §3.4.3.2)
ES = 0  # destination segment index (ES:DI)

# What each operation does with one element: (uses SI, uses DI, body).  The body sees
# si/di (offsets) and leaves compare operands in x/y; {s} = size, {seg} = source segment.
_ELEMENT = {
    "movs": (True, True, "write(0, di, {s}, read({seg}, si, {s}))"),
    "cmps": (True, True, "x = read({seg}, si, {s})\ny = read(0, di, {s})"),
    "scas": (False, True, "x = {acc}\ny = read(0, di, {s})"),
    "lods": (True, False, "{load}"),
    "stos": (False, True, "write(0, di, {s}, {acc})"),
    "ins": (False, True, "write(0, di, {s}, cpu.port_in(regs[2] & 0xffff, {s}))"),
    "outs": (True, False, "cpu.port_out(regs[2] & 0xffff, {s}, read({seg}, si, {s}))"),
}
# 80286 microcode: each index register steps *before* its access is made, so an access
# that faults (#GP at offset 0xFFFF) leaves that register already advanced; CMPS
# reads ES:DI before DS:SI.  This is what the recorded 80286 registers show.
_SI = "o = si\nsi = (si + d) & {am}\n"
_DI = "o = di\ndi = (di + d) & {am}\n"
_ELEMENT_286 = {
    "movs": _SI + "t = read({seg}, o, {s})\n" + _DI + "write(0, o, {s}, t)",
    "cmps": _DI + "y = read(0, o, {s})\n" + _SI + "x = read({seg}, o, {s})",
    "scas": _DI + "y = read(0, o, {s})\nx = {acc}",
    "lods": _SI + "{load}",
    "stos": _DI + "write(0, o, {s}, {acc})",
    "ins": _DI + "write(0, o, {s}, cpu.port_in(regs[2] & 0xffff, {s}))",
    "outs": _SI + "cpu.port_out(regs[2] & 0xffff, {s}, read({seg}, o, {s}))",
}
# Where the 80286 steps the count within a REP iteration (recorded: a REP OUTSW whose read
# faults has CX already decremented; a REPNE CMPSW whose first read faults leaves CX as it
# was): before the element for the transfers, after both reads for the compares.  REP MOVS
# overlaps its store with the next iteration: a store that raises interrupt 13 surfaces
# after the next element's count step (recorded: REPNE MOVSW, CX=5, DF=1, DI=0FFFFH ends
# with CX=3), so the count is stepped once more when elements remain.
_REP_286 = {
    "movs": "c -= 1\n" + _SI + "t = read({seg}, o, {s})\n" + _DI
            + "try:\n    write(0, o, {s}, t)\nexcept CpuFault:\n    if c:\n        c -= 1\n"
            + "    raise",
    "cmps": _ELEMENT_286["cmps"] + "\nc -= 1",
    "scas": _ELEMENT_286["scas"] + "\nc -= 1",
}
_COMPARES = frozenset({"cmps", "scas"})


def _acc_get(size: int) -> str:
    return "regs[0]" if size == 8 else f"(regs[0] & {(1 << (size * 8)) - 1:#x})"


def _acc_set(size: int, expr: str) -> str:
    if size >= 4:  # a 32-bit write zero-extends to 64
        return f"regs[0] = {expr}"
    keep = -65536 if size == 2 else -256
    return f"regs[0] = (regs[0] & {keep}) | {expr}"


def _reg_store(index: int, value: str, addr_size: int) -> str:
    """Write an address-sized index/count register (16-bit writes keep the upper bits)."""
    if addr_size == 2:
        return f"regs[{index}] = (regs[{index}] & -65536) | {value}"
    return f"regs[{index}] = {value}"


def _indent(text: str, n: int = 1) -> str:
    return "\n".join("    " * n + line for line in text.strip("\n").splitlines() if line)


def stos_bulk(cpu, di: int, count: int, size: int, value: int, am: int) -> int:  # noqa: ANN001
    """Store up to `count` elements at ES:DI (DF = 0) straight into a RAM page.

    Only where a single element store would take the Cpu's own fast path: inside the ES
    limit and on a page the current privilege may write that holds no decoded code (the
    Cpu keeps such pages out of `cpu.wr`).  Stops at the page end; returns elements done
    (0: let the caller store one element the ordinary way).
    """
    if di < cpu.seg_lo[0]:
        return 0
    lin = (cpu.seg_base[0] + di) & cpu.lin_mask
    page = cpu.wr.get(lin >> 12)
    if page is None:
        return 0
    o = lin & 0xFFF
    n = min(count, (4096 - o) // size, (min(cpu.seg_whi[0], am) - di + 1) // size)
    if n <= 0:
        return 0
    a = page | o
    cpu.ram[a:a + n * size] = value.to_bytes(size, "little") * n
    return n


def movs_bulk(cpu, seg: int, si: int, di: int, count: int, size: int, am: int) -> int:  # noqa: ANN001
    """Copy up to `count` elements seg:SI -> ES:DI (DF = 0) RAM page to RAM page.

    Same conditions as stos_bulk on both sides; a destination that starts inside the
    chunk just read is cut short, so the result equals the element-by-element copy.
    """
    if di < cpu.seg_lo[0] or si < cpu.seg_lo[seg]:
        return 0
    dlin = (cpu.seg_base[0] + di) & cpu.lin_mask
    slin = (cpu.seg_base[seg] + si) & cpu.lin_mask
    dpage = cpu.wr.get(dlin >> 12)
    spage = cpu.rd.get(slin >> 12)
    if dpage is None or spage is None:
        return 0
    do = dlin & 0xFFF
    so = slin & 0xFFF
    n = min(count, (4096 - do) // size, (4096 - so) // size,
            (min(cpu.seg_whi[0], am) - di + 1) // size, (min(cpu.seg_hi[seg], am) - si + 1) // size)
    d = dpage | do
    src = spage | so
    if 0 < d - src < n * size:
        n = (d - src) // size
    if n <= 0:
        return 0
    ram = cpu.ram
    ram[d:d + n * size] = ram[src:src + n * size]
    return n


def build_string(b: Insn, op: str) -> Handler:
    size = b.size(1) if op in ("lods", "outs") else b.size(0)
    uses_src, uses_dst, element = _ELEMENT[op]
    am = b.addr_mask
    a = b.addr_size
    seg = b.seg()
    late = b.cpu.is_286
    if late:
        element = _REP_286.get(op, "c -= 1\n" + _ELEMENT_286[op]) if b.rep else _ELEMENT_286[op]
    element = element.format(s=size, seg=seg, acc=_acc_get(size), am=f"{am:#x}",
                             load=_acc_set(size, f"read({seg}, {'o' if late else 'si'}, {size})"))
    steps = []
    loads = []
    stores = []
    if uses_src:
        steps.append(f"si = (si + d) & {am:#x}")
        loads.append(f"si = regs[{RSI}] & {am:#x}")
        stores.append(_reg_store(RSI, "si", a))
    if uses_dst:
        steps.append(f"di = (di + d) & {am:#x}")
        loads.append(f"di = regs[{RDI}] & {am:#x}")
        stores.append(_reg_store(RDI, "di", a))
    if late:
        steps = []  # done inside the element
    compare = op in _COMPARES
    flags = (f"cpu.lf_op = LF_SUB\ncpu.lf_a = x\ncpu.lf_b = y\ncpu.lf_r = x - y\n"
             f"cpu.lf_size = {size}") if compare else ""
    direction = f"d = -{size} if cpu.flags & {DF} else {size}"
    if not b.rep:
        if late:
            body = "\n".join([direction, *loads, "try:", _indent(element), "finally:",
                              _indent("\n".join(stores)), flags, b.next])
        else:
            body = "\n".join([direction, *loads, element, *steps, *stores, flags, b.next])
        return b.compile(body)
    # Repeated form: count in CX/ECX/RCX, stop conditions for REPE/REPNE compares.
    stop = ""
    if compare:
        stop = "if x != y:\n    break" if b.rep == 1 else "if x == y:\n    break"
    # After REP_CHUNK elements, an iteration boundary: IP stays here, the batch ends.
    preempt = (f"k += 1\nif k >= {REP_CHUNK} and c:\n"
               f"    cpu.rip = {b.const(b.ip)}\n    raise {b.const(END_BATCH)}")
    if late:
        loop = "\n".join([element, stop, preempt])
    else:
        loop = "\n".join([element, *steps, "c -= 1", stop, preempt])
    if not b.cpu.legacy and op in ("stos", "movs"):
        # Forward runs go page-chunk by page-chunk straight into RAM where possible.
        if op == "stos":
            call = f"{b.const(stos_bulk)}(cpu, di, c, {size}, {_acc_get(size)}, {am:#x})"
            advance = f"di = (di + n * {size}) & {am:#x}"
        else:
            call = f"{b.const(movs_bulk)}(cpu, {seg}, si, di, c, {size}, {am:#x})"
            advance = (f"si = (si + n * {size}) & {am:#x}\n"
                       f"di = (di + n * {size}) & {am:#x}")
        loop = f"if d > 0:\n    n = {call}\n    if n:\n{_indent(advance, 2)}\n" \
               f"        c -= n\n        continue\n{loop}"
    # The flags of the last comparison are set only when the repetition ends, so one that
    # faults part-way leaves EFLAGS as before the instruction (see the module docstring)
    # while the count and index registers keep their progress (the `finally`).
    body = f"""
c = regs[{RCX}] & {am:#x}
if c:
    k = 0
{_indent(direction)}
{_indent(chr(10).join(loads))}
    try:
        while c:
{_indent(loop, 3)}
    finally:
{_indent(chr(10).join([*stores, _reg_store(RCX, "c", a)]), 2)}
{_indent(flags)}
{b.next}
"""
    return b.compile(body)


def _group(op: str):  # noqa: ANN202 - decorator plumbing
    def builder(b: Insn) -> Handler:
        return build_string(b, op)
    builder.__name__ = f"build_{op}"
    return builder


# MOVSD/CMPSD share their mnemonic with SSE2: register the string forms by Code.
semantic_code(Code.MOVSD_M32_M32)(_group("movs"))
semantic_code(Code.CMPSD_M32_M32)(_group("cmps"))
semantic(Mnemonic.MOVSB, Mnemonic.MOVSW, Mnemonic.MOVSQ)(_group("movs"))
semantic(Mnemonic.CMPSB, Mnemonic.CMPSW, Mnemonic.CMPSQ)(_group("cmps"))
semantic(Mnemonic.SCASB, Mnemonic.SCASW, Mnemonic.SCASD, Mnemonic.SCASQ)(_group("scas"))
semantic(Mnemonic.LODSB, Mnemonic.LODSW, Mnemonic.LODSD, Mnemonic.LODSQ)(_group("lods"))
semantic(Mnemonic.STOSB, Mnemonic.STOSW, Mnemonic.STOSD, Mnemonic.STOSQ)(_group("stos"))
semantic(Mnemonic.INSB, Mnemonic.INSW, Mnemonic.INSD)(_group("ins"))
semantic(Mnemonic.OUTSB, Mnemonic.OUTSW, Mnemonic.OUTSD)(_group("outs"))
