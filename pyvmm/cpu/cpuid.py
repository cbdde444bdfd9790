"""CPUID policy: the one place that decides what CPUID tells a guest.

Two models live here:

- `kvm_cpuid_policy()`: what a KVM guest sees, starting from the host's
  KVM_GET_SUPPORTED_CPUID list (passed in as plain `CpuidEntry` values; the
  ioctl itself lives in pyvmm/engines/kvm/ioctls.py) and adding pyvmm's own
  hypervisor leaves.
- `interpreter_cpuid_table()`: a small P6-class CPU (MMX) for the
  interpreter engines, with the same hypervisor leaves.

`cpuid_lookup()` implements how a CPU answers a leaf it does not have (Intel
SDM Vol. 2A, CPUID, "INPUT EAX = 0: Returns CPUID's Highest Value for Basic
Processor Information and the Vendor Identification String" and the note on
out-of-range inputs).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

# Hypervisor CPUID range (reserved for software, SDM Vol. 2A CPUID: 0x40000000-0x4FFFFFFF
# are "invalid" on bare metal; hypervisors publish a vendor leaf at 0x40000000).
HYPERVISOR_LEAF = 0x40000000
HYPERVISOR_FEATURES_LEAF = 0x40000001
HYPERVISOR_MAX_LEAF = HYPERVISOR_FEATURES_LEAF
HYPERVISOR_RANGE_END = 0x400000FF  # KVM's own leaves also live below this
HYPERVISOR_SIGNATURE = b"pyvmm-vmm\0\0\0"  # EBX, ECX, EDX of leaf 0x40000000

EXTENDED_BASE = 0x80000000

# Leaf 1 ECX (SDM Vol. 2A Table 3-10).
CPUID_1_ECX_X2APIC = 1 << 21
CPUID_1_ECX_TSC_DEADLINE = 1 << 24
CPUID_1_ECX_HYPERVISOR = 1 << 31  # "hypervisor present" (reserved 0 on bare metal)
# Leaf 1 EDX (SDM Vol. 2A Table 3-11).
CPUID_1_EDX_FPU = 1 << 0
CPUID_1_EDX_PSE = 1 << 3
CPUID_1_EDX_TSC = 1 << 4
CPUID_1_EDX_MSR = 1 << 5
CPUID_1_EDX_PAE = 1 << 6
CPUID_1_EDX_CX8 = 1 << 8
CPUID_1_EDX_APIC = 1 << 9
CPUID_1_EDX_SEP = 1 << 11
CPUID_1_EDX_PGE = 1 << 13
CPUID_1_EDX_CMOV = 1 << 15
CPUID_1_EDX_PAT = 1 << 16
CPUID_1_EDX_CLFSH = 1 << 19
CPUID_1_EDX_MMX = 1 << 23
CPUID_1_EDX_FXSR = 1 << 24
CPUID_1_EDX_SSE = 1 << 25
CPUID_1_EDX_SSE2 = 1 << 26
# Leaf 1 EBX bits 15:8: CLFLUSH line size in 8-byte units (SDM Vol. 2A, CPUID).
CLFLUSH_LINE_BYTES = 64
# Leaf 0x80000001 EDX (SDM Vol. 2A, CPUID leaf 80000001H).
CPUID_80000001_EDX_SYSCALL = 1 << 11
CPUID_80000001_EDX_NX = 1 << 20
CPUID_80000001_EDX_LM = 1 << 29

# Leaves whose output depends on ECX (the sub-leaf); for every other leaf ECX is ignored.
INDEXED_LEAVES = frozenset({0x4, 0x7, 0xB, 0xD, 0xF, 0x10, 0x12, 0x14, 0x17, 0x18, 0x1F,
                            0x8000001D})

Registers = tuple[int, int, int, int]  # eax, ebx, ecx, edx
CpuidTable = dict[tuple[int, int], Registers]


@dataclass(frozen=True)
class CpuidEntry:
    """One CPUID answer (the engine-neutral form of struct kvm_cpuid_entry2)."""

    function: int
    index: int = 0
    flags: int = 0  # KVM_CPUID_FLAG_* (bit 0: the leaf is indexed by ECX)
    eax: int = 0
    ebx: int = 0
    ecx: int = 0
    edx: int = 0

    @property
    def registers(self) -> Registers:
        return self.eax, self.ebx, self.ecx, self.edx


def _signature_registers(signature: bytes) -> tuple[int, int, int]:
    """A 12-byte vendor string as EBX, ECX, EDX (little-endian dwords in that order)."""
    if len(signature) != 12:
        raise ValueError("a CPUID signature is 12 bytes")
    ebx, ecx, edx = struct.unpack("<3I", signature)
    return ebx, ecx, edx


def hypervisor_leaves() -> CpuidTable:
    """pyvmm's hypervisor leaves: the vendor leaf and an (empty) features leaf."""
    ebx, ecx, edx = _signature_registers(HYPERVISOR_SIGNATURE)
    return {
        (HYPERVISOR_LEAF, 0): (HYPERVISOR_MAX_LEAF, ebx, ecx, edx),
        (HYPERVISOR_FEATURES_LEAF, 0): (0, 0, 0, 0),  # no paravirtual features yet
    }


# -- KVM -------------------------------------------------------------------

def kvm_cpuid_policy(supported: Iterable[CpuidEntry] | Callable[[], Iterable[CpuidEntry]],
                     *, local_apic: bool = False) -> list[CpuidEntry]:
    """The CPUID a KVM guest sees: the host-supported list, adjusted.

    - Every leaf in 0x40000000-0x400000FF (KVM's own "KVMKVMKVM" leaves) is
      replaced by pyvmm's hypervisor leaves.
    - Leaf 1 ECX bit 31 (hypervisor present) is set.
    - Without an in-kernel local APIC (`local_apic=False`, pyvmm's default:
      the PIC lives in Python), leaf 1 EDX.APIC, ECX.x2APIC and
      ECX.TSC-deadline are cleared, so the guest does not look for one.
    """
    entries = list(supported() if callable(supported) else supported)
    result: list[CpuidEntry] = []
    for entry in entries:
        if HYPERVISOR_LEAF <= entry.function <= HYPERVISOR_RANGE_END:
            continue
        if entry.function == 1:
            ecx = entry.ecx | CPUID_1_ECX_HYPERVISOR
            edx = entry.edx
            if not local_apic:
                ecx &= ~(CPUID_1_ECX_X2APIC | CPUID_1_ECX_TSC_DEADLINE)
                edx &= ~CPUID_1_EDX_APIC
            entry = replace(entry, ecx=ecx, edx=edx)
        result.append(entry)
    for (leaf, subleaf), (eax, ebx, ecx, edx) in hypervisor_leaves().items():
        result.append(CpuidEntry(leaf, subleaf, 0, eax, ebx, ecx, edx))
    return result


def entries_to_table(entries: Iterable[CpuidEntry]) -> CpuidTable:
    return {(e.function, e.index): e.registers for e in entries}


# -- the interpreter's CPU model -------------------------------------------

VENDOR_INTEL = b"GenuineIntel"
FAMILY = 6
MODEL = 1
STEPPING = 1
PHYSICAL_ADDRESS_BITS = 36
LINEAR_ADDRESS_BITS = 48
BRAND_STRING = b"pyvmm x86-64 CPU"

INTERPRETER_MAX_BASIC_LEAF = 1
INTERPRETER_MAX_EXTENDED_LEAF = 0x80000008

INTERPRETER_LEAF1_EDX = (CPUID_1_EDX_PSE | CPUID_1_EDX_TSC | CPUID_1_EDX_MSR | CPUID_1_EDX_PAE
                         | CPUID_1_EDX_CX8 | CPUID_1_EDX_SEP | CPUID_1_EDX_PGE
                         | CPUID_1_EDX_CMOV | CPUID_1_EDX_PAT
                         # x87: semantics/x87.py; FXSAVE/FXRSTOR: x87.py with
                         # CR4.OSFXSR; MMX and SSE/SSE2 integer: sse_int.py,
                         # sse_move.py; SSE/SSE2 floating point: sse_float.py,
                         # sse_compare.py, sse_convert.py.
                         | CPUID_1_EDX_FPU | CPUID_1_EDX_FXSR | CPUID_1_EDX_SSE
                         | CPUID_1_EDX_SSE2 | CPUID_1_EDX_CLFSH | CPUID_1_EDX_MMX)
INTERPRETER_LEAF1_EBX = (CLFLUSH_LINE_BYTES // 8) << 8
INTERPRETER_EXT1_EDX = CPUID_80000001_EDX_SYSCALL | CPUID_80000001_EDX_NX | CPUID_80000001_EDX_LM


def _brand_leaves(brand: bytes) -> CpuidTable:
    """Leaves 0x80000002-4: a 48-byte NUL-padded brand string, 16 bytes per leaf."""
    padded = brand.ljust(48, b"\0")[:48]
    table: CpuidTable = {}
    for i in range(3):
        table[(0x80000002 + i, 0)] = struct.unpack("<4I", padded[16 * i:16 * i + 16])
    return table


def interpreter_cpuid_table() -> CpuidTable:
    """A plain CPU: GenuineIntel family 6 with x87, MMX, SSE and SSE2, no APIC.

    Leaf 1 EDX has FPU, PSE, TSC, MSR, PAE, CX8, SEP, PGE, CMOV, PAT, CLFSH
    (EBX: 64-byte lines), MMX, FXSR, SSE, SSE2 (APIC clear; ECX: no SSE3 and
    later); leaf 0x80000001 EDX has SYSCALL, NX and LM; leaf 0x80000008 reports the address sizes.
    """
    vendor_ebx, vendor_ecx, vendor_edx = _signature_registers(VENDOR_INTEL)
    version = (FAMILY << 8) | (MODEL << 4) | STEPPING  # SDM Vol. 2A Figure 3-6
    table: CpuidTable = {
        # Leaf 0: max basic leaf; vendor string is EBX, EDX, ECX ("Genu" "ineI" "ntel").
        (0, 0): (INTERPRETER_MAX_BASIC_LEAF, vendor_ebx, vendor_edx, vendor_ecx),
        (1, 0): (version, INTERPRETER_LEAF1_EBX, CPUID_1_ECX_HYPERVISOR, INTERPRETER_LEAF1_EDX),
        (EXTENDED_BASE, 0): (INTERPRETER_MAX_EXTENDED_LEAF, 0, 0, 0),
        (0x80000001, 0): (0, 0, 0, INTERPRETER_EXT1_EDX),
        (0x80000005, 0): (0, 0, 0, 0),
        (0x80000006, 0): (0, 0, 0, 0),
        (0x80000007, 0): (0, 0, 0, 0),
        (0x80000008, 0): (PHYSICAL_ADDRESS_BITS | (LINEAR_ADDRESS_BITS << 8), 0, 0, 0),
    }
    table.update(_brand_leaves(BRAND_STRING))
    table.update(hypervisor_leaves())
    return table


def with_apic_status(leaf: int, registers: Registers, apic_enabled: bool) -> Registers:
    """Leaf 1 of a CPU with the board's local APIC.  CPUID.01H:EDX[9] (APIC) reads 1
    exactly while IA32_APIC_BASE[11] (the APIC global enable) is set (SDM Vol. 3A
    "Local APIC Status and Location": with the APIC globally disabled, the
    processor reports no APIC); CPUID.01H:ECX[21] (x2APIC, SDM Vol. 3A
    "Detecting and Enabling x2APIC Mode") is set: that APIC implements the
    x2APIC MSRs (pyvmm/devices/lapic.py), whatever its current mode."""
    if leaf != 1:
        return registers
    eax, ebx, ecx, edx = registers
    edx = edx | CPUID_1_EDX_APIC if apic_enabled else edx & ~CPUID_1_EDX_APIC
    return eax, ebx, ecx | CPUID_1_ECX_X2APIC, edx


def cpuid_lookup(table: CpuidTable, leaf: int, subleaf: int = 0) -> Registers:
    """What CPUID returns for EAX=`leaf`, ECX=`subleaf` on the CPU `table` describes.

    Intel rule (SDM Vol. 2A, CPUID): "If a value entered for CPUID.EAX is
    higher than the maximum input value for basic or extended function for
    that processor then the data for the highest basic information leaf is
    returned."  The hypervisor range answers only where the table has leaves.
    ECX is ignored except for indexed leaves, whose unknown sub-leaves read 0.
    """
    leaf &= 0xFFFFFFFF
    subleaf &= 0xFFFFFFFF
    max_basic = table[(0, 0)][0]
    max_extended = table.get((EXTENDED_BASE, 0), (0, 0, 0, 0))[0]
    max_hypervisor = table.get((HYPERVISOR_LEAF, 0), (0, 0, 0, 0))[0]
    if leaf >= EXTENDED_BASE:
        in_range = leaf <= max_extended
    elif leaf >= HYPERVISOR_LEAF and max_hypervisor:
        in_range = leaf <= max_hypervisor
    else:
        in_range = leaf <= max_basic
    if not in_range:
        leaf = max_basic
    if leaf in INDEXED_LEAVES:
        return table.get((leaf, subleaf), (0, 0, 0, 0))
    return table.get((leaf, 0), (0, 0, 0, 0))
