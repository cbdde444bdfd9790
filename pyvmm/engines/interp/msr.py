"""Model-specific registers the interpreter implements (SDM Vol. 4, Table 2-2).

Unknown indices raise #GP(0), as RDMSR/WRMSR do for an unimplemented MSR.
RDTSC/IA32_TSC count virtual-clock nanoseconds (a 1 GHz TSC).
With a local APIC (`cpu.apic`, the board's), IA32_APIC_BASE (0x1B),
IA32_TSC_DEADLINE (0x6E0) and the x2APIC registers (0x800-0x8FF) are the
APIC's (SDM Vol. 3A "Local APIC Status and
Location", "TSC-Deadline Mode"): a write it refuses (reserved bits) is #GP(0).
Without one, IA32_APIC_BASE is a plain value and 0x6E0 does not exist.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyvmm.cpu.state import (
    CR0_PG,
    EFER_LMA,
    EFER_LME,
    EFER_NXE,
    EFER_SCE,
    MSR_CSTAR,
    MSR_FS_BASE,
    MSR_GS_BASE,
    MSR_IA32_APIC_BASE,
    MSR_IA32_EFER,
    MSR_IA32_PAT,
    MSR_IA32_SYSENTER_CS,
    MSR_IA32_SYSENTER_EIP,
    MSR_IA32_SYSENTER_ESP,
    MSR_IA32_TSC,
    MSR_KERNEL_GS_BASE,
    MSR_LSTAR,
    MSR_SFMASK,
    MSR_STAR,
    MSR_TSC_AUX,
)
from pyvmm.engines.interp.faults import GP, CpuFault

if TYPE_CHECKING:
    from pyvmm.engines.interp.cpu import Cpu

FS, GS = 4, 5
MSR_IA32_TSC_DEADLINE = 0x6E0
# The APIC's MSRs: IA32_APIC_BASE, IA32_TSC_DEADLINE and the x2APIC registers
# 0x800-0x8FF (SDM Vol. 3A "x2APIC Register Address Space").
APIC_MSRS = frozenset({MSR_IA32_APIC_BASE, MSR_IA32_TSC_DEADLINE, *range(0x800, 0x900)})
# MSRs stored as plain values in Cpu.msrs (with their reset value).
PLAIN = {MSR_STAR: 0, MSR_LSTAR: 0, MSR_CSTAR: 0, MSR_SFMASK: 0, MSR_KERNEL_GS_BASE: 0,
         MSR_IA32_SYSENTER_CS: 0, MSR_IA32_SYSENTER_ESP: 0, MSR_IA32_SYSENTER_EIP: 0,
         MSR_IA32_PAT: 0x0007040600070406, MSR_TSC_AUX: 0}
EFER_WRITABLE = EFER_SCE | EFER_LME | EFER_NXE

# Identification and feature MSRs early kernel code reads (SDM Vol. 4 Table 2-2).
MSR_IA32_PLATFORM_ID = 0x17  # platform id bits 52:50 (read-only)
MSR_IA32_FEATURE_CONTROL = 0x3A  # bit 0 lock; VMX enables (locked at reset by firmware)
MSR_IA32_BIOS_SIGN_ID = 0x8B  # microcode revision in bits 63:32 (a write 0 starts a read)
MSR_IA32_MTRRCAP = 0xFE  # variable-range count, fixed/WC support (read-only)
MSR_IA32_MCG_CAP = 0x179  # machine-check bank count and capabilities (read-only)
MSR_IA32_MISC_ENABLE = 0x1A0  # bit 0: fast-string operations enabled
FEATURE_CONTROL_LOCK = 1 << 0  # writes #GP once set (SDM Vol. 4 Table 2-2, 3AH)
MISC_ENABLE_FAST_STRINGS = 1 << 0
# index -> (value RDMSR returns, how WRMSR behaves: "ignore" or "gp")
FIXED: dict[int, tuple[int, str]] = {
    MSR_IA32_PLATFORM_ID: (0, "gp"),
    MSR_IA32_FEATURE_CONTROL: (FEATURE_CONTROL_LOCK, "gp"),  # locked, no VMX/SMX
    MSR_IA32_BIOS_SIGN_ID: (0, "ignore"),  # no microcode update loaded
    MSR_IA32_MTRRCAP: (0, "gp"),  # no MTRRs
    MSR_IA32_MCG_CAP: (0, "gp"),  # no machine-check banks
    MSR_IA32_MISC_ENABLE: (MISC_ENABLE_FAST_STRINGS, "ignore"),
}


def read_tsc(cpu: Cpu) -> int:
    clock = getattr(cpu, "clock", None)
    now = clock.now_ns() if clock is not None else 0
    return (now + cpu.tsc_offset) & 0xFFFFFFFFFFFFFFFF


def read_msr(cpu: Cpu, index: int) -> int:
    apic = cpu.apic
    if apic is not None and index in APIC_MSRS:
        value = apic.rdmsr(index)
        if value is None:
            raise CpuFault(GP, 0)  # an x2APIC MSR not readable in this mode
        return value
    if index == MSR_IA32_EFER:
        return cpu.efer
    if index == MSR_FS_BASE:
        return cpu.segs[FS].base
    if index == MSR_GS_BASE:
        return cpu.segs[GS].base
    if index == MSR_IA32_APIC_BASE:
        return cpu.apic_base
    if index == MSR_IA32_TSC:
        return read_tsc(cpu)
    if index in PLAIN:
        return cpu.msrs.get(index, PLAIN[index])
    if index in FIXED:
        return FIXED[index][0]
    raise CpuFault(GP, 0)


def write_msr(cpu: Cpu, index: int, value: int) -> None:
    apic = cpu.apic
    if apic is not None and index in APIC_MSRS:
        if not apic.wrmsr(index, value):
            raise CpuFault(GP, 0)
        return
    if index == MSR_IA32_EFER:
        if value & ~(EFER_WRITABLE | EFER_LMA):
            raise CpuFault(GP, 0)
        if (value ^ cpu.efer) & EFER_LME and cpu.cr0 & CR0_PG:
            raise CpuFault(GP, 0)  # LME cannot change while paging is on (SDM §9.8.5)
        cpu.efer = (value & EFER_WRITABLE) | (cpu.efer & EFER_LMA)
        cpu.paging_changed()
    elif index in (MSR_FS_BASE, MSR_GS_BASE):
        seg = cpu.segs[FS if index == MSR_FS_BASE else GS]
        seg.base = value
        cpu.refresh_mode()
    elif index == MSR_IA32_APIC_BASE:
        cpu.apic_base = value
    elif index == MSR_IA32_TSC:
        cpu.tsc_offset = value - read_tsc(cpu) + cpu.tsc_offset
    elif index in PLAIN:
        cpu.msrs[index] = value
    elif index in FIXED and FIXED[index][1] == "ignore":
        pass
    else:
        raise CpuFault(GP, 0)


def swapgs(cpu: Cpu) -> None:
    """Exchange GS.base with IA32_KERNEL_GS_BASE (SDM "SWAPGS")."""
    kernel = cpu.msrs.get(MSR_KERNEL_GS_BASE, 0)
    cpu.msrs[MSR_KERNEL_GS_BASE] = cpu.segs[GS].base
    cpu.segs[GS].base = kernel
    cpu.refresh_mode()
