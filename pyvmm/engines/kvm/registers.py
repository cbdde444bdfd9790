"""The KVM vCPU's registers for the hypercall device (`board.cpu_access`).

A hypercall is an OUT to the hypercall port, so the device runs inside a
KVM_EXIT_IO.  KVM API (Documentation/virt/kvm/api.rst, KVM_EXIT_IO note):
the I/O operation is complete, and guest state consistent, only after user
space re-enters KVM_RUN -- for an OUT, KVM advances RIP past the instruction
then.  So before reading or writing registers we complete the exit with a
KVM_RUN that has `immediate_exit` set (it finishes the pending I/O, then
returns -EINTR without entering the guest); KVM_GET_REGS then sees RIP after
the OUT, and KVM_SET_REGS writes results the guest sees when it resumes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyvmm.cpu.state import GPR_NAMES
from pyvmm.engines.kvm import ioctls as k

if TYPE_CHECKING:
    from pyvmm.engines.kvm.vcpu import KvmVcpu

_MASK64 = (1 << 64) - 1


class KvmCpuAccess:
    """`pyvmm.paravirt.abi.HypercallCpu` over KVM_GET_REGS/KVM_SET_REGS."""

    def __init__(self, vcpu: KvmVcpu) -> None:
        self._vcpu = vcpu

    def _regs(self) -> k.kvm_regs:
        vcpu = self._vcpu
        vcpu.complete_pending_io()
        regs = k.kvm_regs()
        vcpu.ioctl(k.KVM_GET_REGS, regs, "KVM_GET_REGS")
        return regs

    def get_registers(self) -> list[int]:
        regs = self._regs()
        return [getattr(regs, name) for name in GPR_NAMES]

    def set_registers(self, values: dict[int, int]) -> None:
        if not values:
            return
        regs = self._regs()
        for index, value in values.items():
            setattr(regs, GPR_NAMES[index], value & _MASK64)
        self._vcpu.ioctl(k.KVM_SET_REGS, regs, "KVM_SET_REGS")
