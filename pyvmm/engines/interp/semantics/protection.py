"""Descriptor queries: LAR, LSL, VERR, VERW (SDM Vol. 2A "LAR", "LSL", Vol. 2B "VERR/VERW").

Each reads the descriptor a selector names, without loading it anywhere, and
reports through ZF: 1 when the selector is usable as asked, else 0 (and the
destination of LAR/LSL is left unchanged).  A null selector, one beyond its
table's limit, a wrong type or a privilege failure all give ZF=0 — never a
fault (page faults on the table itself still fault).  Privilege: unless the
segment is conforming code, its DPL must be >= CPL and >= the selector's RPL.
Only in protected mode: #UD in real and virtual-8086 mode.
"""

from __future__ import annotations

from iced_x86 import Mnemonic

from pyvmm.cpu.state import CR0_PE, EFER_LMA, FLAG_VM
from pyvmm.engines.interp import flags as fl
from pyvmm.engines.interp import segmentation as sg
from pyvmm.engines.interp.builder import Handler, Insn
from pyvmm.engines.interp.cpu import Cpu
from pyvmm.engines.interp.faults import GP, UD, CpuFault
from pyvmm.engines.interp.semantics import semantic

# System descriptor types each query accepts (SDM Vol. 2A "LAR", "LSL" operation tables).
LAR_TYPES_LEGACY = frozenset({0x1, 0x2, 0x3, 0x4, 0x5, 0x9, 0xB, 0xC})
LAR_TYPES_LONG = frozenset({0x2, 0x9, 0xB, 0xC})
LSL_TYPES_LEGACY = frozenset({0x1, 0x2, 0x3, 0x9, 0xB})
LSL_TYPES_LONG = frozenset({0x2, 0x9, 0xB})
LAR_MASK32 = 0x00F0FF00  # access-rights bytes of the descriptor's high dword, limit masked
LAR_MASK16 = 0xFF00


def _descriptor(cpu: Cpu, selector: int) -> sg.Descriptor | None:
    """The descriptor `selector` names, or None if null or beyond the table's limit."""
    if selector & 0xFFFC == 0:
        return None
    try:
        raw = sg.read_descriptor(cpu.read_sys, cpu.gdtr, cpu.ldtr, selector)
    except CpuFault as fault:
        if fault.vector == GP:
            return None
        raise
    return sg.parse_descriptor(raw)


def _privileged_ok(cpu: Cpu, desc: sg.Descriptor, selector: int) -> bool:
    return desc.conforming or (desc.dpl >= cpu.cpl and desc.dpl >= selector & 3)


def _protected_only(cpu: Cpu) -> None:
    if not cpu.cr0 & CR0_PE or cpu.flags & FLAG_VM:
        raise CpuFault(UD)


def _set_zf(cpu: Cpu, ok: bool) -> None:
    cpu.update_flags(fl.ZF, fl.ZF if ok else 0)


def _query(b: Insn, limit: bool) -> Handler:
    cpu = b.cpu
    get = b.reader(1)
    put = b.writer(0)
    size = b.size(0)
    next_ip = b.next_ip

    def handler() -> None:
        _protected_only(cpu)
        selector = get() & 0xFFFF
        desc = _descriptor(cpu, selector)
        ok = desc is not None and _privileged_ok(cpu, desc, selector)
        if ok and desc is not None and desc.is_system:
            lma = bool(cpu.efer & EFER_LMA)
            if limit:
                ok = desc.type in (LSL_TYPES_LONG if lma else LSL_TYPES_LEGACY)
            else:
                ok = desc.type in (LAR_TYPES_LONG if lma else LAR_TYPES_LEGACY)
        if ok and desc is not None:
            if limit:
                put(desc.limit & (0xFFFF if size == 2 else 0xFFFFFFFF))
            else:
                put((desc.raw >> 32) & (LAR_MASK16 if size == 2 else LAR_MASK32))
        _set_zf(cpu, ok)
        cpu.rip = next_ip
    return handler


@semantic(Mnemonic.LAR)
def _lar(b: Insn) -> Handler:
    return _query(b, limit=False)


@semantic(Mnemonic.LSL)
def _lsl(b: Insn) -> Handler:
    return _query(b, limit=True)


@semantic(Mnemonic.VERR, Mnemonic.VERW)
def _verify(b: Insn) -> Handler:
    cpu = b.cpu
    get = b.reader(0)
    write = b.mnemonic == Mnemonic.VERW
    next_ip = b.next_ip

    def handler() -> None:
        _protected_only(cpu)
        selector = get() & 0xFFFF
        desc = _descriptor(cpu, selector)
        ok = desc is not None and not desc.is_system and _privileged_ok(cpu, desc, selector)
        if ok and desc is not None:
            if write:  # VERW: writable data only
                ok = desc.is_data and bool(desc.type & sg.TYPE_WRITABLE)
            else:  # VERR: data, or readable code
                ok = desc.is_data or bool(desc.type & sg.TYPE_READABLE)
        _set_zf(cpu, ok)
        cpu.rip = next_ip
    return handler
