"""pyvmm's hypercall ABI: one port, arguments in registers (docs/PARAVIRT.md).

A guest that found pyvmm's signature in CPUID leaf 0x40000000 (see
pyvmm/cpu/cpuid.py) calls the hypervisor with ONE 32-bit `out dx, eax` to
`HYPERCALL_PORT`: EAX holds the call number, RBX, RCX, RSI, RDI the
arguments; on return RAX holds the result (>= 0) or a negated Linux errno,
and RBX a second result for the calls that have one.  This is the shape of
VMware's "backdoor" port (a port access traps to the VMM under every
engine), not VMCALL: KVM handles VMCALL in the kernel and never passes it to
user space.  An OUT carries no data back through the I/O completion, so the
device writes its results straight into the vCPU's registers through the
engine's `HypercallCpu` (`board.cpu_access`).
"""

from __future__ import annotations

from typing import Protocol

from pyvmm.cpu.state import GPR_NAMES

# The port: unused on the PC/AT ("VP", next to VMware's 0x5658 backdoor).
HYPERCALL_PORT = 0x5650
HYPERCALL_ACCESS_SIZE = 4  # only a 32-bit `out dx, eax` is a hypercall
ABI_VERSION = 1

# GPR indices in encoding order (SDM Vol. 2A §2.1.5, Table 2-2), as in CpuState.gprs.
RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI = range(8)
assert GPR_NAMES[RBX] == "rbx" and GPR_NAMES[RDI] == "rdi"
ARG_REGISTERS = (RBX, RCX, RSI, RDI)  # arg0..arg3 (RDX holds the port number)

# Call numbers (EAX).
HC_PROBE = 0  # -> RAX = ABI_VERSION, RBX = this VM's id, RCX = FEATURE_* bits
HC_TIMER_START = 1  # (period_ns, flags) -> 0
HC_TIMER_STOP = 2  # () -> 0
HC_CONSOLE_WRITE = 3  # (gpa, length) -> length
HC_CLOCK = 4  # () -> guest time in ns
HC_NET_SEND = 5  # (dst_vm, gpa, length) -> 0
HC_NET_RECV = 6  # (gpa, capacity) -> length, RBX = source VM id
HC_NET_WAIT = 7  # (timeout_ns) -> datagrams queued, or -EAGAIN after arming IRQ_PV_EVENT

CALL_NAMES: dict[int, str] = {
    HC_PROBE: "probe", HC_TIMER_START: "timer-start", HC_TIMER_STOP: "timer-stop",
    HC_CONSOLE_WRITE: "console-write", HC_CLOCK: "clock", HC_NET_SEND: "net-send",
    HC_NET_RECV: "net-recv", HC_NET_WAIT: "net-wait",
}

# HC_PROBE feature bits (RCX).
FEATURE_TIMER = 1 << 0
FEATURE_CONSOLE = 1 << 1
FEATURE_NET = 1 << 2  # set only when the VM is plugged into a virtual switch

# HC_TIMER_START flags (RCX).
TIMER_PERIODIC = 1 << 0  # else one-shot
TIMER_MIN_PERIOD_NS = 10_000  # 10 us: shorter periods would only be timer storms
TIMER_MAX_PERIOD_NS = 3600 * 10**9

CONSOLE_MAX_WRITE = 64 * 1024  # longest HC_CONSOLE_WRITE
NET_MAX_PAYLOAD = 1500  # longest datagram (an Ethernet MTU)

# The ISA IRQ HC_NET_WAIT raises (edge) when a datagram arrives or its deadline
# passes; free on pyvmm's PC (QEMU's pc machine leaves it to a second LPT/sound card).
IRQ_PV_EVENT = 5

# Errors: negated Linux errno values (include/uapi/asm-generic/errno*.h).
EAGAIN = 11  # would block: nothing queued
EFAULT = 14  # a buffer is not entirely inside the VM's RAM
ENODEV = 19  # no virtual switch attached to this VM
EINVAL = 22  # a bad argument (period, flags, length)
ENOSYS = 38  # no such call number
EMSGSIZE = 90  # datagram longer than NET_MAX_PAYLOAD, or than the receive buffer
ENOBUFS = 105  # the destination's queue is full: the datagram was dropped
EHOSTUNREACH = 113  # no VM with that id on the switch

ERROR_NAMES: dict[int, str] = {
    EAGAIN: "EAGAIN", EFAULT: "EFAULT", ENODEV: "ENODEV", EINVAL: "EINVAL",
    ENOSYS: "ENOSYS", EMSGSIZE: "EMSGSIZE", ENOBUFS: "ENOBUFS", EHOSTUNREACH: "EHOSTUNREACH",
}

MASK64 = (1 << 64) - 1


def error(code: int) -> int:
    """A negated errno as the 64-bit two's complement value RAX gets."""
    return -code & MASK64


def as_signed(value: int) -> int:
    """RAX read back as a signed 64-bit result."""
    value &= MASK64
    return value - (1 << 64) if value >> 63 else value


class HypercallCpu(Protocol):
    """The engine's view of the calling vCPU's registers, during a port access.

    Engines provide one as `board.cpu_access`.  `get_registers` returns the
    16 GPRs in encoding order; `set_registers` writes some of them (index ->
    value), taking effect when the guest resumes after the OUT.
    """

    def get_registers(self) -> list[int]: ...

    def set_registers(self, values: dict[int, int]) -> None: ...


class RegisterListCpu:
    """`HypercallCpu` over an engine that keeps the GPRs in a Python list
    (`cpu.regs`, as the interpreter does)."""

    def __init__(self, cpu: object) -> None:
        self._cpu = cpu

    def get_registers(self) -> list[int]:
        return list(self._cpu.regs)  # type: ignore[attr-defined]

    def set_registers(self, values: dict[int, int]) -> None:
        regs = self._cpu.regs  # type: ignore[attr-defined]
        for index, value in values.items():
            regs[index] = value & MASK64
