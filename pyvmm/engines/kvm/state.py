"""CpuState <-> KVM register structures (kvm_regs, kvm_sregs, MSRs, FPU, debug regs).

Pure conversions, no ioctls: the engine fetches/stores the structs.  The
segment hidden parts map one to one onto struct kvm_segment (whose `limit`
is, like CpuState's, the byte-granular effective limit).
"""

from __future__ import annotations

from pyvmm.cpu import fxsave
from pyvmm.cpu.fxsave import FXSAVE_SIZE
from pyvmm.cpu.state import (
    GPR_NAMES,
    MSR_CSTAR,
    MSR_FS_BASE,
    MSR_GS_BASE,
    MSR_IA32_APIC_BASE,
    MSR_IA32_EFER,
    MSR_IA32_PAT,
    MSR_IA32_SYSENTER_CS,
    MSR_IA32_SYSENTER_EIP,
    MSR_IA32_SYSENTER_ESP,
    MSR_KERNEL_GS_BASE,
    MSR_LSTAR,
    MSR_SFMASK,
    MSR_STAR,
    SEGMENT_NAMES,
    CpuState,
    SegmentState,
    TableRegister,
)
from pyvmm.engines.kvm import ioctls as k

_SEGMENT_FIELDS = ("base", "limit", "selector", "type", "present", "dpl", "db", "s", "l",
                   "g", "avl", "unusable")

# MSRs always saved/restored (those KVM supports; filtered by KVM_GET_MSR_INDEX_LIST).
# IA32_TSC is left out on purpose: it moves on its own, so it is only carried
# when the caller puts it in CpuState.msrs.
DEFAULT_MSRS: tuple[int, ...] = (
    MSR_IA32_SYSENTER_CS, MSR_IA32_SYSENTER_ESP, MSR_IA32_SYSENTER_EIP,
    MSR_STAR, MSR_LSTAR, MSR_CSTAR, MSR_SFMASK, MSR_KERNEL_GS_BASE, MSR_IA32_PAT,
)

# MSRs that CpuState holds in dedicated fields (sregs carries them): never in `msrs`.
FIELD_MSRS = frozenset({MSR_FS_BASE, MSR_GS_BASE, MSR_IA32_EFER, MSR_IA32_APIC_BASE})

# FXSAVE image layout, 64-bit form: one definition, in pyvmm.cpu.fxsave.
_FX_HEAD = fxsave.HEAD
_FX_ST0 = fxsave.ST0
_FX_XMM0 = fxsave.XMM0


# -- general registers -------------------------------------------------------

def regs_from_state(state: CpuState) -> k.kvm_regs:
    regs = k.kvm_regs()
    for name, value in zip(GPR_NAMES, state.gprs, strict=True):
        setattr(regs, name, value)
    regs.rip = state.rip
    regs.rflags = state.rflags
    return regs


def regs_into_state(regs: k.kvm_regs, state: CpuState) -> None:
    state.gprs = [getattr(regs, name) for name in GPR_NAMES]
    state.rip = regs.rip
    state.rflags = regs.rflags


# -- segments and system registers ------------------------------------------

def segment_to_kvm(seg: SegmentState, out: k.kvm_segment) -> None:
    for name in _SEGMENT_FIELDS:
        setattr(out, name, getattr(seg, name))


def segment_from_kvm(seg: k.kvm_segment) -> SegmentState:
    return SegmentState(**{name: getattr(seg, name) for name in _SEGMENT_FIELDS})


def sregs_from_state(state: CpuState) -> k.kvm_sregs:
    sregs = k.kvm_sregs()
    for name in SEGMENT_NAMES:
        segment_to_kvm(state.segments[name], getattr(sregs, name))
    segment_to_kvm(state.tr, sregs.tr)
    segment_to_kvm(state.ldtr, sregs.ldt)
    sregs.gdt.base, sregs.gdt.limit = state.gdtr.base, state.gdtr.limit
    sregs.idt.base, sregs.idt.limit = state.idtr.base, state.idtr.limit
    sregs.cr0, sregs.cr2, sregs.cr3 = state.cr0, state.cr2, state.cr3
    sregs.cr4, sregs.cr8 = state.cr4, state.cr8
    sregs.efer = state.efer
    sregs.apic_base = state.apic_base
    return sregs


def sregs_into_state(sregs: k.kvm_sregs, state: CpuState) -> None:
    state.segments = {name: segment_from_kvm(getattr(sregs, name)) for name in SEGMENT_NAMES}
    state.tr = segment_from_kvm(sregs.tr)
    state.ldtr = segment_from_kvm(sregs.ldt)
    state.gdtr = TableRegister(sregs.gdt.base, sregs.gdt.limit)
    state.idtr = TableRegister(sregs.idt.base, sregs.idt.limit)
    state.cr0, state.cr2, state.cr3 = sregs.cr0, sregs.cr2, sregs.cr3
    state.cr4, state.cr8 = sregs.cr4, sregs.cr8
    state.efer = sregs.efer
    state.apic_base = sregs.apic_base


# -- MSRs --------------------------------------------------------------------

def msrs_struct(values: dict[int, int]) -> k.kvm_msrs:
    """A kvm_msrs holding `values` (index -> data), in index order."""
    items = sorted(values.items())
    msrs = k.kvm_msrs_with(len(items))()
    msrs.nmsrs = len(items)
    for entry, (index, data) in zip(msrs.entries, items, strict=True):
        entry.index = index
        entry.data = data & 0xFFFFFFFFFFFFFFFF
    return msrs


def msrs_values(msrs: k.kvm_msrs, count: int) -> dict[int, int]:
    return {msrs.entries[i].index: msrs.entries[i].data for i in range(count)}


# -- FPU / SSE ---------------------------------------------------------------

def fpu_to_fxsave(fpu: k.kvm_fpu) -> bytes:
    """struct kvm_fpu as a 512-byte FXSAVE64 image.

    Fallback for hosts without KVM_CAP_XSAVE: KVM_GET_FPU does not report
    MXCSR_MASK (written as 0) and, on current kernels, not even MXCSR.
    """
    image = bytearray(FXSAVE_SIZE)
    _FX_HEAD.pack_into(image, 0, fpu.fcw, fpu.fsw, fpu.ftwx, 0, fpu.last_opcode,
                       fpu.last_ip, fpu.last_dp, fpu.mxcsr, 0)
    for i in range(8):
        image[_FX_ST0 + 16 * i:_FX_ST0 + 16 * i + 16] = bytes(fpu.fpr[i])
    for i in range(16):
        image[_FX_XMM0 + 16 * i:_FX_XMM0 + 16 * i + 16] = bytes(fpu.xmm[i])
    return bytes(image)


def fxsave_to_fpu(image: bytes) -> k.kvm_fpu:
    if len(image) != FXSAVE_SIZE:
        raise ValueError(f"an FXSAVE image is {FXSAVE_SIZE} bytes, not {len(image)}")
    fpu = k.kvm_fpu()
    (fpu.fcw, fpu.fsw, fpu.ftwx, _, fpu.last_opcode, fpu.last_ip, fpu.last_dp, fpu.mxcsr,
     _) = _FX_HEAD.unpack_from(image, 0)
    for i in range(8):
        fpu.fpr[i][:] = image[_FX_ST0 + 16 * i:_FX_ST0 + 16 * i + 16]
    for i in range(16):
        fpu.xmm[i][:] = image[_FX_XMM0 + 16 * i:_FX_XMM0 + 16 * i + 16]
    return fpu


def xsave_to_fxsave(xsave: k.kvm_xsave) -> bytes:
    """The legacy region of an XSAVE image is exactly an FXSAVE image (SDM Vol. 1 §13.4.1)."""
    return bytes(xsave.region[:FXSAVE_SIZE])


def fxsave_into_xsave(image: bytes, xsave: k.kvm_xsave) -> None:
    """Put an FXSAVE image into the legacy region and mark x87/SSE as present in
    XSTATE_BV, so XRSTOR-style loading takes them from the image (SDM Vol. 1 §13.8)."""
    if len(image) != FXSAVE_SIZE:
        raise ValueError(f"an FXSAVE image is {FXSAVE_SIZE} bytes, not {len(image)}")
    region = xsave.region
    region[:FXSAVE_SIZE] = image
    header = k.XSAVE_HEADER_OFFSET
    bv = int.from_bytes(bytes(region[header:header + 8]), "little") | k.XFEATURE_MASK_FPSSE
    region[header:header + 8] = bv.to_bytes(8, "little")


# -- debug registers -----------------------------------------------------------

def debugregs_from_state(state: CpuState) -> k.kvm_debugregs:
    regs = k.kvm_debugregs()
    for i in range(4):
        regs.db[i] = state.dr[i]
    regs.dr6 = state.dr[6]
    regs.dr7 = state.dr[7]
    return regs


def debugregs_into_state(regs: k.kvm_debugregs, state: CpuState) -> None:
    # DR4/DR5 are not registers of their own (aliases of DR6/DR7 when CR4.DE=0,
    # SDM Vol. 3B §18.2.2); CpuState keeps them 0.
    state.dr = [regs.db[0], regs.db[1], regs.db[2], regs.db[3], 0, 0, regs.dr6, regs.dr7]
