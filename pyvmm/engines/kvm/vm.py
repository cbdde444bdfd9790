"""The VM-wide half of a KVM virtual machine: /dev/kvm, the VM fd and its memory slots.

Everything here belongs to the VM, not to one vCPU (KVM API,
Documentation/virt/kvm/api.rst: "system ioctls" on /dev/kvm and "VM ioctls"
on the VM fd): capability checks, the memory slots that map guest RAM, the
real-mode helper pages, and the queries a vCPU is configured from
(KVM_GET_SUPPORTED_CPUID, KVM_GET_MSR_INDEX_LIST).  `vcpu.py` holds the other
half, as Firecracker's vstate/vm.rs and vstate/vcpu/ split them.
"""

from __future__ import annotations

import ctypes
import errno
import os

from pyvmm.cpu.cpuid import CpuidEntry
from pyvmm.engines.kvm import ioctls as k
from pyvmm.machine.memory import GuestMemory

KVM_DEVICE = "/dev/kvm"

# Where KVM may put the three-page TSS and the identity-mapped page table it
# needs for real-mode/unpaged guests on Intel (KVM API: KVM_SET_TSS_ADDR,
# KVM_SET_IDENTITY_MAP_ADDR).  Both must be guest-physical addresses no slot
# uses: just below the 16 MiB window under 4 GiB that BIOS ROMs occupy, and
# above the local APIC page (QEMU uses the same place).
IDENTITY_MAP_ADDR = 0xFEFFC000
TSS_ADDR = IDENTITY_MAP_ADDR + 0x1000

# A slot is (guest-physical address, size, host address, flags).
SlotKey = tuple[int, int, int, int]


def open_kvm() -> int:
    return os.open(KVM_DEVICE, os.O_RDWR | os.O_CLOEXEC)


def availability() -> tuple[bool, str]:
    """(True, "") if /dev/kvm opens and speaks the API version and capabilities we use."""
    if not os.path.exists(KVM_DEVICE):
        return False, f"{KVM_DEVICE} does not exist (no KVM on this host)"
    try:
        fd = open_kvm()
    except OSError as exc:
        return False, f"cannot open {KVM_DEVICE}: {exc.strerror}"
    try:
        version, err = k.ioctl_raw(fd, k.KVM_GET_API_VERSION)
        if version != k.KVM_API_VERSION:
            detail = os.strerror(err) if version < 0 else f"version {version}"
            return False, f"KVM API {detail}; pyvmm needs version {k.KVM_API_VERSION}"
        for cap, label in ((k.KVM_CAP_USER_MEMORY, "user memory"),
                           (k.KVM_CAP_IMMEDIATE_EXIT, "immediate_exit")):
            if k.ioctl_raw(fd, k.KVM_CHECK_EXTENSION, cap)[0] <= 0:
                return False, f"KVM lacks the {label} capability"
    finally:
        os.close(fd)
    return True, ""


class KvmVm:
    """One KVM VM: the /dev/kvm and VM file descriptors and the memory slots."""

    def __init__(self) -> None:
        self.kvm_fd = -1
        self.fd = -1
        self._slots: dict[int, SlotKey] = {}
        self.layout_version = -1
        try:
            self.kvm_fd = open_kvm()
            self.fd = k.ioctl(self.kvm_fd, k.KVM_CREATE_VM, 0, "KVM_CREATE_VM")
            self.readonly_ok = self.check(k.KVM_CAP_READONLY_MEM)
            self.xsave_ok = self.check(k.KVM_CAP_XSAVE)
            if self.check(k.KVM_CAP_SET_IDENTITY_MAP_ADDR):
                k.ioctl(self.fd, k.KVM_SET_IDENTITY_MAP_ADDR, ctypes.c_uint64(IDENTITY_MAP_ADDR),
                        "KVM_SET_IDENTITY_MAP_ADDR")
            if self.check(k.KVM_CAP_SET_TSS_ADDR):
                k.ioctl(self.fd, k.KVM_SET_TSS_ADDR, TSS_ADDR, "KVM_SET_TSS_ADDR")
        except BaseException:
            self.close()
            raise

    def check(self, cap: int) -> bool:
        """KVM_CHECK_EXTENSION on /dev/kvm: is the capability there?"""
        return k.ioctl_raw(self.kvm_fd, k.KVM_CHECK_EXTENSION, cap)[0] > 0

    # -- memory ---------------------------------------------------------------
    def sync_memory(self, memory: GuestMemory) -> None:
        """Make KVM's slots match the board's memory regions: delete the slots of
        regions that are gone or moved (KVM API: memory_size 0), add the new ones.

        ROM regions become KVM_MEM_READONLY slots: guest reads run at full
        speed, guest writes come back as MMIO exits (and are dropped).
        """
        self.layout_version = memory.layout_version
        wanted = {}
        for region in memory.regions:
            flags = k.KVM_MEM_READONLY if region.readonly and self.readonly_ok else 0
            wanted[(region.gpa, region.size, region.host_address, flags)] = region
        for slot, key in list(self._slots.items()):
            if key not in wanted:
                desc = k.kvm_userspace_memory_region(slot, 0, key[0], 0, 0)
                k.ioctl(self.fd, k.KVM_SET_USER_MEMORY_REGION, desc,
                        f"KVM_SET_USER_MEMORY_REGION (delete slot {slot})")
                del self._slots[slot]
        mapped = set(self._slots.values())
        for key, region in wanted.items():
            if key in mapped:
                continue
            slot = next(i for i in range(len(self._slots) + 1) if i not in self._slots)
            gpa, size, hva, flags = key
            desc = k.kvm_userspace_memory_region(slot, flags, gpa, size, hva)
            k.ioctl(self.fd, k.KVM_SET_USER_MEMORY_REGION, desc,
                    f"KVM_SET_USER_MEMORY_REGION ({region.name} at {gpa:#x})")
            self._slots[slot] = key

    # -- what a vCPU is configured from ------------------------------------------
    def supported_cpuid(self) -> list[CpuidEntry]:
        """KVM_GET_SUPPORTED_CPUID, growing the buffer while KVM answers E2BIG."""
        count = 128
        while True:
            buf = k.kvm_cpuid2_with(count)()
            buf.nent = count
            result, err = k.ioctl_raw(self.kvm_fd, k.KVM_GET_SUPPORTED_CPUID, buf)
            if result >= 0:
                return [CpuidEntry(e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx)
                        for e in buf.entries[:buf.nent]]
            if err != errno.E2BIG or count >= 4096:
                raise k.KvmError("KVM_GET_SUPPORTED_CPUID", err)
            count *= 2

    def msr_index_list(self) -> list[int]:
        """KVM_GET_MSR_INDEX_LIST: the MSRs KVM_GET/SET_MSRS can save and restore."""
        probe = k.kvm_msr_list()
        result, err = k.ioctl_raw(self.kvm_fd, k.KVM_GET_MSR_INDEX_LIST, probe)
        if result < 0 and err != errno.E2BIG:
            raise k.KvmError("KVM_GET_MSR_INDEX_LIST", err)
        full = k.kvm_msr_list_with(probe.nmsrs)()
        full.nmsrs = probe.nmsrs
        k.ioctl(self.kvm_fd, k.KVM_GET_MSR_INDEX_LIST, full, "KVM_GET_MSR_INDEX_LIST")
        return list(full.indices[:full.nmsrs])

    def filter_msrs(self, indices: list[int]) -> bool:
        """Send guest RDMSR/WRMSR of `indices` to user space (KVM_EXIT_X86_RDMSR/WRMSR):
        KVM_CAP_X86_USER_SPACE_MSR with the filter exit reason, and one deny range
        per MSR (KVM API, KVM_X86_SET_MSR_FILTER).  False where KVM lacks either."""
        if not indices:
            return True
        if not (self.check(k.KVM_CAP_X86_USER_SPACE_MSR) and self.check(k.KVM_CAP_X86_MSR_FILTER)):
            return False
        if len(indices) > k.KVM_MSR_FILTER_MAX_RANGES:
            raise ValueError(f"at most {k.KVM_MSR_FILTER_MAX_RANGES} filtered MSRs")
        cap = k.kvm_enable_cap(cap=k.KVM_CAP_X86_USER_SPACE_MSR)
        cap.args[0] = k.KVM_MSR_EXIT_REASON_FILTER
        k.ioctl(self.fd, k.KVM_ENABLE_CAP, cap, "KVM_ENABLE_CAP (X86_USER_SPACE_MSR)")
        msr_filter = k.kvm_msr_filter(flags=k.KVM_MSR_FILTER_DEFAULT_ALLOW)
        self._msr_bitmaps = [ctypes.create_string_buffer(1) for _ in indices]  # 0: deny
        for entry, index, bitmap in zip(msr_filter.ranges, indices, self._msr_bitmaps,
                                        strict=False):
            entry.flags = k.KVM_MSR_FILTER_READ | k.KVM_MSR_FILTER_WRITE
            entry.nmsrs, entry.base = 1, index
            entry.bitmap = ctypes.addressof(bitmap)
        k.ioctl(self.fd, k.KVM_X86_SET_MSR_FILTER, msr_filter, "KVM_X86_SET_MSR_FILTER")
        return True

    def disable_halt_polling(self) -> None:
        """KVM_CAP_HALT_POLL with 0 ns (KVM API, "KVM_CAP_HALT_POLL"): a halted vCPU
        of the in-kernel irqchip sleeps at once instead of spinning on a host CPU
        first, so the time it halts is all `halt_wait_ns` (stats.py).  Nothing where
        KVM lacks the capability."""
        if self.check(k.KVM_CAP_HALT_POLL):
            k.ioctl(self.fd, k.KVM_ENABLE_CAP, k.kvm_enable_cap(cap=k.KVM_CAP_HALT_POLL),
                    "KVM_ENABLE_CAP (HALT_POLL)")

    def vcpu_mmap_size(self) -> int:
        """KVM_GET_VCPU_MMAP_SIZE: struct kvm_run plus the PIO data page(s)."""
        return k.ioctl(self.kvm_fd, k.KVM_GET_VCPU_MMAP_SIZE, None, "KVM_GET_VCPU_MMAP_SIZE")

    def create_vcpu(self, index: int) -> int:
        """KVM_CREATE_VCPU: the new vCPU's file descriptor (its APIC ID is `index`)."""
        return k.ioctl(self.fd, k.KVM_CREATE_VCPU, index, "KVM_CREATE_VCPU")

    def close(self) -> None:
        for attr in ("fd", "kvm_fd"):
            fd = getattr(self, attr)
            if fd >= 0:
                os.close(fd)
                setattr(self, attr, -1)
