"""Delivering exceptions and interrupts through the IVT or the IDT.

Real mode: the IVT entry (IP, CS) at IDTR.base + 4*vector; FLAGS, CS, IP are
pushed and IF/TF/AC cleared (SDM Vol. 3A §20.1.4).  Protected and long mode:
interrupt/trap gates, a stack switch through the TSS when the handler runs
at an inner privilege level (or always, with an IST, in long mode), and the
frame of SDM Vol. 3A §6.12.1 / §6.14.2 (Figures 6-4 and 6-9).
"""

from __future__ import annotations

from pyvmm.cpu.state import (
    CR0_PE,
    EFER_LMA,
    FLAG_AC,
    FLAG_IF,
    FLAG_NT,
    FLAG_RF,
    FLAG_TF,
    FLAG_VM,
    SegmentState,
)
from pyvmm.engines.interp import descriptors as desc
from pyvmm.engines.interp.cpu import CS, RSP, SS_SEG, Cpu
from pyvmm.engines.interp.faults import GP, NP, TS, CpuFault

GATE_TASK = 0x5
GATE_INT16, GATE_TRAP16 = 0x6, 0x7
GATE_INT32, GATE_TRAP32 = 0xE, 0xF  # in long mode: the 64-bit gates


def deliver(cpu: Cpu, vector: int, return_ip: int, error_code: int | None = None,
            software: bool = False, external: bool = False) -> None:
    """Transfer control to the handler of `vector` (RIP = its first instruction)."""
    if not cpu.cr0 & CR0_PE:
        _deliver_real(cpu, vector, return_ip)
        return
    if cpu.flags & FLAG_VM:
        raise CpuFault(GP, 0)  # virtual-8086 mode is not supported by this interpreter
    saved = (cpu.regs[RSP], list(cpu.segs), cpu.cpl, cpu.flags, cpu.rip)
    try:
        _deliver_protected(cpu, vector, return_ip, error_code, software, external)
    except CpuFault:
        rsp, segs, cpl, flags, rip = saved
        cpu.regs[RSP] = rsp
        cpu.segs[:] = segs
        cpu.cpl = cpl
        cpu.flags = flags
        cpu.rip = rip
        cpu.refresh_mode()
        raise


def _deliver_real(cpu: Cpu, vector: int, return_ip: int) -> None:
    entry = cpu.idtr.base + vector * 4
    if not cpu.legacy and vector * 4 + 3 > cpu.idtr.limit:
        raise CpuFault(GP, 0)
    ip = cpu.read_sys(entry, 2)
    cs = cpu.read_sys(entry + 2, 2)
    flags = cpu.get_flags() & 0xFFFF
    if cpu.is_8086:
        flags |= 0xF000  # FLAGS bits 12-15 always read as 1 on the 8086
    elif cpu.is_286:
        flags &= 0x0FFF  # ... and as 0 on the 80286 in real mode
    cpu.push(flags, 2)
    cpu.push(cpu.seg_sel[CS], 2)
    cpu.push(return_ip & 0xFFFF, 2)
    cpu.flags &= ~(FLAG_IF | FLAG_TF | FLAG_AC)
    cpu.load_real_segment(CS, cs)
    cpu.rip = ip


def _deliver_protected(cpu: Cpu, vector: int, return_ip: int, error_code: int | None,
                       software: bool, external: bool) -> None:
    long_mode = not cpu.legacy and bool(cpu.efer & EFER_LMA)
    ext = 1 if external else 0
    idt_code = vector * 8 + 2 + ext
    entry_size = 16 if long_mode else 8
    if vector * entry_size + entry_size - 1 > cpu.idtr.limit:
        raise CpuFault(GP, idt_code)
    address = cpu.idtr.base + vector * entry_size
    lo = cpu.read_sys(address, 8)
    hi = cpu.read_sys(address + 8, 8) if long_mode else 0
    gate_type = (lo >> 40) & 0xF
    gate_dpl = (lo >> 45) & 3
    present = (lo >> 47) & 1
    valid = (GATE_INT32, GATE_TRAP32) if long_mode else (GATE_INT16, GATE_TRAP16, GATE_INT32,
                                                          GATE_TRAP32)
    if gate_type not in valid or (lo >> 44) & 1:
        raise CpuFault(GP, idt_code)  # task gates are not supported either
    if software and gate_dpl < cpu.cpl:
        raise CpuFault(GP, idt_code)
    if not present:
        raise CpuFault(NP, idt_code)
    selector = (lo >> 16) & 0xFFFF
    offset = (lo & 0xFFFF) | (((lo >> 48) & 0xFFFF) << 16)
    if long_mode:
        offset |= (hi & 0xFFFFFFFF) << 32
    ist = (lo >> 32) & 7 if long_mode else 0

    if selector & 0xFFFC == 0:
        raise CpuFault(GP, ext)
    seg, raw, seg_address = desc.code_descriptor(cpu, selector)
    if not seg.s or not seg.type & 0x8 or seg.dpl > cpu.cpl:
        raise CpuFault(GP, (selector & 0xFFFC) | ext)
    if not seg.present:
        raise CpuFault(NP, (selector & 0xFFFC) | ext)
    if long_mode and (not seg.l or seg.db):
        raise CpuFault(GP, (selector & 0xFFFC) | ext)
    new_cpl = cpu.cpl if seg.type & 0x4 else seg.dpl

    old_cpl = cpu.cpl
    old_cs = cpu.seg_sel[CS]
    old_ss = cpu.seg_sel[SS_SEG]
    old_rsp = cpu.regs[RSP]
    flags = cpu.get_flags()
    gate32 = gate_type in (GATE_INT32, GATE_TRAP32)
    size = 8 if long_mode else (4 if gate32 else 2)

    switch = new_cpl < old_cpl or (long_mode and ist)
    if switch:
        new_ss, new_rsp = _tss_stack(cpu, new_cpl, long_mode, ist, ext)
    desc.load_cs(cpu, seg, raw, seg_address, new_cpl)
    if switch:
        if long_mode:
            ss = SegmentState(selector=new_ss, base=0, limit=0xFFFFFFFF, type=0x3, dpl=new_cpl,
                              unusable=1 if new_ss & 0xFFFC == 0 else 0, present=1)
            cpu.set_segment(SS_SEG, ss)
            cpu.regs[RSP] = new_rsp
        else:
            _load_tss_ss(cpu, new_ss, new_cpl, ext)
            cpu.regs[RSP] = new_rsp
    if long_mode:
        cpu.regs[RSP] &= ~0xF  # the 64-bit frame is 16-byte aligned (SDM §6.14.2)
    if long_mode or switch:
        cpu.push(old_ss, size)
        cpu.push(old_rsp & (0xFFFFFFFFFFFFFFFF if size == 8 else (1 << (8 * size)) - 1), size)
    cpu.push(flags, size)
    cpu.push(old_cs, size)
    cpu.push(return_ip, size)
    if error_code is not None:
        cpu.push(error_code, size)
    clear = FLAG_TF | FLAG_NT | FLAG_RF | FLAG_VM
    if gate_type in (GATE_INT16, GATE_INT32):
        clear |= FLAG_IF
    cpu.flags &= ~clear
    cpu.rip = offset if long_mode else offset & (0xFFFFFFFF if gate32 else 0xFFFF)


def _tss_stack(cpu: Cpu, cpl: int, long_mode: bool, ist: int, ext: int) -> tuple[int, int]:
    """(SS, RSP) for privilege level `cpl` from the current TSS (SDM Figs. 7-2, 7-11)."""
    tr = cpu.tr
    if long_mode:
        offset = 0x24 + 8 * (ist - 1) if ist else 4 + 8 * cpl
        if offset + 7 > tr.limit:
            raise CpuFault(TS, (tr.selector & 0xFFFC) | ext)
        return cpl, cpu.read_sys(tr.base + offset, 8)
    if tr.type in (0x1, 0x3):  # 16-bit TSS
        offset = 2 + 4 * cpl
        if offset + 3 > tr.limit:
            raise CpuFault(TS, (tr.selector & 0xFFFC) | ext)
        return cpu.read_sys(tr.base + offset + 2, 2), cpu.read_sys(tr.base + offset, 2)
    offset = 4 + 8 * cpl
    if offset + 5 > tr.limit:
        raise CpuFault(TS, (tr.selector & 0xFFFC) | ext)
    return cpu.read_sys(tr.base + offset + 4, 2), cpu.read_sys(tr.base + offset, 4)


def _load_tss_ss(cpu: Cpu, selector: int, cpl: int, ext: int) -> None:
    """Load the inner stack segment named by the TSS; faults are #TS (SDM §6.12.1.1)."""
    if selector & 0xFFFC == 0:
        raise CpuFault(TS, ext)
    try:
        raw, address = desc.read_descriptor(cpu, selector)
    except CpuFault as fault:
        raise CpuFault(TS, (selector & 0xFFFC) | ext) from fault
    seg = desc.to_segment(selector, raw)
    if (selector & 3) != cpl or seg.dpl != cpl or not seg.s or seg.type & 0x8 \
            or not seg.type & 0x2:
        raise CpuFault(TS, (selector & 0xFFFC) | ext)
    if not seg.present:
        raise CpuFault(12, (selector & 0xFFFC) | ext)
    desc.set_accessed(cpu, raw, address)
    seg.type |= 1
    cpu.set_segment(SS_SEG, seg)
