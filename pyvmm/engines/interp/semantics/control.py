"""Control transfer: JMP Jcc JCXZ LOOP CALL RET (near and far), INT n, INT3, INTO,
IRET, BOUND (SDM Vol. 2; far transfers: Vol. 3A §5.8).
"""

from __future__ import annotations

from iced_x86 import Mnemonic, OpKind

from pyvmm.cpu.state import CR0_PE, EFER_LMA, FLAG_IF, FLAG_VM, SegmentState
from pyvmm.engines.interp import descriptors as desc
from pyvmm.engines.interp.builder import Handler, Insn
from pyvmm.engines.interp.cpu import CS, RSP, SS_SEG, Cpu
from pyvmm.engines.interp.faults import BR, DB, GP, CpuFault
from pyvmm.engines.interp.semantics import semantic
from pyvmm.engines.interp.semantics.stack import write_flags
from pyvmm.engines.interp.signals import END_BATCH, SoftwareInterrupt

_NEAR = (OpKind.NEAR_BRANCH16, OpKind.NEAR_BRANCH32, OpKind.NEAR_BRANCH64)


def _target(b: Insn) -> int:
    return b.ins.near_branch_target & b.ip_mask


def _ip_mask_for(b: Insn, size: int) -> int:
    return 0xFFFFFFFFFFFFFFFF if size == 8 else (1 << (8 * size)) - 1


@semantic(Mnemonic.JMP)
def _jmp(b: Insn) -> Handler:
    kind = b.kind(0)
    if kind in _NEAR:
        return b.compile(f"cpu.rip = {b.const(_target(b))}")
    if kind in (OpKind.FAR_BRANCH16, OpKind.FAR_BRANCH32):
        return _far(b, b.ins.far_branch_selector, b.ins.far_branch32 if kind ==
                    OpKind.FAR_BRANCH32 else b.ins.far_branch16, call=False)
    if b.is_mem(0) and b.ins.is_jmp_far_indirect:
        return _far_indirect(b, call=False)
    size = b.size(0)
    return b.compile(f"cpu.rip = {b.get(0)} & {b.const(_ip_mask_for(b, size))}")


def _jcc(b: Insn) -> Handler:
    cc = b.ins.condition_code
    return b.compile(f"""
if CONDITIONS[{cc}](cpu):
    cpu.rip = {b.const(_target(b))}
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
    cpu.rip = {b.const(_target(b))}
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
{put}
if {cond}:
    cpu.rip = {b.const(_target(b))}
else:
    {b.next}
""")


@semantic(Mnemonic.CALL)
def _call(b: Insn) -> Handler:
    kind = b.kind(0)
    size = abs(b.ins.stack_pointer_increment)
    if kind in _NEAR:
        return b.compile(f"""
cpu.push({b.const(b.next_ip)}, {size})
cpu.rip = {b.const(_target(b))}
""")
    if kind in (OpKind.FAR_BRANCH16, OpKind.FAR_BRANCH32):
        return _far(b, b.ins.far_branch_selector, b.ins.far_branch32 if kind ==
                    OpKind.FAR_BRANCH32 else b.ins.far_branch16, call=True)
    if b.ins.is_call_far_indirect:
        return _far_indirect(b, call=True)
    return b.compile(f"""
t = {b.get(0)}
cpu.push({b.const(b.next_ip)}, {size})
cpu.rip = t & {b.const(_ip_mask_for(b, size))}
""")


@semantic(Mnemonic.RET)
def _ret(b: Insn) -> Handler:
    extra = b.ins.immediate(0) & 0xFFFF if b.ins.op_count else 0
    size = abs(b.ins.stack_pointer_increment) - extra  # iced: pop size plus the immediate
    if size not in (2, 4, 8):
        size = 8 if b.code_bits == 64 else (4 if b.code_bits == 32 else 2)
    adjust = (f"\nregs[4] = (regs[4] & ~cpu.stack_mask) | ((regs[4] + {b.const(extra)}) "
              "& cpu.stack_mask)") if extra else ""
    return b.compile(f"cpu.rip = cpu.pop({size}){adjust}")


@semantic(Mnemonic.RETF)
def _retf(b: Insn) -> Handler:
    extra = b.ins.immediate(0) & 0xFFFF if b.ins.op_count else 0
    spi = abs(b.ins.stack_pointer_increment)
    size = (spi - extra) // 2 if spi - extra in (4, 8, 16) else (2 if b.code_bits == 16 else 4)
    cpu = b.cpu

    def retf() -> None:
        far_return(cpu, size, extra)
    return retf


def far_return(cpu: Cpu, size: int, extra: int) -> None:
    """RETF (SDM "RET" far operation), including the return to an outer privilege level."""
    mask = cpu.stack_mask
    sp = cpu.regs[RSP] & mask
    ip = cpu.read(SS_SEG, sp, size)
    selector = cpu.read(SS_SEG, (sp + size) & mask, size) & 0xFFFF
    if not cpu.cr0 & CR0_PE or cpu.legacy or cpu.flags & FLAG_VM:
        cpu.regs[RSP] = (cpu.regs[RSP] & ~mask) | ((sp + 2 * size + extra) & mask)
        cpu.load_real_segment(CS, selector)
        cpu.rip = ip & (0xFFFF if size == 2 else 0xFFFFFFFF)
        return
    rpl = selector & 3
    if rpl < cpu.cpl:
        raise CpuFault(GP, selector & 0xFFFC)
    seg, raw, address = desc.code_descriptor(cpu, selector)
    desc.check_code_target(cpu, seg, selector, rpl if not seg.type & 0x4 else max(rpl,
                                                                                    seg.dpl))
    if rpl > cpu.cpl:
        base = (sp + 2 * size + extra) & mask
        new_sp = cpu.read(SS_SEG, base, size)
        new_ss = cpu.read(SS_SEG, (base + size) & mask, size) & 0xFFFF
        desc.load_cs(cpu, seg, raw, address, rpl)
        _load_ss_for_return(cpu, new_ss, rpl)
        cpu.regs[RSP] = (new_sp + extra) & cpu.stack_mask
        desc.check_data_segments_after_privilege_drop(cpu)
    else:
        cpu.regs[RSP] = (cpu.regs[RSP] & ~mask) | ((sp + 2 * size + extra) & mask)
        desc.load_cs(cpu, seg, raw, address, cpu.cpl)
    cpu.rip = ip & (0xFFFFFFFFFFFFFFFF if size == 8 else (1 << (8 * size)) - 1)


def _load_ss_for_return(cpu: Cpu, selector: int, cpl: int) -> None:
    if selector & 0xFFFC == 0 and cpu.efer & EFER_LMA and cpu.long64 and cpl != 3:
        cpu.set_segment(SS_SEG, desc.null_segment(selector, cpl))
        return
    desc.load_data_segment(cpu, SS_SEG, selector)


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


def far_transfer(cpu: Cpu, selector: int, offset: int, call: bool, size: int,
                 next_ip: int) -> None:
    """Far JMP/CALL to a code segment (call gates and task switches are not supported)."""
    old_cs = cpu.seg_sel[CS]
    if not cpu.cr0 & CR0_PE or cpu.legacy or cpu.flags & FLAG_VM:
        if call:
            sp = cpu.regs[RSP]
            try:
                cpu.push(old_cs, size)
                cpu.push(next_ip, size)
            except CpuFault:
                cpu.regs[RSP] = sp
                raise
        cpu.load_real_segment(CS, selector)
        cpu.rip = offset & (0xFFFF if size == 2 else 0xFFFFFFFF)
        return
    seg, raw, address = desc.code_descriptor(cpu, selector)
    if not seg.s:
        raise CpuFault(GP, selector & 0xFFFC)  # call gate / TSS: not supported
    if not seg.type & 0x4 and (selector & 3) > cpu.cpl:
        raise CpuFault(GP, selector & 0xFFFC)
    desc.check_code_target(cpu, seg, selector, cpu.cpl)
    if offset > seg.limit and not (seg.l and cpu.efer & EFER_LMA):
        raise CpuFault(GP, 0)
    if call:
        sp = cpu.regs[RSP]
        try:
            cpu.push(old_cs, size)
            cpu.push(next_ip, size)
        except CpuFault:
            cpu.regs[RSP] = sp
            raise
    desc.load_cs(cpu, seg, raw, address, cpu.cpl)
    cpu.rip = offset


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


def interrupt_return(cpu: Cpu, size: int) -> None:
    """IRET (SDM "IRET/IRETD/IRETQ" operation): real, protected and long mode."""
    mask = cpu.stack_mask
    sp = cpu.regs[RSP] & mask
    ip = cpu.read(SS_SEG, sp, size)
    selector = cpu.read(SS_SEG, (sp + size) & mask, size) & 0xFFFF
    flags = cpu.read(SS_SEG, (sp + 2 * size) & mask, size)
    if not cpu.cr0 & CR0_PE or cpu.legacy:
        cpu.regs[RSP] = (cpu.regs[RSP] & ~mask) | ((sp + 3 * size) & mask)
        cpu.load_real_segment(CS, selector)
        cpu.rip = ip & (0xFFFF if size == 2 else 0xFFFFFFFF)
        write_flags(cpu, flags, size)
        return
    if cpu.flags & FLAG_VM:
        raise CpuFault(GP, 0)
    long_mode = bool(cpu.efer & EFER_LMA)
    if cpu.flags & 0x4000 and not long_mode:  # NT: task return, not supported
        raise CpuFault(GP, 0)
    rpl = selector & 3
    if rpl < cpu.cpl:
        raise CpuFault(GP, selector & 0xFFFC)
    seg, raw, address = desc.code_descriptor(cpu, selector)
    desc.check_code_target(cpu, seg, selector, rpl if not seg.type & 0x4 else max(rpl,
                                                                                    seg.dpl))
    old_cpl = cpu.cpl
    pops_stack = rpl > old_cpl or (long_mode and (size == 8 or cpu.long64))
    new_sp = new_ss = None
    if pops_stack:
        new_sp = cpu.read(SS_SEG, (sp + 3 * size) & mask, size)
        new_ss = cpu.read(SS_SEG, (sp + 4 * size) & mask, size) & 0xFFFF
    # Flags are written with the privilege of the IRET's CPL (SDM "IRET": IOPL changes
    # only at CPL 0, IF only when CPL <= IOPL).
    allow_iopl = old_cpl == 0
    saved_cpl = cpu.cpl
    write_flags(cpu, flags & ~FLAG_VM, size, allow_iopl=allow_iopl)
    cpu.cpl = saved_cpl
    desc.load_cs(cpu, seg, raw, address, rpl)
    if pops_stack:
        assert new_ss is not None and new_sp is not None
        if long_mode and new_ss & 0xFFFC == 0 and cpu.long64 and rpl != 3:
            cpu.set_segment(SS_SEG, SegmentState(selector=new_ss, base=0, limit=0xFFFFFFFF,
                                                 type=0x3, dpl=rpl, unusable=1))
        else:
            desc.load_data_segment(cpu, SS_SEG, new_ss)
        cpu.regs[RSP] = new_sp & cpu.stack_mask if not cpu.long64 else new_sp
        if rpl > old_cpl:
            desc.check_data_segments_after_privilege_drop(cpu)
    else:
        cpu.regs[RSP] = (cpu.regs[RSP] & ~mask) | ((sp + 3 * size) & mask)
    cpu.rip = ip & (0xFFFFFFFFFFFFFFFF if size == 8 else (1 << (8 * size)) - 1)
    _ = FLAG_IF
