"""Segment descriptors: reading them from the GDT/LDT and loading segment registers.

A minimal, self-contained version of the protected-mode checks the core
needs (SDM Vol. 3A §3.4.5 descriptor format, §5.5-5.8 privilege checks,
and the MOV Sreg / far transfer pseudo-code in Vol. 2).
"""

from __future__ import annotations

from pyvmm.cpu.state import SegmentState
from pyvmm.engines.interp.cpu import CS, SS_SEG, Cpu
from pyvmm.engines.interp.faults import GP, NP, SS, CpuFault

ACCESSED = 1 << 40  # type bit 0 in the descriptor's access byte


def table_for(cpu: Cpu, selector: int) -> tuple[int, int]:
    """(base, limit) of the descriptor table the selector's TI bit names."""
    if selector & 4:
        if cpu.ldtr.unusable or not cpu.ldtr.present:
            raise CpuFault(GP, selector & 0xFFFC)
        return cpu.ldtr.base, cpu.ldtr.limit
    return cpu.gdtr.base, cpu.gdtr.limit


def read_descriptor(cpu: Cpu, selector: int) -> tuple[int, int]:
    """The raw 8-byte descriptor and its linear address; #GP(selector) past the limit."""
    base, limit = table_for(cpu, selector)
    offset = selector & 0xFFF8
    if offset + 7 > limit:
        raise CpuFault(GP, selector & 0xFFFC)
    address = base + offset
    return cpu.read_sys(address, 8), address


def to_segment(selector: int, raw: int) -> SegmentState:
    """Descriptor cache contents for a code/data/system descriptor (SDM Fig. 3-8)."""
    limit = (raw & 0xFFFF) | ((raw >> 32) & 0xF0000)
    g = (raw >> 55) & 1
    if g:
        limit = (limit << 12) | 0xFFF
    base = ((raw >> 16) & 0xFFFFFF) | (((raw >> 56) & 0xFF) << 24)
    return SegmentState(selector=selector, base=base, limit=limit, type=(raw >> 40) & 0xF,
                        s=(raw >> 44) & 1, dpl=(raw >> 45) & 3, present=(raw >> 47) & 1,
                        avl=(raw >> 52) & 1, l=(raw >> 53) & 1, db=(raw >> 54) & 1, g=g)


def set_accessed(cpu: Cpu, raw: int, address: int) -> None:
    if not raw & ACCESSED:
        cpu.write_sys(address + 5, 1, (raw >> 40) & 0xFF | 1)


def null_segment(selector: int, dpl: int = 0) -> SegmentState:
    return SegmentState(selector=selector, base=0, limit=0, type=0, s=0, dpl=dpl,
                        present=0, unusable=1)


def load_data_segment(cpu: Cpu, index: int, selector: int) -> None:
    """MOV/POP to DS/ES/FS/GS/SS in protected mode (SDM Vol. 2B "MOV" operation)."""
    selector &= 0xFFFF
    rpl = selector & 3
    cpl = cpu.cpl
    if selector & 0xFFFC == 0:
        if index == SS_SEG and not (cpu.long64 and cpl != 3 and rpl == cpl):
            raise CpuFault(GP, 0)
        cpu.set_segment(index, null_segment(selector, cpl if index == SS_SEG else 0))
        return
    raw, address = read_descriptor(cpu, selector)
    seg = to_segment(selector, raw)
    code = seg.type & 0x8
    if index == SS_SEG:
        if rpl != cpl or seg.dpl != cpl or not seg.s or code or not seg.type & 0x2:
            raise CpuFault(GP, selector & 0xFFFC)
        if not seg.present:
            raise CpuFault(SS, selector & 0xFFFC)
    else:
        if not seg.s or (code and not seg.type & 0x2):
            raise CpuFault(GP, selector & 0xFFFC)
        conforming_code = code and seg.type & 0x4
        if not conforming_code and (rpl > seg.dpl or cpl > seg.dpl):
            raise CpuFault(GP, selector & 0xFFFC)
        if not seg.present:
            raise CpuFault(NP, selector & 0xFFFC)
    set_accessed(cpu, raw, address)
    seg.type |= 1
    cpu.set_segment(index, seg)


def code_descriptor(cpu: Cpu, selector: int) -> tuple[SegmentState, int, int]:
    """Read a code-segment descriptor for a far transfer: (segment, raw, address)."""
    if selector & 0xFFFC == 0:
        raise CpuFault(GP, 0)
    raw, address = read_descriptor(cpu, selector)
    return to_segment(selector & 0xFFFF, raw), raw, address


def check_code_target(cpu: Cpu, seg: SegmentState, selector: int, new_cpl: int) -> None:
    """Type/privilege/present checks for a far JMP/CALL/RET/IRET target (SDM §5.8)."""
    if not seg.s or not seg.type & 0x8:
        raise CpuFault(GP, selector & 0xFFFC)
    if seg.type & 0x4:  # conforming: DPL <= CPL
        if seg.dpl > new_cpl:
            raise CpuFault(GP, selector & 0xFFFC)
    elif seg.dpl != new_cpl:
        raise CpuFault(GP, selector & 0xFFFC)
    if not seg.present:
        raise CpuFault(NP, selector & 0xFFFC)


def load_cs(cpu: Cpu, seg: SegmentState, raw: int, address: int, cpl: int) -> None:
    """Install CS with its RPL set to the new CPL, and the new CPL."""
    set_accessed(cpu, raw, address)
    seg.type |= 1
    seg.selector = (seg.selector & 0xFFFC) | cpl
    cpu.segs[CS] = seg
    cpu.cpl = cpl
    cpu.refresh_mode()


def check_data_segments_after_privilege_drop(cpu: Cpu) -> None:
    """On a return to an outer level, data segments the new CPL may not use become null."""
    from pyvmm.engines.interp.cpu import DS, ES, FS, GS
    for index in (ES, DS, FS, GS):
        seg = cpu.segs[index]
        if seg.unusable or not seg.s:
            continue
        conforming_code = seg.type & 0x8 and seg.type & 0x4
        if not conforming_code and seg.dpl < cpu.cpl:
            cpu.set_segment(index, null_segment(0))
