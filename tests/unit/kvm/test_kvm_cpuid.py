"""The CPUID a KVM guest really sees (executed by the host CPU in ring 3)."""

from __future__ import annotations

import struct

import pytest
from kvm_guest import load_long_mode, requires_kvm

from pyvmm.cpu.cpuid import CPUID_1_ECX_HYPERVISOR, CPUID_1_ECX_X2APIC, HYPERVISOR_SIGNATURE
from pyvmm.machine.stop import StopKind

pytestmark = requires_kvm

CPUID_DUMP = """
    lea rdi, [rel buf]
    mov eax, 0x40000000
    cpuid
    mov [rdi], eax
    mov [rdi+4], ebx
    mov [rdi+8], ecx
    mov [rdi+12], edx
    mov eax, 1
    cpuid
    mov [rdi+16], ecx
    mov [rdi+20], edx
    lea rsi, [rel buf]
    mov ecx, 24
    mov dx, 0xe9
    rep outsb
    mov al, 0
    out 0xf4, al
buf: times 24 db 0
"""


@pytest.mark.parametrize("ring", [0, 3])
def test_guest_sees_pyvmm_hypervisor_leaves(vm, ring):
    load_long_mode(vm, CPUID_DUMP, ring=ring)
    reason = vm.engine.run(timeout=5)
    assert reason.kind is StopKind.DEBUG_EXIT, reason.describe()
    out = vm.debugcon.getvalue()
    assert len(out) == 24
    max_leaf, = struct.unpack_from("<I", out, 0)
    assert max_leaf == 0x40000001
    if ring == 3 and out[4:16] == b"KVMKVMKVM\0\0\0":
        pytest.skip("this nested host runs ring-3 CPUID without an exit to our KVM: the "
                    "guest sees the outer hypervisor's leaves (ring 0 is checked instead)")
    assert out[4:16] == HYPERVISOR_SIGNATURE
    ecx, edx = struct.unpack_from("<II", out, 16)
    assert ecx & CPUID_1_ECX_HYPERVISOR
    assert not ecx & CPUID_1_ECX_X2APIC
    # (EDX.APIC is not checked: KVM recomputes it from IA32_APIC_BASE.EN at run time.)
