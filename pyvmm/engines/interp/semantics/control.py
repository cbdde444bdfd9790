"""Control transfer: JMP Jcc JCXZ LOOP CALL RET (near and far), INT n, INT3, INTO,
IRET, BOUND (SDM Vol. 2; far transfers: Vol. 3A §5.8).
"""

from __future__ import annotations

from iced_x86 import Mnemonic, OpKind

from pyvmm.cpu.state import FLAG_VM
from pyvmm.engines.interp.builder import Handler, Insn
from pyvmm.engines.interp.far import far_return, far_transfer, interrupt_return
from pyvmm.engines.interp.faults import BR, DB, GP, CpuFault
from pyvmm.engines.interp.semantics import semantic
from pyvmm.engines.interp.signals import END_BATCH, SoftwareInterrupt

_NEAR = (OpKind.NEAR_BRANCH16, OpKind.NEAR_BRANCH32, OpKind.NEAR_BRANCH64)


def _target(b: Insn) -> int:
    return b.ins.near_branch_target & b.ip_mask


def _ip_mask_for(b: Insn, size: int) -> int:
    return 0xFFFFFFFFFFFFFFFF if size == 8 else (1 << (8 * size)) - 1


# A 64-bit branch to a non-canonical address faults on the branch itself, #GP(0),
# with nothing changed (SDM Vol. 2A "JMP", "CALL", "Jcc", Vol. 2B "RET", 64-bit mode).
_CANON = 1 << 47  # ((t + 2^47) >> 48) & 0xFFFF is 0 iff t is canonical


def _goto(b: Insn, target: int) -> str:
    """Source transferring control to a decode-time target."""
    if b.code_bits == 64 and (target + _CANON) >> 48 & 0xFFFF:
        return f"raise CpuFault({GP}, 0)"
    return f"cpu.rip = {b.const(target)}"


def _canonical_check(b: Insn, name: str) -> str:
    """Source raising #GP(0) when the runtime target `name` is not canonical."""
    if b.code_bits != 64:
        return ""
    return f"if ({name} + {_CANON}) >> 48 & 0xFFFF:\n    raise CpuFault({GP}, 0)"


@semantic(Mnemonic.JMP)
def _jmp(b: Insn) -> Handler:
    kind = b.kind(0)
    if kind in _NEAR:
        return b.compile(_goto(b, _target(b)))
    if kind in (OpKind.FAR_BRANCH16, OpKind.FAR_BRANCH32):
        return _far(b, b.ins.far_branch_selector, b.ins.far_branch32 if kind ==
                    OpKind.FAR_BRANCH32 else b.ins.far_branch16, call=False)
    if b.is_mem(0) and b.ins.is_jmp_far_indirect:
        return _far_indirect(b, call=False)
    size = b.size(0)
    return b.compile(f"""
t = {b.get(0)} & {b.const(_ip_mask_for(b, size))}
{_canonical_check(b, "t")}
cpu.rip = t
""")


def _jcc(b: Insn) -> Handler:
    cc = b.ins.condition_code
    return b.compile(f"""
if CONDITIONS[{cc}](cpu):
    {_goto(b, _target(b))}
else:
    {b.next}
""")


for _m in (Mnemonic.JO, Mnemonic.JNO, Mnemonic.JB, Mnemonic.JAE, Mnemonic.JE, Mnemonic.JNE,
           Mnemonic.JBE, Mnemonic.JA, Mnemonic.JS, Mnemonic.JNS, Mnemonic.JP, Mnemonic.JNP,
           Mnemonic.JL, Mnemonic.JGE, Mnemonic.JLE, Mnemonic.JG):
    semantic(_m)(_jcc)


_COUNT_REG = {2: ("(regs[1] & 0xFFFF)", "regs[1] = (regs[1] & -65536) | c"),
              4: ("(regs[1] & 0xFFFFFFFF)", "regs[1] = c"), 8: ("regs[1]", "regs[1] = c")}


@semantic(Mnemonic.JCXZ, Mnemonic.JECXZ, Mnemonic.JRCXZ)
def _jcxz(b: Insn) -> Handler:
    size = {Mnemonic.JCXZ: 2, Mnemonic.JECXZ: 4, Mnemonic.JRCXZ: 8}[b.mnemonic]
    return b.compile(f"""
if not {_COUNT_REG[size][0]}:
    {_goto(b, _target(b))}
else:
    {b.next}
""")


@semantic(Mnemonic.LOOP, Mnemonic.LOOPE, Mnemonic.LOOPNE)
def _loop(b: Insn) -> Handler:
    size = b.addr_size
    get, put = _COUNT_REG[size]
    cond = {Mnemonic.LOOP: "c", Mnemonic.LOOPE: "c and CONDITIONS[5](cpu)",
            Mnemonic.LOOPNE: "c and CONDITIONS[6](cpu)"}[b.mnemonic]
    return b.compile(f"""
c = ({get} - 1) & {b.const(b.addr_mask)}
if {cond}:
    {_goto(b, _target(b))}
else:
    {b.next}
{put}
""")


@semantic(Mnemonic.CALL)
def _call(b: Insn) -> Handler:
    kind = b.kind(0)
    size = abs(b.ins.stack_pointer_increment)
    if kind in _NEAR:
        target = _target(b)
        if b.code_bits == 64 and (target + _CANON) >> 48 & 0xFFFF:
            return b.compile(_goto(b, target))
        return b.compile(f"""
{b.push(b.const(b.next_ip), size)}
cpu.rip = {b.const(target)}
""")
    if kind in (OpKind.FAR_BRANCH16, OpKind.FAR_BRANCH32):
        return _far(b, b.ins.far_branch_selector, b.ins.far_branch32 if kind ==
                    OpKind.FAR_BRANCH32 else b.ins.far_branch16, call=True)
    if b.ins.is_call_far_indirect:
        return _far_indirect(b, call=True)
    return b.compile(f"""
t = {b.get(0)} & {b.const(_ip_mask_for(b, size))}
{_canonical_check(b, "t")}
{b.push(b.const(b.next_ip), size)}
cpu.rip = t
""")


@semantic(Mnemonic.RET)
def _ret(b: Insn) -> Handler:
    extra = b.ins.immediate(0) & 0xFFFF if b.ins.op_count else 0
    size = abs(b.ins.stack_pointer_increment) - extra  # iced: pop size plus the immediate
    if size not in (2, 4, 8):
        size = 8 if b.code_bits == 64 else (4 if b.code_bits == 32 else 2)
    adjust = (f"\nregs[4] = (regs[4] & ~cpu.stack_mask) | ((regs[4] + {b.const(extra)}) "
              "& cpu.stack_mask)") if extra else ""
    if size == 8:
        return b.compile(f"""
sp = regs[4]
{b.pop("t", 8)}
if (t + {_CANON}) >> 48 & 0xFFFF:
    regs[4] = sp
    raise CpuFault({GP}, 0)
cpu.rip = t{adjust}
""")
    return b.compile(f"{b.pop('cpu.rip', size)}{adjust}")


@semantic(Mnemonic.RETF)
def _retf(b: Insn) -> Handler:
    extra = b.ins.immediate(0) & 0xFFFF if b.ins.op_count else 0
    spi = abs(b.ins.stack_pointer_increment)
    size = (spi - extra) // 2 if spi - extra in (4, 8, 16) else (2 if b.code_bits == 16 else 4)
    cpu = b.cpu

    def retf() -> None:
        far_return(cpu, size, extra)
    return retf


def _far(b: Insn, selector: int, offset: int, call: bool) -> Handler:
    cpu = b.cpu
    size = 2 if b.kind(0) == OpKind.FAR_BRANCH16 else 4
    next_ip = b.next_ip

    def far() -> None:
        far_transfer(cpu, selector, offset, call, size, next_ip)
    return far


def _far_indirect(b: Insn, call: bool) -> Handler:
    cpu = b.cpu
    total = b.size(0)  # m16:16, m16:32 or m16:64
    size = total - 2
    seg = b.seg()
    address = b.address()
    mask = b.addr_mask
    next_ip = b.next_ip

    def far_indirect() -> None:
        ea = address()
        offset = cpu.read(seg, ea, size)
        selector = cpu.read(seg, (ea + size) & mask, 2)
        far_transfer(cpu, selector, offset, call, size, next_ip)
    return far_indirect


@semantic(Mnemonic.INT, Mnemonic.INT3, Mnemonic.INTO, Mnemonic.INT1)
def _int(b: Insn) -> Handler:
    cpu = b.cpu
    next_ip = b.next_ip
    if b.mnemonic == Mnemonic.INT1:
        def int1() -> None:
            raise SoftwareInterrupt(DB, next_ip)
        return int1
    if b.mnemonic == Mnemonic.INTO:
        def into() -> None:
            if cpu.get_flags() & 0x800:
                raise SoftwareInterrupt(4, next_ip)
            cpu.rip = next_ip
        return into
    vector = 3 if b.mnemonic == Mnemonic.INT3 else b.ins.immediate(0) & 0xFF
    interrupt = SoftwareInterrupt(vector, next_ip)

    def int_n() -> None:
        if cpu.flags & FLAG_VM and cpu.iopl < 3:
            raise CpuFault(GP, 0)
        raise interrupt
    return int_n


@semantic(Mnemonic.BOUND)
def _bound(b: Insn) -> Handler:
    size = b.size(0)
    sign = 1 << (8 * size - 1)
    seg = b.seg()
    return b.compile(f"""
ea = {b.ea()}
lo = (read({seg}, ea, {size}) ^ {sign}) - {sign}
hi = (read({seg}, (ea + {size}) & {b.const(b.addr_mask)}, {size}) ^ {sign}) - {sign}
v = ({b.get(0)} ^ {sign}) - {sign}
if v < lo or v > hi:
    raise CpuFault({BR})
{b.next}
""")


@semantic(Mnemonic.IRET, Mnemonic.IRETD, Mnemonic.IRETQ)
def _iret(b: Insn) -> Handler:
    size = {Mnemonic.IRET: 2, Mnemonic.IRETD: 4, Mnemonic.IRETQ: 8}[b.mnemonic]
    cpu = b.cpu

    def iret() -> None:
        interrupt_return(cpu, size)
        raise END_BATCH  # IF may have been set
    return iret
