"""A vCPU's binary statistics (KVM_GET_STATS_FD): the time it waited halted in KVM.

With the in-kernel LAPIC (`--irqchip kernel`) a guest HLT never exits: the
vCPU thread sleeps inside KVM_RUN, and the board's `VirtualClock` (VCPU
source: the thread's CPU time) would not see that time pass.  KVM counts it
in the vCPU's cumulative `halt_wait_ns` statistic (KVM API,
Documentation/virt/kvm/api.rst, "KVM_GET_STATS_FD": a header, one
descriptor per statistic, then the values as u64s), which the engine reads
after each KVM_RUN and hands to the clock as halted time.
"""

from __future__ import annotations

import ctypes
import os

from pyvmm.engines.kvm import ioctls as k

HALT_WAIT_NS = "halt_wait_ns"


def stat_offset(data: bytes, name: str) -> int | None:
    """The file offset of statistic `name`'s first u64 in a statistics file whose
    header and descriptors are `data` (None: KVM has no such statistic)."""
    header = k.kvm_stats_header.from_buffer_copy(data)
    step = ctypes.sizeof(k.kvm_stats_desc) + header.name_size
    for index in range(header.num_desc):
        at = header.desc_offset + index * step
        desc = k.kvm_stats_desc.from_buffer_copy(data, at)
        raw = data[at + ctypes.sizeof(k.kvm_stats_desc):at + step]
        if raw.split(b"\0", 1)[0].decode() == name:
            return header.data_offset + desc.offset
    return None


class HaltWait:
    """The vCPU's `halt_wait_ns` counter, read with one pread(2) per call."""

    def __init__(self, fd: int, offset: int) -> None:
        self.fd, self.offset = fd, offset

    @classmethod
    def open(cls, vcpu_fd: int) -> HaltWait | None:
        """None where KVM has no statistics fd or no halt_wait_ns in it."""
        result, _ = k.ioctl_raw(vcpu_fd, k.KVM_GET_STATS_FD)
        if result < 0:
            return None
        header = os.pread(result, ctypes.sizeof(k.kvm_stats_header), 0)
        head = k.kvm_stats_header.from_buffer_copy(header)
        offset = stat_offset(os.pread(result, head.data_offset, 0), HALT_WAIT_NS)
        if offset is None:
            os.close(result)
            return None
        return cls(result, offset)

    def read(self) -> int:
        return int.from_bytes(os.pread(self.fd, 8, self.offset), "little")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
