"""Far control transfers: far JMP/CALL (direct, through call gates), far RET, IRET.

The descriptor checks are segmentation.py's; this module sequences them the
way the SDM's operation sections do and moves the CPU: Vol. 2A "CALL" and
"JMP" (protected mode, call gates: §5.8.3-5.8.6 of Vol. 3A), Vol. 2B "RET"
(far, including the return to an outer privilege level), Vol. 2A "IRET".
Task switches (a task gate or TSS named by JMP/CALL, IRET with NT=1) are not
implemented: they stop the VM with a clear reason (`Unsupported`).

Every transfer is all-or-nothing: a fault part-way restores the registers
it had changed, so the faulting instruction restarts cleanly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pyvmm.cpu.state import CR0_PE, EFER_LMA, FLAG_NT, FLAG_VM
from pyvmm.engines.interp import segmentation as sg
from pyvmm.engines.interp.cpu import CS, RSP, SS_SEG, Cpu
from pyvmm.engines.interp.delivery import inner_stack
from pyvmm.engines.interp.faults import GP, NP, CpuFault
from pyvmm.engines.interp.semantics.stack import write_flags
from pyvmm.engines.interp.signals import Unsupported

MASK64 = 0xFFFFFFFFFFFFFFFF
_CANON = 1 << 47  # ((x + 2^47) >> 48) & 0xFFFF == 0 iff x is canonical (SDM Vol. 1 §3.3.7.1)


def _ip_mask(size: int) -> int:
    return MASK64 if size == 8 else (1 << (8 * size)) - 1


def _check_canonical(value: int) -> None:
    """#GP(0): a 64-bit branch target must be canonical (SDM Vol. 2A "JMP", "CALL")."""
    if (value + _CANON) >> 48 & 0xFFFF:
        raise CpuFault(GP, 0)


@contextmanager
def _transaction(cpu: Cpu) -> Iterator[None]:
    """Undo register, segment and privilege changes if a fault escapes the block."""
    saved = (cpu.regs[RSP], list(cpu.segs), cpu.cpl, cpu.rip)
    try:
        yield
    except CpuFault:
        cpu.regs[RSP], segs, cpu.cpl, cpu.rip = saved
        cpu.segs[:] = segs
        cpu.refresh_mode()
        raise


def _real_mode(cpu: Cpu) -> bool:
    return not cpu.cr0 & CR0_PE or cpu.legacy or bool(cpu.flags & FLAG_VM)


# -- far JMP / CALL ------------------------------------------------------------

def far_transfer(cpu: Cpu, selector: int, offset: int, call: bool, size: int,
                 next_ip: int) -> None:
    """Far JMP/CALL to selector:offset with `size`-byte operands (2, 4 or 8)."""
    old_cs = cpu.seg_sel[CS]
    if _real_mode(cpu):
        with _transaction(cpu):
            if call:
                cpu.push(old_cs, size)
                cpu.push(next_ip, size)
            cpu.load_real_segment(CS, selector)
            cpu.rip = offset & (0xFFFF if size == 2 else 0xFFFFFFFF)
        return
    lma = bool(cpu.efer & EFER_LMA)
    seg, desc = sg.load_code_segment(cpu.read_sys, cpu.write_sys, cpu.gdtr, cpu.ldtr,
                                     selector, cpu.cpl, "call" if call else "jmp", lma)
    if seg is None:
        if desc.type in (sg.SYS_CALL_GATE16, sg.SYS_CALL_GATE):
            _through_call_gate(cpu, selector & 0xFFFF, desc, call, next_ip)
            return
        raise Unsupported("task switch (far JMP/CALL to a task gate or TSS) not supported")
    offset &= _ip_mask(size)
    if lma and seg.l:
        _check_canonical(offset)
    elif offset > seg.limit:
        raise CpuFault(GP, 0)
    with _transaction(cpu):
        if call:
            cpu.push(old_cs, size)
            cpu.push(next_ip, size)
        cpu.install_cs(seg, cpu.cpl)
        cpu.rip = offset


def _through_call_gate(cpu: Cpu, gate_selector: int, desc: sg.Descriptor, call: bool,
                       next_ip: int) -> None:
    """Far CALL/JMP through a call gate (SDM Vol. 3A §5.8.4-5.8.5, Vol. 2A "CALL").

    Gate DPL >= max(CPL, RPL) else #GP(gate); not present #NP(gate).  The gate's
    code segment: DPL <= CPL; JMP to non-conforming code needs DPL = CPL.  A CALL
    to non-conforming code with DPL < CPL switches to the inner stack named by
    the TSS, pushes the old SS:ESP, copies `param_count` parameters (none in
    IA-32e mode), then CS:EIP — each push the gate's size.
    """
    lma = bool(cpu.efer & EFER_LMA)
    error = gate_selector & 0xFFFC
    if desc.dpl < cpu.cpl or desc.dpl < (gate_selector & 3):
        raise CpuFault(GP, error)
    if not desc.present:
        raise CpuFault(NP, error)
    high = 0
    if lma:  # IA-32e call gates are 16 bytes; the upper type field must be 0 (§5.8.3.1)
        _, high = sg.read_descriptor16(cpu.read_sys, cpu.gdtr, cpu.ldtr, gate_selector)
        if (high >> 40) & 0x1F:
            raise CpuFault(GP, error)
    gate = sg.gate_from_descriptor(desc, high, lma)
    target = gate.selector
    peek = sg.parse_descriptor(sg.read_descriptor(cpu.read_sys, cpu.gdtr, cpu.ldtr, target)) \
        if target & 0xFFFC else None
    if peek is not None and not call and peek.is_code and not peek.conforming \
            and peek.dpl != cpu.cpl:
        raise CpuFault(GP, target & 0xFFFC)
    # The "int" rules are the call-gate rules: DPL <= CPL, new CPL = DPL unless conforming.
    seg, code = sg.load_code_segment(cpu.read_sys, cpu.write_sys, cpu.gdtr, cpu.ldtr, target,
                                     cpu.cpl, "int", lma)
    assert seg is not None
    if lma and (not code.l or code.db):
        raise CpuFault(GP, target & 0xFFFC)  # IA-32e gates lead to 64-bit code only
    size = 8 if lma else (2 if gate.is_16bit else 4)
    offset = gate.offset
    if lma:
        _check_canonical(offset)
    elif offset > seg.limit:
        raise CpuFault(GP, 0)
    new_cpl = (seg.selector & 3) if call else cpu.cpl
    seg.selector = (seg.selector & 0xFFFC) | new_cpl
    old_cs, old_ss, old_sp = cpu.seg_sel[CS], cpu.seg_sel[SS_SEG], cpu.regs[RSP]
    with _transaction(cpu):
        if new_cpl < cpu.cpl:
            old_mask = cpu.stack_mask
            params = [cpu.read(SS_SEG, (old_sp + i * size) & old_mask, size)
                      for i in range(gate.param_count if not lma else 0)]
            ss_seg, new_sp = inner_stack(cpu, new_cpl, lma, 0, 0)
            cpu.install_cs(seg, new_cpl)
            cpu.set_segment(SS_SEG, ss_seg)
            cpu.regs[RSP] = new_sp
            cpu.push(old_ss, size)
            cpu.push(old_sp & _ip_mask(size) if size < 8 else old_sp, size)
            for value in reversed(params):
                cpu.push(value, size)
        else:
            cpu.install_cs(seg, new_cpl)
        if call:
            cpu.push(old_cs, size)
            cpu.push(next_ip, size)
        cpu.rip = offset


# -- far RET -------------------------------------------------------------------

def far_return(cpu: Cpu, size: int, extra: int) -> None:
    """RETF [imm16] (SDM Vol. 2B "RET" far operation), outer-level returns included."""
    mask = cpu.stack_mask
    sp = cpu.regs[RSP] & mask
    ip = cpu.read(SS_SEG, sp, size)
    selector = cpu.read(SS_SEG, (sp + size) & mask, size) & 0xFFFF
    if _real_mode(cpu):
        cpu.regs[RSP] = (cpu.regs[RSP] & ~mask) | ((sp + 2 * size + extra) & mask)
        cpu.load_real_segment(CS, selector)
        cpu.rip = ip & (0xFFFF if size == 2 else 0xFFFFFFFF)
        return
    lma = bool(cpu.efer & EFER_LMA)
    seg, _ = sg.load_code_segment(cpu.read_sys, cpu.write_sys, cpu.gdtr, cpu.ldtr, selector,
                                  cpu.cpl, "ret", lma)
    assert seg is not None
    rpl = selector & 3
    ip &= _ip_mask(size)
    if lma and seg.l:
        _check_canonical(ip)
    elif ip > seg.limit:
        raise CpuFault(GP, 0)
    with _transaction(cpu):
        if rpl > cpu.cpl:
            base = (sp + 2 * size + extra) & mask
            new_sp = cpu.read(SS_SEG, base, size)
            new_ss = cpu.read(SS_SEG, (base + size) & mask, size) & 0xFFFF
            cpu.install_cs(seg, rpl)
            cpu.load_protected_segment(SS_SEG, new_ss)
            cpu.regs[RSP] = (new_sp + extra) & cpu.stack_mask
            cpu.null_outer_data_segments()
        else:
            cpu.regs[RSP] = (cpu.regs[RSP] & ~mask) | ((sp + 2 * size + extra) & mask)
            cpu.install_cs(seg, cpu.cpl)
        cpu.rip = ip


# -- IRET ----------------------------------------------------------------------

def interrupt_return(cpu: Cpu, size: int) -> None:
    """IRET/IRETD/IRETQ (SDM Vol. 2A "IRET"): real, protected, compatibility, 64-bit."""
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
        raise CpuFault(GP, 0)  # virtual-8086 mode is not implemented
    lma = bool(cpu.efer & EFER_LMA)
    if cpu.flags & FLAG_NT and not lma:
        raise Unsupported("task switch (IRET with NT=1) not supported")
    seg, _ = sg.load_code_segment(cpu.read_sys, cpu.write_sys, cpu.gdtr, cpu.ldtr, selector,
                                  cpu.cpl, "iret", lma)
    assert seg is not None
    rpl = selector & 3
    old_cpl = cpu.cpl
    ip &= _ip_mask(size)
    if lma and seg.l:
        _check_canonical(ip)
    elif ip > seg.limit:
        raise CpuFault(GP, 0)
    # 64-bit mode always pops SS:RSP; elsewhere only on a return to an outer level.
    pops_stack = rpl > old_cpl or cpu.long64
    new_sp = new_ss = 0
    if pops_stack:
        new_sp = cpu.read(SS_SEG, (sp + 3 * size) & mask, size)
        new_ss = cpu.read(SS_SEG, (sp + 4 * size) & mask, size) & 0xFFFF
    saved_flags = cpu.get_flags()
    try:
        with _transaction(cpu):
            # Flags are written with the IRET's privilege: IOPL changes only at CPL 0,
            # IF only when CPL <= IOPL (SDM "IRET").
            write_flags(cpu, flags & ~FLAG_VM, size, allow_iopl=old_cpl == 0)
            cpu.install_cs(seg, rpl)
            if pops_stack:
                cpu.load_protected_segment(SS_SEG, new_ss)
                cpu.regs[RSP] = new_sp & cpu.stack_mask
                if rpl > old_cpl:
                    cpu.null_outer_data_segments()
            else:
                cpu.regs[RSP] = (cpu.regs[RSP] & ~mask) | ((sp + 3 * size) & mask)
            cpu.rip = ip
    except CpuFault:
        cpu.set_flags(saved_flags)
        raise
