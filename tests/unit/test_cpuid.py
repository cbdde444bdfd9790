"""CPUID policy: the KVM adjustments and the interpreter's CPU model."""

from __future__ import annotations

import struct

from pyvmm.cpu import cpuid as c
from pyvmm.cpu.cpuid import (
    HYPERVISOR_LEAF,
    HYPERVISOR_SIGNATURE,
    CpuidEntry,
    cpuid_lookup,
    entries_to_table,
    interpreter_cpuid_table,
    kvm_cpuid_policy,
)


def _signature(ebx: int, ecx: int, edx: int) -> bytes:
    return struct.pack("<3I", ebx, ecx, edx)


HOST = [
    CpuidEntry(0, 0, 0, 0xD, *struct.unpack("<3I", b"AuthcAMDenti")),
    CpuidEntry(1, 0, 0, 0x00A00F11, 0x00000800, c.CPUID_1_ECX_X2APIC | c.CPUID_1_ECX_TSC_DEADLINE
               | 1, c.CPUID_1_EDX_APIC | c.CPUID_1_EDX_FPU | c.CPUID_1_EDX_SSE),
    CpuidEntry(7, 0, 1, 0, 0x219C07AB, 0, 0),
    CpuidEntry(0x40000000, 0, 0, 0x40000001, *struct.unpack("<3I", b"KVMKVMKVM\0\0\0")),
    CpuidEntry(0x40000001, 0, 0, 0x01007AFB, 0, 0, 0),
    CpuidEntry(0x80000000, 0, 0, 0x80000021, 0, 0, 0),
]


def test_kvm_policy_replaces_kvm_leaves_with_pyvmm_ones():
    table = entries_to_table(kvm_cpuid_policy(HOST))
    eax, ebx, ecx, edx = table[(HYPERVISOR_LEAF, 0)]
    assert eax == 0x40000001
    assert _signature(ebx, ecx, edx) == HYPERVISOR_SIGNATURE == b"pyvmm-vmm\0\0\0"
    assert table[(0x40000001, 0)] == (0, 0, 0, 0)  # KVM's paravirtual feature bits are gone
    assert sum(1 for e in kvm_cpuid_policy(HOST) if e.function == HYPERVISOR_LEAF) == 1


def test_kvm_policy_sets_hypervisor_bit_and_hides_the_local_apic():
    entry = {e.function: e for e in kvm_cpuid_policy(HOST)}[1]
    assert entry.ecx & c.CPUID_1_ECX_HYPERVISOR
    assert entry.ecx & 1  # SSE3 untouched
    assert not entry.ecx & (c.CPUID_1_ECX_X2APIC | c.CPUID_1_ECX_TSC_DEADLINE)
    assert not entry.edx & c.CPUID_1_EDX_APIC
    assert entry.edx & c.CPUID_1_EDX_SSE and entry.edx & c.CPUID_1_EDX_FPU
    with_apic = {e.function: e for e in kvm_cpuid_policy(HOST, local_apic=True)}[1]
    assert with_apic.edx & c.CPUID_1_EDX_APIC and with_apic.ecx & c.CPUID_1_ECX_X2APIC


def test_kvm_policy_keeps_other_leaves_and_accepts_a_callable():
    result = kvm_cpuid_policy(lambda: HOST)
    leaf7 = [e for e in result if e.function == 7]
    assert leaf7 == [HOST[2]]  # indexed flag and data preserved
    assert [e for e in result if e.function == 0x80000000] == [HOST[5]]


def test_interpreter_vendor_and_family():
    table = interpreter_cpuid_table()
    eax, ebx, ecx, edx = cpuid_lookup(table, 0)
    assert struct.pack("<3I", ebx, edx, ecx) == b"GenuineIntel"
    version = cpuid_lookup(table, 1)[0]
    assert (version >> 8) & 0xF == 6  # family
    assert eax == 1


def test_interpreter_feature_bits():
    _, ebx, ecx, edx = cpuid_lookup(interpreter_cpuid_table(), 1)
    for present in (c.CPUID_1_EDX_TSC, c.CPUID_1_EDX_MSR, c.CPUID_1_EDX_PAE, c.CPUID_1_EDX_PSE,
                    c.CPUID_1_EDX_CX8, c.CPUID_1_EDX_SEP, c.CPUID_1_EDX_PGE,
                    c.CPUID_1_EDX_CMOV, c.CPUID_1_EDX_PAT, c.CPUID_1_EDX_CLFSH,
                    c.CPUID_1_EDX_MMX, c.CPUID_1_EDX_FPU, c.CPUID_1_EDX_FXSR,
                    c.CPUID_1_EDX_SSE, c.CPUID_1_EDX_SSE2):
        assert edx & present
    # Not the APIC the interpreter's board lacks.
    assert not edx & c.CPUID_1_EDX_APIC
    assert (ebx >> 8) & 0xFF == 8  # CLFLUSH line size: 8 * 8 = 64 bytes
    assert ecx == c.CPUID_1_ECX_HYPERVISOR  # no SSE3 etc.: only "hypervisor present"
    ext_edx = cpuid_lookup(interpreter_cpuid_table(), 0x80000001)[3]
    assert ext_edx & c.CPUID_80000001_EDX_LM
    assert ext_edx & c.CPUID_80000001_EDX_NX
    assert ext_edx & c.CPUID_80000001_EDX_SYSCALL


def test_interpreter_extended_leaves():
    table = interpreter_cpuid_table()
    assert cpuid_lookup(table, 0x80000000)[0] == 0x80000008
    eax = cpuid_lookup(table, 0x80000008)[0]
    assert eax & 0xFF == 36 and (eax >> 8) & 0xFF == 48
    brand = b"".join(struct.pack("<4I", *cpuid_lookup(table, leaf))
                     for leaf in (0x80000002, 0x80000003, 0x80000004))
    assert brand.rstrip(b"\0") == c.BRAND_STRING


def test_interpreter_hypervisor_leaves():
    table = interpreter_cpuid_table()
    eax, ebx, ecx, edx = cpuid_lookup(table, HYPERVISOR_LEAF)
    assert eax == 0x40000001 and _signature(ebx, ecx, edx) == HYPERVISOR_SIGNATURE


def test_out_of_range_leaves_return_the_highest_basic_leaf():
    table = interpreter_cpuid_table()
    highest_basic = cpuid_lookup(table, 1)
    assert cpuid_lookup(table, 2) == highest_basic
    assert cpuid_lookup(table, 0x3FFFFFFF) == highest_basic
    assert cpuid_lookup(table, 0x40000002) == highest_basic  # above the hypervisor max
    assert cpuid_lookup(table, 0x80000009) == highest_basic  # above the extended max
    assert cpuid_lookup(table, 0xFFFFFFFF) == highest_basic


def test_subleaf_ignored_for_plain_leaves_and_used_for_indexed_ones():
    table = interpreter_cpuid_table()
    assert cpuid_lookup(table, 1, 5) == cpuid_lookup(table, 1, 0)
    custom = dict(table)
    custom[(0, 0)] = (7, *table[(0, 0)][1:])
    custom[(7, 0)] = (0, 0x1, 0, 0)
    assert cpuid_lookup(custom, 7, 0) == (0, 0x1, 0, 0)
    assert cpuid_lookup(custom, 7, 1) == (0, 0, 0, 0)  # unknown sub-leaf of an indexed leaf
