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
from pyvmm.engines.interp import segmentation as sg
from pyvmm.engines.interp.cpu import CS, RSP, SS_SEG, Cpu
from pyvmm.engines.interp.faults import GP, SS, TS, CpuFault
from pyvmm.engines.interp.signals import Unsupported


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
    gate = sg.read_gate(cpu.read_sys, cpu.idtr, vector, long_mode, external=bool(ext),
                        software_cpl=cpu.cpl if software else None)
    if gate.is_task_gate:
        raise Unsupported(f"task switch (task gate for vector {vector:#x}) not supported")
    seg, code = sg.load_code_segment(cpu.read_sys, cpu.write_sys, cpu.gdtr, cpu.ldtr,
                                     gate.selector, cpu.cpl, "int", long_mode, bool(ext))
    assert seg is not None
    if long_mode and (not code.l or code.db):
        raise CpuFault(GP, (gate.selector & 0xFFFC) | ext)  # handlers run in 64-bit mode
    new_cpl = seg.selector & 3

    old_cs = cpu.seg_sel[CS]
    old_ss = cpu.seg_sel[SS_SEG]
    old_rsp = cpu.regs[RSP]
    flags = cpu.get_flags()
    size = 8 if long_mode else (2 if gate.is_16bit else 4)

    switch = new_cpl < cpu.cpl or (long_mode and gate.ist)
    if switch:
        ss_seg, new_rsp = inner_stack(cpu, new_cpl, long_mode, gate.ist, ext)
    cpu.install_cs(seg, new_cpl)
    if switch:
        cpu.set_segment(SS_SEG, ss_seg)
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
    if not gate.is_trap:
        clear |= FLAG_IF
    cpu.flags &= ~clear
    cpu.rip = gate.offset if long_mode else gate.offset & (0xFFFF if gate.is_16bit
                                                          else 0xFFFFFFFF)


def inner_stack(cpu: Cpu, cpl: int, long_mode: bool, ist: int, ext: int
                ) -> tuple[SegmentState, int]:
    """The stack for a switch to privilege `cpl`: (SS cache to load, new RSP).

    From the current TSS (SDM Vol. 3A §6.12.1, §7.7; Figs. 7-2, 7-11).  IA-32e
    mode loads a null SS whose RPL is the new CPL and an RSP (or ISTn) from the
    64-bit TSS.  Elsewhere the TSS's SS must be a present, writable data segment
    with RPL = DPL = new CPL: other failures are #TS(SS selector | EXT), a
    not-present one #SS (Vol. 2A "CALL", "INT n" operation).
    """
    new_ss, new_rsp = sg.tss_stack(cpu.read_sys, cpu.tr, cpl, long_mode, ist, bool(ext))
    if long_mode:
        if (new_rsp + (1 << 47)) >> 48 & 0xFFFF:
            raise CpuFault(SS, ext)  # a non-canonical stack pointer from the TSS
        return sg.null_segment(cpl, dpl=cpl), new_rsp
    if new_ss & 0xFFFC == 0:
        raise CpuFault(TS, ext)
    try:
        seg = sg.load_segment(cpu.read_sys, cpu.write_sys, cpu.gdtr, cpu.ldtr, "ss", new_ss,
                              cpl, False)
    except CpuFault as fault:
        if fault.vector == GP:
            raise CpuFault(TS, (new_ss & 0xFFFC) | ext) from None
        if fault.vector == SS:
            raise CpuFault(SS, (new_ss & 0xFFFC) | ext) from None
        raise
    return seg, new_rsp
