"""System instructions: HLT, descriptor-table registers, control/debug registers,
CPUID, RDTSC, RDMSR/WRMSR, SYSCALL/SYSRET, SWAPGS, INVLPG, cache control, UD2
(SDM Vol. 2 and Vol. 3A chapters 2, 4, 5).
"""

from __future__ import annotations

from iced_x86 import Code, Mnemonic, Register

from pyvmm.cpu.state import (
    CR0_PE,
    CR0_PG,
    CR0_TS,
    CR4_PAE,
    EFER_LMA,
    EFER_LME,
    EFER_SCE,
    FLAG_RF,
    FLAG_VM,
    MSR_IA32_TSC,
    MSR_LSTAR,
    MSR_SFMASK,
    MSR_STAR,
    SegmentState,
    TableRegister,
)
from pyvmm.engines.interp import msr as msrs
from pyvmm.engines.interp import segmentation as sg
from pyvmm.engines.interp.builder import GPR, Handler, Insn
from pyvmm.engines.interp.cpu import CS, RSP, SS_SEG, Cpu
from pyvmm.engines.interp.faults import GP, UD, CpuFault
from pyvmm.engines.interp.semantics import semantic
from pyvmm.engines.interp.signals import END_BATCH

_CR = {getattr(Register, f"CR{i}"): i for i in (0, 2, 3, 4, 8)}
_DR = {getattr(Register, f"DR{i}"): i for i in range(8)}


def _privileged(cpu: Cpu) -> None:
    """#GP(0) unless CPL 0 (real mode counts as CPL 0)."""
    if cpu.cr0 & CR0_PE and (cpu.cpl != 0 or cpu.flags & FLAG_VM):
        raise CpuFault(GP, 0)


def write_cr(cpu: Cpu, index: int, value: int) -> None:
    """MOV to CRn (SDM Vol. 3A §2.5; long-mode activation §9.8.5)."""
    if index == 0:
        value |= 0x10  # ET is hardwired to 1
        if value & CR0_PG and not value & CR0_PE:
            raise CpuFault(GP, 0)
        if value >> 32:
            raise CpuFault(GP, 0)
        old = cpu.cr0
        if value & CR0_PG and not old & CR0_PG and cpu.efer & EFER_LME:
            if not cpu.cr4 & CR4_PAE:
                raise CpuFault(GP, 0)
            cpu.efer |= EFER_LMA
        if not value & CR0_PG and old & CR0_PG:
            cpu.efer &= ~EFER_LMA
        cpu.cr0 = value
        cpu.paging_changed()
    elif index == 2:
        cpu.cr2 = value
    elif index == 3:
        cpu.cr3 = value & (0xFFFFFFFFFFFFFFFF if cpu.efer & EFER_LMA else 0xFFFFFFFF)
        cpu.paging_changed()
    elif index == 4:
        if cpu.efer & EFER_LMA and not value & CR4_PAE:
            raise CpuFault(GP, 0)
        cpu.cr4 = value
        cpu.paging_changed()
    elif index == 8:
        cpu.cr8 = value & 0xF


def build_mov_control(b: Insn) -> Handler:
    cpu = b.cpu
    ins = b.ins
    next_ip = b.next_ip
    dst, src = ins.op_register(0), ins.op_register(1)
    if dst in _CR or src in _CR:
        to_cr = dst in _CR
        index = _CR[dst] if to_cr else _CR[src]
        gpr = GPR[src if to_cr else dst][0]
        mask = 0xFFFFFFFFFFFFFFFF if b.code_bits == 64 else 0xFFFFFFFF

        def mov_cr() -> None:
            _privileged(cpu)
            if to_cr:
                write_cr(cpu, index, cpu.regs[gpr] & mask)
                cpu.rip = next_ip
                raise END_BATCH
            value = {0: cpu.cr0, 2: cpu.cr2, 3: cpu.cr3, 4: cpu.cr4, 8: cpu.cr8}[index]
            cpu.regs[gpr] = value & mask
            cpu.rip = next_ip
        return mov_cr
    if dst in _DR or src in _DR:
        to_dr = dst in _DR
        index = _DR[dst] if to_dr else _DR[src]
        gpr = GPR[src if to_dr else dst][0]
        mask = 0xFFFFFFFFFFFFFFFF if b.code_bits == 64 else 0xFFFFFFFF
        index = {4: 6, 5: 7}.get(index, index)  # DR4/DR5 alias DR6/DR7 when CR4.DE=0

        def mov_dr() -> None:
            _privileged(cpu)
            if to_dr:
                cpu.dr[index] = cpu.regs[gpr] & mask
            else:
                cpu.regs[gpr] = cpu.dr[index] & mask
            cpu.rip = next_ip
        return mov_dr
    raise NotImplementedError


@semantic(Mnemonic.HLT)
def _hlt(b: Insn) -> Handler:
    cpu = b.cpu
    next_ip = b.next_ip

    def hlt() -> None:
        _privileged(cpu)
        cpu.rip = next_ip
        cpu.halted = True
        raise END_BATCH
    return hlt


def _table_access(b: Insn) -> tuple[int, int, Callable]:  # type: ignore[name-defined]  # noqa: F821
    return b.seg(), b.addr_mask, b.address()


# iced-x86 names the 16-bit operand-size forms of LGDT/LIDT apart (66h in 32-bit
# code, none in 16-bit code).
_LOAD_TABLE_OPERAND16 = frozenset((Code.LGDT_M1632_16, Code.LIDT_M1632_16))


@semantic(Mnemonic.LGDT, Mnemonic.LIDT)
def _lgdt(b: Insn) -> Handler:
    """SDM Vol. 2A "LGDT/LIDT": a 16-bit limit, then the base: 8 bytes in 64-bit
    mode; otherwise 4, of which a 16-bit operand size keeps only the low 24 bits."""
    cpu = b.cpu
    seg, mask, address = _table_access(b)
    if b.code_bits == 64:
        base_size, base_mask = 8, 0xFFFFFFFFFFFFFFFF
    else:
        base_size = 4
        base_mask = 0xFFFFFF if b.ins.code in _LOAD_TABLE_OPERAND16 else 0xFFFFFFFF
    gdt = b.mnemonic == Mnemonic.LGDT
    next_ip = b.next_ip

    def lgdt() -> None:
        _privileged(cpu)
        ea = address()
        limit = cpu.read(seg, ea, 2)
        base = cpu.read(seg, (ea + 2) & mask, base_size) & base_mask
        if gdt:
            cpu.gdtr = TableRegister(base, limit)
        else:
            cpu.idtr = TableRegister(base, limit)
        cpu.rip = next_ip
    return lgdt


@semantic(Mnemonic.SGDT, Mnemonic.SIDT)
def _sgdt(b: Insn) -> Handler:
    cpu = b.cpu
    seg, mask, address = _table_access(b)
    base_size = 8 if b.code_bits == 64 else 4
    gdt = b.mnemonic == Mnemonic.SGDT
    next_ip = b.next_ip

    def sgdt() -> None:
        table = cpu.gdtr if gdt else cpu.idtr
        ea = address()
        cpu.write(seg, ea, 2, table.limit)
        cpu.write(seg, (ea + 2) & mask, base_size, table.base)
        cpu.rip = next_ip
    return sgdt


@semantic(Mnemonic.LLDT, Mnemonic.LTR)
def _lldt(b: Insn) -> Handler:
    cpu = b.cpu
    get = b.reader(0)
    ltr = b.mnemonic == Mnemonic.LTR
    next_ip = b.next_ip

    def load_system_segment() -> None:
        if not cpu.cr0 & CR0_PE or cpu.flags & FLAG_VM:
            raise CpuFault(UD)
        _privileged(cpu)
        selector = get() & 0xFFFF
        lma = bool(cpu.efer & EFER_LMA)
        if ltr:
            cpu.tr = sg.load_tr(cpu.read_sys, cpu.write_sys, cpu.gdtr, selector, lma)
        else:
            cpu.ldtr = sg.load_ldtr(cpu.read_sys, cpu.gdtr, selector, lma)
        cpu.rip = next_ip
    return load_system_segment


@semantic(Mnemonic.SLDT, Mnemonic.STR)
def _sldt(b: Insn) -> Handler:
    attr = "ldtr" if b.mnemonic == Mnemonic.SLDT else "tr"
    return b.compile(f"{b.set(0, f'cpu.{attr}.selector')}\n{b.next}")


@semantic(Mnemonic.SMSW)
def _smsw(b: Insn) -> Handler:
    value = "cpu.cr0" if b.is_reg(0) else "cpu.cr0 & 0xFFFF"
    return b.compile(f"{b.set(0, value)}\n{b.next}")


@semantic(Mnemonic.LMSW)
def _lmsw(b: Insn) -> Handler:
    cpu = b.cpu
    get = b.reader(0)
    next_ip = b.next_ip

    def lmsw() -> None:
        _privileged(cpu)
        value = get() & 0xF
        # LMSW can set PE but never clear it (SDM "LMSW").
        new = (cpu.cr0 & ~0xE) | value | (cpu.cr0 & 1)
        write_cr(cpu, 0, new)
        cpu.rip = next_ip
        raise END_BATCH
    return lmsw


@semantic(Mnemonic.CLTS)
def _clts(b: Insn) -> Handler:
    cpu = b.cpu
    next_ip = b.next_ip

    def clts() -> None:
        _privileged(cpu)
        cpu.cr0 &= ~CR0_TS
        cpu.rip = next_ip
    return clts


@semantic(Mnemonic.INVLPG)
def _invlpg(b: Insn) -> Handler:
    cpu = b.cpu
    seg = b.seg()
    address = b.address()
    next_ip = b.next_ip

    def invlpg() -> None:
        _privileged(cpu)
        cpu.invlpg((cpu.seg_base[seg] + address()) & cpu.lin_mask)
        cpu.rip = next_ip
    return invlpg


@semantic(Mnemonic.WBINVD, Mnemonic.INVD)
def _wbinvd(b: Insn) -> Handler:
    cpu = b.cpu
    next_ip = b.next_ip

    def wbinvd() -> None:
        _privileged(cpu)
        cpu.rip = next_ip
    return wbinvd


@semantic(Mnemonic.UD0, Mnemonic.UD1, Mnemonic.UD2)
def _ud2(b: Insn) -> Handler:
    def ud2() -> None:
        raise CpuFault(UD)
    return ud2


@semantic(Mnemonic.CPUID)
def _cpuid(b: Insn) -> Handler:
    from pyvmm.cpu.cpuid import cpuid_lookup, interpreter_cpuid_table, with_apic_status
    table = interpreter_cpuid_table()
    cpu = b.cpu
    next_ip = b.next_ip

    def cpuid() -> None:
        regs = cpu.regs
        leaf = regs[0] & 0xFFFFFFFF
        eax, ebx, ecx, edx = cpuid_lookup(table, leaf, regs[1] & 0xFFFFFFFF)
        if cpu.apic is not None:
            eax, ebx, ecx, edx = with_apic_status(leaf, (eax, ebx, ecx, edx), cpu.apic.enabled)
        regs[0], regs[3], regs[1], regs[2] = eax, ebx, ecx, edx
        cpu.rip = next_ip
    return cpuid


@semantic(Mnemonic.RDTSC)
def _rdtsc(b: Insn) -> Handler:
    cpu = b.cpu
    next_ip = b.next_ip

    def rdtsc() -> None:
        if cpu.cr4 & 0x4 and cpu.cpl != 0 and cpu.cr0 & CR0_PE:  # CR4.TSD
            raise CpuFault(GP, 0)
        tsc = msrs.read_tsc(cpu)
        cpu.regs[0] = tsc & 0xFFFFFFFF
        cpu.regs[2] = (tsc >> 32) & 0xFFFFFFFF
        cpu.rip = next_ip
        cpu.tsc_fixup = "read"  # the engine adds the instructions run earlier in the batch
        raise END_BATCH
    return rdtsc


@semantic(Mnemonic.RDMSR, Mnemonic.WRMSR)
def _msr(b: Insn) -> Handler:
    cpu = b.cpu
    next_ip = b.next_ip
    write = b.mnemonic == Mnemonic.WRMSR

    def handler() -> None:
        _privileged(cpu)
        regs = cpu.regs
        index = regs[1] & 0xFFFFFFFF
        if write:
            msrs.write_msr(cpu, index, ((regs[2] & 0xFFFFFFFF) << 32) | (regs[0] & 0xFFFFFFFF))
            cpu.rip = next_ip
            if index == MSR_IA32_TSC:
                cpu.tsc_fixup = "write"
            raise END_BATCH
        value = msrs.read_msr(cpu, index)
        regs[0] = value & 0xFFFFFFFF
        regs[2] = value >> 32
        cpu.rip = next_ip
        if index == MSR_IA32_TSC:
            cpu.tsc_fixup = "read"
            raise END_BATCH
    return handler


@semantic(Mnemonic.SWAPGS)
def _swapgs(b: Insn) -> Handler:
    cpu = b.cpu
    next_ip = b.next_ip

    def swapgs() -> None:
        if not cpu.long64:
            raise CpuFault(UD)
        _privileged(cpu)
        msrs.swapgs(cpu)
        cpu.rip = next_ip
    return swapgs


@semantic(Mnemonic.SYSCALL)
def _syscall(b: Insn) -> Handler:
    cpu = b.cpu
    next_ip = b.next_ip

    def syscall() -> None:
        """SDM "SYSCALL": RCX=RIP, R11=RFLAGS, CS/SS from STAR[47:32], RIP=LSTAR."""
        if not cpu.efer & EFER_SCE or not cpu.long64:
            raise CpuFault(UD)
        star = cpu.msrs.get(MSR_STAR, 0)
        flags = cpu.get_flags()
        cpu.regs[1] = next_ip
        cpu.regs[11] = flags & ~FLAG_RF
        selector = (star >> 32) & 0xFFFC
        cpu.set_flags(flags & ~cpu.msrs.get(MSR_SFMASK, 0) & ~FLAG_RF)
        cpu.segs[CS] = SegmentState(selector=selector, base=0, limit=0xFFFFFFFF, type=0xB,
                                    dpl=0, l=1, g=1)
        cpu.segs[SS_SEG] = SegmentState(selector=selector + 8, base=0, limit=0xFFFFFFFF,
                                        type=0x3, dpl=0, db=1, g=1)
        cpu.cpl = 0
        cpu.refresh_mode()
        cpu.rip = cpu.msrs.get(MSR_LSTAR, 0)
        raise END_BATCH
    return syscall


@semantic(Mnemonic.SYSRET, Mnemonic.SYSRETQ)
def _sysret(b: Insn) -> Handler:
    cpu = b.cpu
    to64 = b.mnemonic == Mnemonic.SYSRETQ

    def sysret() -> None:
        """SDM "SYSRET": RIP=RCX, RFLAGS=R11, CS/SS from STAR[63:48], CPL 3."""
        if not cpu.efer & EFER_SCE or not cpu.long64:
            raise CpuFault(UD)
        _privileged(cpu)
        star = cpu.msrs.get(MSR_STAR, 0)
        base = (star >> 48) & 0xFFFF
        if to64:
            cpu.segs[CS] = SegmentState(selector=((base + 16) & 0xFFFC) | 3, base=0,
                                        limit=0xFFFFFFFF, type=0xB, dpl=3, l=1, g=1)
            rip = cpu.regs[1]
        else:
            cpu.segs[CS] = SegmentState(selector=(base & 0xFFFC) | 3, base=0,
                                        limit=0xFFFFFFFF, type=0xB, dpl=3, db=1, g=1)
            rip = cpu.regs[1] & 0xFFFFFFFF
        cpu.segs[SS_SEG] = SegmentState(selector=((base + 8) & 0xFFFC) | 3, base=0,
                                        limit=0xFFFFFFFF, type=0x3, dpl=3, db=1, g=1)
        cpu.cpl = 3
        cpu.set_flags((cpu.regs[11] & 0x3C7FD7) | 2)
        cpu.refresh_mode()
        cpu.rip = rip
        raise END_BATCH
    return sysret


_ = (RSP, CpuFault)
