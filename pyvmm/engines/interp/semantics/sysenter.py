"""SYSENTER / SYSEXIT: fast calls to and returns from ring 0 (SDM Vol. 2B "SYSENTER",
"SYSEXIT").

The target segments are not read from the GDT: the processor loads fixed flat
descriptor caches whose selectors derive from IA32_SYSENTER_CS (MSR 0x174).
SYSENTER: CS = SYSENTER_CS & 0xFFFC, SS = CS + 8, both DPL 0; RSP/RIP from
IA32_SYSENTER_ESP/EIP (0x175/0x176); clears VM, IF and RF; CS is 64-bit code
when IA-32e mode is active (Intel behaviour), else 32-bit.  SYSEXIT (CPL 0
only): CS = SYSENTER_CS + 16 (+32 with REX.W, 64-bit code), SS = CS + 8, RPL
3; RIP = RDX, RSP = RCX.  #GP(0) in real mode or with SYSENTER_CS[15:2] = 0.
"""

from __future__ import annotations

from iced_x86 import Mnemonic

from pyvmm.cpu.state import (
    CR0_PE,
    EFER_LMA,
    FLAG_IF,
    FLAG_RF,
    FLAG_VM,
    MSR_IA32_SYSENTER_CS,
    MSR_IA32_SYSENTER_EIP,
    MSR_IA32_SYSENTER_ESP,
    SegmentState,
)
from pyvmm.engines.interp.builder import Handler, Insn
from pyvmm.engines.interp.cpu import CS, RSP, SS_SEG
from pyvmm.engines.interp.faults import GP, CpuFault
from pyvmm.engines.interp.semantics import semantic
from pyvmm.engines.interp.signals import END_BATCH

RCX, RDX = 1, 2
_CANON = 1 << 47  # ((x + 2^47) >> 48) & 0xFFFF is 0 iff x is canonical


def _flat(selector: int, code: bool, dpl: int, long_code: bool) -> SegmentState:
    """The fixed flat descriptor cache SYSENTER/SYSEXIT load (base 0, limit 4 GiB, G=1)."""
    return SegmentState(selector=selector, base=0, limit=0xFFFFFFFF, type=0xB if code else 0x3,
                        s=1, dpl=dpl, present=1, l=1 if long_code else 0,
                        db=0 if long_code else 1, g=1)


@semantic(Mnemonic.SYSENTER)
def _sysenter(b: Insn) -> Handler:
    cpu = b.cpu

    def sysenter() -> None:
        cs = cpu.msrs.get(MSR_IA32_SYSENTER_CS, 0) & 0xFFFF
        if not cpu.cr0 & CR0_PE or cs & 0xFFFC == 0:
            raise CpuFault(GP, 0)
        lma = bool(cpu.efer & EFER_LMA)
        mask = 0xFFFFFFFFFFFFFFFF if lma else 0xFFFFFFFF
        cpu.flags &= ~(FLAG_VM | FLAG_IF | FLAG_RF)
        cpu.segs[CS] = _flat(cs & 0xFFFC, True, 0, lma)
        cpu.segs[SS_SEG] = _flat((cs & 0xFFFC) + 8, False, 0, False)
        cpu.cpl = 0
        cpu.refresh_mode()
        cpu.regs[RSP] = cpu.msrs.get(MSR_IA32_SYSENTER_ESP, 0) & mask
        cpu.rip = cpu.msrs.get(MSR_IA32_SYSENTER_EIP, 0) & mask
        raise END_BATCH  # IF and the code context changed
    return sysenter


@semantic(Mnemonic.SYSEXIT, Mnemonic.SYSEXITQ)
def _sysexit(b: Insn) -> Handler:
    cpu = b.cpu
    to64 = b.mnemonic == Mnemonic.SYSEXITQ

    def sysexit() -> None:
        cs = cpu.msrs.get(MSR_IA32_SYSENTER_CS, 0) & 0xFFFF
        if not cpu.cr0 & CR0_PE or cpu.flags & FLAG_VM or cpu.cpl != 0 or cs & 0xFFFC == 0:
            raise CpuFault(GP, 0)
        if to64:
            rip, rsp = cpu.regs[RDX], cpu.regs[RCX]
            if (rip + _CANON) >> 48 & 0xFFFF or (rsp + _CANON) >> 48 & 0xFFFF:
                raise CpuFault(GP, 0)
            code_sel = ((cs + 32) & 0xFFFC) | 3
        else:
            rip, rsp = cpu.regs[RDX] & 0xFFFFFFFF, cpu.regs[RCX] & 0xFFFFFFFF
            code_sel = ((cs + 16) & 0xFFFC) | 3
        cpu.segs[CS] = _flat(code_sel, True, 3, to64)
        cpu.segs[SS_SEG] = _flat(code_sel + 8, False, 3, False)
        cpu.cpl = 3
        cpu.refresh_mode()
        cpu.regs[RSP] = rsp
        cpu.rip = rip
        raise END_BATCH
    return sysexit
