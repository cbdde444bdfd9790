"""The KVM userspace ABI: every ioctl number and struct layout pyvmm uses.

Everything here mirrors <linux/kvm.h> and <asm/kvm.h> for x86-64 (the
"KVM API" document, Documentation/virt/kvm/api.rst).  The API version this
module describes is 12; `KvmEngine.availability()` refuses any other.
No logic lives here beyond the ioctl call wrapper.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

from pyvmm.errors import PyvmmError

KVM_API_VERSION = 12
KVMIO = 0xAE  # the ioctl "type" byte of every KVM ioctl

# Linux _IOC encoding (include/uapi/asm-generic/ioctl.h): dir:2 size:14 type:8 nr:8.
_IOC_NONE = 0
_IOC_WRITE = 1
_IOC_READ = 2


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (KVMIO << 8) | nr


def _io(nr: int) -> int:
    return _ioc(_IOC_NONE, nr, 0)


def _ior(nr: int, struct: type | int) -> int:
    return _ioc(_IOC_READ, nr, struct if isinstance(struct, int) else ctypes.sizeof(struct))


def _iow(nr: int, struct: type | int) -> int:
    return _ioc(_IOC_WRITE, nr, struct if isinstance(struct, int) else ctypes.sizeof(struct))


def _iowr(nr: int, struct: type | int) -> int:
    size = struct if isinstance(struct, int) else ctypes.sizeof(struct)
    return _ioc(_IOC_READ | _IOC_WRITE, nr, size)


# -- structures ------------------------------------------------------------

class kvm_userspace_memory_region(ctypes.Structure):  # noqa: N801 - kernel name
    _fields_ = [
        ("slot", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("guest_phys_addr", ctypes.c_uint64),
        ("memory_size", ctypes.c_uint64),
        ("userspace_addr", ctypes.c_uint64),
    ]


class kvm_regs(ctypes.Structure):  # noqa: N801
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags")]


class kvm_segment(ctypes.Structure):  # noqa: N801
    _fields_ = [
        ("base", ctypes.c_uint64),
        ("limit", ctypes.c_uint32),
        ("selector", ctypes.c_uint16),
        ("type", ctypes.c_uint8),
        ("present", ctypes.c_uint8),
        ("dpl", ctypes.c_uint8),
        ("db", ctypes.c_uint8),
        ("s", ctypes.c_uint8),
        ("l", ctypes.c_uint8),
        ("g", ctypes.c_uint8),
        ("avl", ctypes.c_uint8),
        ("unusable", ctypes.c_uint8),
        ("padding", ctypes.c_uint8),
    ]


class kvm_dtable(ctypes.Structure):  # noqa: N801
    _fields_ = [
        ("base", ctypes.c_uint64),
        ("limit", ctypes.c_uint16),
        ("padding", ctypes.c_uint16 * 3),
    ]


KVM_NR_INTERRUPTS = 256


class kvm_sregs(ctypes.Structure):  # noqa: N801
    _fields_ = [
        ("cs", kvm_segment), ("ds", kvm_segment), ("es", kvm_segment),
        ("fs", kvm_segment), ("gs", kvm_segment), ("ss", kvm_segment),
        ("tr", kvm_segment), ("ldt", kvm_segment),
        ("gdt", kvm_dtable), ("idt", kvm_dtable),
        ("cr0", ctypes.c_uint64), ("cr2", ctypes.c_uint64), ("cr3", ctypes.c_uint64),
        ("cr4", ctypes.c_uint64), ("cr8", ctypes.c_uint64),
        ("efer", ctypes.c_uint64), ("apic_base", ctypes.c_uint64),
        ("interrupt_bitmap", ctypes.c_uint64 * ((KVM_NR_INTERRUPTS + 63) // 64)),
    ]


class kvm_msr_entry(ctypes.Structure):  # noqa: N801
    _fields_ = [
        ("index", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
        ("data", ctypes.c_uint64),
    ]


class kvm_msrs(ctypes.Structure):  # noqa: N801
    """Header only; `entries` follow it (flexible array member)."""

    _fields_ = [("nmsrs", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


def kvm_msrs_with(n: int) -> type[ctypes.Structure]:
    """A kvm_msrs with room for `n` entries."""

    class _Msrs(ctypes.Structure):
        _fields_ = [("nmsrs", ctypes.c_uint32), ("pad", ctypes.c_uint32),
                    ("entries", kvm_msr_entry * n)]

    return _Msrs


class kvm_msr_list(ctypes.Structure):  # noqa: N801
    _fields_ = [("nmsrs", ctypes.c_uint32)]


def kvm_msr_list_with(n: int) -> type[ctypes.Structure]:
    class _MsrList(ctypes.Structure):
        _fields_ = [("nmsrs", ctypes.c_uint32), ("indices", ctypes.c_uint32 * n)]

    return _MsrList


KVM_CPUID_FLAG_SIGNIFCANT_INDEX = 1 << 0  # (sic, kernel spelling) leaf is indexed by ECX


class kvm_cpuid_entry2(ctypes.Structure):  # noqa: N801
    _fields_ = [
        ("function", ctypes.c_uint32),
        ("index", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("eax", ctypes.c_uint32),
        ("ebx", ctypes.c_uint32),
        ("ecx", ctypes.c_uint32),
        ("edx", ctypes.c_uint32),
        ("padding", ctypes.c_uint32 * 3),
    ]


class kvm_cpuid2(ctypes.Structure):  # noqa: N801
    _fields_ = [("nent", ctypes.c_uint32), ("padding", ctypes.c_uint32)]


def kvm_cpuid2_with(n: int) -> type[ctypes.Structure]:
    class _Cpuid2(ctypes.Structure):
        _fields_ = [("nent", ctypes.c_uint32), ("padding", ctypes.c_uint32),
                    ("entries", kvm_cpuid_entry2 * n)]

    return _Cpuid2


class kvm_interrupt(ctypes.Structure):  # noqa: N801
    _fields_ = [("irq", ctypes.c_uint32)]


class kvm_fpu(ctypes.Structure):  # noqa: N801
    _fields_ = [
        ("fpr", (ctypes.c_uint8 * 16) * 8),
        ("fcw", ctypes.c_uint16),
        ("fsw", ctypes.c_uint16),
        ("ftwx", ctypes.c_uint8),  # abridged (FXSAVE) tag word
        ("pad1", ctypes.c_uint8),
        ("last_opcode", ctypes.c_uint16),
        ("last_ip", ctypes.c_uint64),
        ("last_dp", ctypes.c_uint64),
        ("xmm", (ctypes.c_uint8 * 16) * 16),
        ("mxcsr", ctypes.c_uint32),
        ("pad2", ctypes.c_uint32),
    ]


KVM_XSAVE_SIZE = 4096  # struct kvm_xsave: the non-compacted XSAVE image (SDM Vol. 1 §13.4)
XSAVE_HEADER_OFFSET = 512  # XSTATE_BV is the first 8 bytes of the XSAVE header
XFEATURE_MASK_FPSSE = 0x3  # XSTATE_BV bits 0 (x87) and 1 (SSE)


class kvm_xsave(ctypes.Structure):  # noqa: N801
    _fields_ = [("region", ctypes.c_uint8 * KVM_XSAVE_SIZE)]


class kvm_debugregs(ctypes.Structure):  # noqa: N801
    _fields_ = [
        ("db", ctypes.c_uint64 * 4),
        ("dr6", ctypes.c_uint64),
        ("dr7", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
        ("reserved", ctypes.c_uint64 * 9),
    ]


class _EventException(ctypes.Structure):
    _fields_ = [("injected", ctypes.c_uint8), ("nr", ctypes.c_uint8),
                ("has_error_code", ctypes.c_uint8), ("pending", ctypes.c_uint8),
                ("error_code", ctypes.c_uint32)]


class _EventInterrupt(ctypes.Structure):
    _fields_ = [("injected", ctypes.c_uint8), ("nr", ctypes.c_uint8),
                ("soft", ctypes.c_uint8), ("shadow", ctypes.c_uint8)]


class _EventNmi(ctypes.Structure):
    _fields_ = [("injected", ctypes.c_uint8), ("pending", ctypes.c_uint8),
                ("masked", ctypes.c_uint8), ("pad", ctypes.c_uint8)]


class _EventSmi(ctypes.Structure):
    _fields_ = [("smm", ctypes.c_uint8), ("pending", ctypes.c_uint8),
                ("smm_inside_nmi", ctypes.c_uint8), ("latched_init", ctypes.c_uint8)]


class kvm_vcpu_events(ctypes.Structure):  # noqa: N801
    _fields_ = [
        ("exception", _EventException),
        ("interrupt", _EventInterrupt),
        ("nmi", _EventNmi),
        ("sipi_vector", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("smi", _EventSmi),
        ("triple_fault_pending", ctypes.c_uint8),
        ("reserved", ctypes.c_uint8 * 26),
        ("exception_has_payload", ctypes.c_uint8),
        ("exception_payload", ctypes.c_uint64),
    ]


# kvm_vcpu_events.interrupt.shadow bits.
KVM_X86_SHADOW_INT_MOV_SS = 0x01
KVM_X86_SHADOW_INT_STI = 0x02
# kvm_vcpu_events.flags: which optional fields KVM_SET_VCPU_EVENTS should apply.
KVM_VCPUEVENT_VALID_NMI_PENDING = 0x01
KVM_VCPUEVENT_VALID_SIPI_VECTOR = 0x02
KVM_VCPUEVENT_VALID_SHADOW = 0x04


class kvm_signal_mask(ctypes.Structure):  # noqa: N801
    """Header; `sigset` (len bytes, the kernel's sigset_t) follows."""

    _fields_ = [("len", ctypes.c_uint32)]


class kvm_signal_mask_sigset(ctypes.Structure):  # noqa: N801
    _fields_ = [("len", ctypes.c_uint32), ("sigset", ctypes.c_uint64)]


KERNEL_SIGSET_BYTES = 8  # x86-64 kernel sigset_t: 64 signals


class kvm_guest_debug(ctypes.Structure):  # noqa: N801
    """KVM_SET_GUEST_DEBUG: control flags, then the x86 debugreg[8] (DR0-DR7)."""

    _fields_ = [("control", ctypes.c_uint32), ("pad", ctypes.c_uint32),
                ("debugreg", ctypes.c_uint64 * 8)]


# kvm_guest_debug.control (KVM API, KVM_SET_GUEST_DEBUG; asm/kvm.h).
KVM_GUESTDBG_ENABLE = 0x00000001
KVM_GUESTDBG_SINGLESTEP = 0x00000002
KVM_GUESTDBG_USE_SW_BP = 0x00010000
KVM_GUESTDBG_USE_HW_BP = 0x00020000


class kvm_irq_level(ctypes.Structure):  # noqa: N801
    _fields_ = [("irq", ctypes.c_uint32), ("level", ctypes.c_uint32)]


class kvm_pit_config(ctypes.Structure):  # noqa: N801
    _fields_ = [("flags", ctypes.c_uint32), ("pad", ctypes.c_uint32 * 15)]


KVM_PIT_SPEAKER_DUMMY = 1  # kvm_pit_config.flags: KVM also answers port 0x61


class kvm_irq_routing_irqchip(ctypes.Structure):  # noqa: N801
    _fields_ = [("irqchip", ctypes.c_uint32), ("pin", ctypes.c_uint32)]


class _RoutingUnion(ctypes.Union):
    _fields_ = [("irqchip", kvm_irq_routing_irqchip), ("pad", ctypes.c_uint32 * 8)]


class kvm_irq_routing_entry(ctypes.Structure):  # noqa: N801
    _fields_ = [("gsi", ctypes.c_uint32), ("type", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("pad", ctypes.c_uint32), ("u", _RoutingUnion)]


class kvm_irq_routing(ctypes.Structure):  # noqa: N801
    """Header; `nr` kvm_irq_routing_entry follow (kvm_irq_routing_with)."""

    _fields_ = [("nr", ctypes.c_uint32), ("flags", ctypes.c_uint32)]


def kvm_irq_routing_with(count: int) -> type[ctypes.Structure]:
    class _Routing(ctypes.Structure):
        _fields_ = [("nr", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                    ("entries", kvm_irq_routing_entry * count)]
    return _Routing


KVM_IRQ_ROUTING_IRQCHIP = 1
# kvm_irq_routing_irqchip.irqchip: which in-kernel chip.
KVM_IRQCHIP_PIC_MASTER = 0
KVM_IRQCHIP_PIC_SLAVE = 1
KVM_IRQCHIP_IOAPIC = 2


# -- in-kernel chip state (asm/kvm.h: kvm_pic_state, kvm_ioapic_state, kvm_lapic_state,
# kvm_pit_channel_state, kvm_pit_state2; linux/kvm.h: kvm_irqchip) --------------

_U8, _U16, _U32, _U64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64


class kvm_pic_state(ctypes.Structure):  # noqa: N801
    _fields_ = [(name, _U8) for name in (
        "last_irr", "irr", "imr", "isr", "priority_add", "irq_base", "read_reg_select",
        "poll", "special_mask", "init_state", "auto_eoi", "rotate_on_auto_eoi",
        "special_fully_nested_mode", "init4", "elcr", "elcr_mask")]


KVM_IOAPIC_NUM_PINS = 24


class kvm_ioapic_state(ctypes.Structure):  # noqa: N801
    """`redirtbl` as the union's `bits` view: the 82093AA's 64-bit entry layout."""

    _fields_ = [("base_address", _U64), ("ioregsel", _U32), ("id", _U32), ("irr", _U32),
                ("pad", _U32), ("redirtbl", _U64 * KVM_IOAPIC_NUM_PINS)]


class _IrqchipUnion(ctypes.Union):
    _fields_ = [("dummy", ctypes.c_char * 512), ("pic", kvm_pic_state),
                ("ioapic", kvm_ioapic_state)]


class kvm_irqchip(ctypes.Structure):  # noqa: N801
    _fields_ = [("chip_id", _U32), ("pad", _U32), ("chip", _IrqchipUnion)]


KVM_APIC_REG_SIZE = 0x400


class kvm_lapic_state(ctypes.Structure):  # noqa: N801
    _fields_ = [("regs", ctypes.c_uint8 * KVM_APIC_REG_SIZE)]


class kvm_pit_channel_state(ctypes.Structure):  # noqa: N801
    _fields_ = [("count", _U32), ("latched_count", _U16), ("count_latched", _U8),
                ("status_latched", _U8), ("status", _U8), ("read_state", _U8),
                ("write_state", _U8), ("write_latch", _U8), ("rw_mode", _U8), ("mode", _U8),
                ("bcd", _U8), ("gate", _U8), ("count_load_time", ctypes.c_int64)]


class kvm_pit_state2(ctypes.Structure):  # noqa: N801
    _fields_ = [("channels", kvm_pit_channel_state * 3), ("flags", _U32),
                ("reserved", _U32 * 9)]


KVM_PIT_FLAGS_HPET_LEGACY = 0x1
KVM_PIT_FLAGS_SPEAKER_DATA_ON = 0x2


class kvm_mp_state(ctypes.Structure):  # noqa: N801
    _fields_ = [("mp_state", _U32)]


KVM_MP_STATE_RUNNABLE = 0
KVM_MP_STATE_HALTED = 3


class kvm_msi(ctypes.Structure):  # noqa: N801
    _fields_ = [("address_lo", _U32), ("address_hi", _U32), ("data", _U32), ("flags", _U32),
                ("devid", _U32), ("pad", _U8 * 12)]


class kvm_ioeventfd(ctypes.Structure):  # noqa: N801
    """KVM_IOEVENTFD: a guest write of `len` bytes at `addr` (matching `datamatch`
    with FLAG_DATAMATCH) signals eventfd `fd` instead of exiting."""

    _fields_ = [("datamatch", _U64), ("addr", _U64), ("len", _U32), ("fd", ctypes.c_int32),
                ("flags", _U32), ("pad", _U8 * 36)]


KVM_IOEVENTFD_FLAG_DATAMATCH = 1 << 0
KVM_IOEVENTFD_FLAG_PIO = 1 << 1
KVM_IOEVENTFD_FLAG_DEASSIGN = 1 << 2


class kvm_irqfd(ctypes.Structure):  # noqa: N801
    """KVM_IRQFD: a write to eventfd `fd` raises GSI `gsi` (edge; with FLAG_RESAMPLE
    level, lowered at the EOI and `resamplefd` signalled)."""

    _fields_ = [("fd", _U32), ("gsi", _U32), ("flags", _U32), ("resamplefd", _U32),
                ("pad", _U8 * 16)]


KVM_IRQFD_FLAG_DEASSIGN = 1 << 0
KVM_IRQFD_FLAG_RESAMPLE = 1 << 1


class kvm_enable_cap(ctypes.Structure):  # noqa: N801
    _fields_ = [("cap", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("args", ctypes.c_uint64 * 4), ("pad", ctypes.c_uint8 * 64)]


class kvm_stats_header(ctypes.Structure):  # noqa: N801
    """The head of a binary statistics file (KVM API, KVM_GET_STATS_FD)."""

    _fields_ = [("flags", ctypes.c_uint32), ("name_size", ctypes.c_uint32),
                ("num_desc", ctypes.c_uint32), ("id_offset", ctypes.c_uint32),
                ("desc_offset", ctypes.c_uint32), ("data_offset", ctypes.c_uint32)]


class kvm_stats_desc(ctypes.Structure):  # noqa: N801
    """One statistic's descriptor; `name_size` bytes of its name follow it."""

    _fields_ = [("flags", ctypes.c_uint32), ("exponent", ctypes.c_int16),
                ("size", ctypes.c_uint16), ("offset", ctypes.c_uint32),
                ("bucket_size", ctypes.c_uint32)]


class kvm_msr_filter_range(ctypes.Structure):  # noqa: N801
    """`nmsrs` MSRs from `base`; bit clear in `bitmap` = the access is filtered."""

    _fields_ = [("flags", ctypes.c_uint32), ("nmsrs", ctypes.c_uint32),
                ("base", ctypes.c_uint32), ("bitmap", ctypes.c_void_p)]


KVM_MSR_FILTER_MAX_RANGES = 16


class kvm_msr_filter(ctypes.Structure):  # noqa: N801
    _fields_ = [("flags", ctypes.c_uint32),
                ("ranges", kvm_msr_filter_range * KVM_MSR_FILTER_MAX_RANGES)]


# kvm_msr_filter_range.flags; kvm_msr_filter.flags; KVM_CAP_X86_USER_SPACE_MSR args[0].
KVM_MSR_FILTER_READ = 1 << 0
KVM_MSR_FILTER_WRITE = 1 << 1
KVM_MSR_FILTER_DEFAULT_ALLOW = 0
KVM_MSR_EXIT_REASON_FILTER = 1 << 2


# -- struct kvm_run (the vCPU's shared page) ---------------------------------

class _ExitHw(ctypes.Structure):
    _fields_ = [("hardware_exit_reason", ctypes.c_uint64)]


class _ExitFailEntry(ctypes.Structure):
    _fields_ = [("hardware_entry_failure_reason", ctypes.c_uint64), ("cpu", ctypes.c_uint32)]


class _ExitException(ctypes.Structure):
    _fields_ = [("exception", ctypes.c_uint32), ("error_code", ctypes.c_uint32)]


KVM_EXIT_IO_IN = 0
KVM_EXIT_IO_OUT = 1


class _ExitIo(ctypes.Structure):
    _fields_ = [
        ("direction", ctypes.c_uint8),
        ("size", ctypes.c_uint8),  # bytes per item: 1, 2 or 4
        ("port", ctypes.c_uint16),
        ("count", ctypes.c_uint32),  # items (> 1 for REP INS/OUTS)
        ("data_offset", ctypes.c_uint64),  # from the start of kvm_run
    ]


class _ExitMmio(ctypes.Structure):
    _fields_ = [
        ("phys_addr", ctypes.c_uint64),
        ("data", ctypes.c_uint8 * 8),
        ("len", ctypes.c_uint32),
        ("is_write", ctypes.c_uint8),
    ]


class _ExitInternal(ctypes.Structure):
    _fields_ = [
        ("suberror", ctypes.c_uint32),
        ("ndata", ctypes.c_uint32),
        ("data", ctypes.c_uint64 * 16),
    ]


class _ExitSystemEvent(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("ndata", ctypes.c_uint32),
        ("data", ctypes.c_uint64 * 16),
    ]


class _ExitDebug(ctypes.Structure):
    """kvm_run.debug.arch for x86 (KVM_EXIT_DEBUG)."""

    _fields_ = [("exception", ctypes.c_uint32), ("pad", ctypes.c_uint32),
                ("pc", ctypes.c_uint64), ("dr6", ctypes.c_uint64), ("dr7", ctypes.c_uint64)]


class _ExitMsr(ctypes.Structure):
    """kvm_run.msr (KVM_EXIT_X86_RDMSR/WRMSR): set `error` to 1 to make it #GP."""

    _fields_ = [("error", ctypes.c_uint8), ("pad", ctypes.c_uint8 * 7),
                ("reason", ctypes.c_uint32), ("index", ctypes.c_uint32),
                ("data", ctypes.c_uint64)]


class _ExitUnion(ctypes.Union):
    _fields_ = [
        ("debug", _ExitDebug),
        ("msr", _ExitMsr),
        ("hw", _ExitHw),
        ("fail_entry", _ExitFailEntry),
        ("ex", _ExitException),
        ("io", _ExitIo),
        ("mmio", _ExitMmio),
        ("internal", _ExitInternal),
        ("system_event", _ExitSystemEvent),
        ("padding", ctypes.c_char * 256),
    ]


class kvm_run(ctypes.Structure):  # noqa: N801
    """The head of the mmap'd kvm_run area (the sync-regs tail is not used)."""

    _fields_ = [
        ("request_interrupt_window", ctypes.c_uint8),
        ("immediate_exit", ctypes.c_uint8),
        ("padding1", ctypes.c_uint8 * 6),
        ("exit_reason", ctypes.c_uint32),
        ("ready_for_interrupt_injection", ctypes.c_uint8),
        ("if_flag", ctypes.c_uint8),
        ("flags", ctypes.c_uint16),
        ("cr8", ctypes.c_uint64),
        ("apic_base", ctypes.c_uint64),
        ("exit", _ExitUnion),
        ("kvm_valid_regs", ctypes.c_uint64),
        ("kvm_dirty_regs", ctypes.c_uint64),
    ]


# -- exit reasons (kvm_run.exit_reason) -------------------------------------

KVM_EXIT_UNKNOWN = 0
KVM_EXIT_EXCEPTION = 1
KVM_EXIT_IO = 2
KVM_EXIT_HYPERCALL = 3
KVM_EXIT_DEBUG = 4
KVM_EXIT_HLT = 5
KVM_EXIT_MMIO = 6
KVM_EXIT_IRQ_WINDOW_OPEN = 7
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_FAIL_ENTRY = 9
KVM_EXIT_INTR = 10
KVM_EXIT_SET_TPR = 11
KVM_EXIT_TPR_ACCESS = 12
KVM_EXIT_NMI = 16
KVM_EXIT_INTERNAL_ERROR = 17
KVM_EXIT_SYSTEM_EVENT = 24
KVM_EXIT_IOAPIC_EOI = 26
KVM_EXIT_X86_RDMSR = 29
KVM_EXIT_X86_WRMSR = 30
KVM_EXIT_X86_BUS_LOCK = 33
KVM_EXIT_NOTIFY = 37
KVM_EXIT_MEMORY_FAULT = 39

# Names used in stats ("exits" category) and messages.
EXIT_REASON_NAMES: dict[int, str] = {
    KVM_EXIT_UNKNOWN: "unknown",
    KVM_EXIT_EXCEPTION: "exception",
    KVM_EXIT_IO: "io",
    KVM_EXIT_HYPERCALL: "hypercall",
    KVM_EXIT_DEBUG: "debug",
    KVM_EXIT_HLT: "hlt",
    KVM_EXIT_MMIO: "mmio",
    KVM_EXIT_IRQ_WINDOW_OPEN: "irq-window",
    KVM_EXIT_SHUTDOWN: "shutdown",
    KVM_EXIT_FAIL_ENTRY: "fail-entry",
    KVM_EXIT_INTR: "intr",
    KVM_EXIT_SET_TPR: "set-tpr",
    KVM_EXIT_TPR_ACCESS: "tpr-access",
    KVM_EXIT_NMI: "nmi",
    KVM_EXIT_INTERNAL_ERROR: "internal-error",
    KVM_EXIT_SYSTEM_EVENT: "system-event",
    KVM_EXIT_IOAPIC_EOI: "ioapic-eoi",
    KVM_EXIT_X86_RDMSR: "rdmsr",
    KVM_EXIT_X86_WRMSR: "wrmsr",
    KVM_EXIT_X86_BUS_LOCK: "bus-lock",
    KVM_EXIT_NOTIFY: "notify",
    KVM_EXIT_MEMORY_FAULT: "memory-fault",
}

# kvm_run.internal.suberror for KVM_EXIT_INTERNAL_ERROR.
KVM_INTERNAL_ERROR_EMULATION = 1
INTERNAL_ERROR_NAMES: dict[int, str] = {
    KVM_INTERNAL_ERROR_EMULATION: "emulation failure (KVM could not emulate an instruction)",
    2: "simultaneous exception (an exception while delivering another)",
    3: "event delivery failed (an exit while delivering an interrupt/exception)",
    4: "unexpected exit reason",
}

# VM-exit basic reasons KVM reports in fail_entry.hardware_entry_failure_reason
# (Intel SDM Vol. 3C Appendix C, "VMX Basic Exit Reasons"; bit 31 = entry failure).
ENTRY_FAILURE_NAMES: dict[int, str] = {
    33: "VM-entry failure due to invalid guest state",
    34: "VM-entry failure due to MSR loading",
    41: "VM-entry failure due to machine-check event",
}
# AMD: VMRUN failed its consistency checks (AMD APM Vol. 2 §15.5.1, VMEXIT_INVALID).
SVM_EXIT_INVALID = 0xFFFFFFFFFFFFFFFF

# -- ioctl numbers ----------------------------------------------------------

# On /dev/kvm:
KVM_GET_API_VERSION = _io(0x00)
KVM_CREATE_VM = _io(0x01)
KVM_GET_MSR_INDEX_LIST = _iowr(0x02, kvm_msr_list)
KVM_CHECK_EXTENSION = _io(0x03)
KVM_GET_VCPU_MMAP_SIZE = _io(0x04)
KVM_GET_SUPPORTED_CPUID = _iowr(0x05, kvm_cpuid2)
# On a VM fd:
KVM_CREATE_VCPU = _io(0x41)
KVM_SET_USER_MEMORY_REGION = _iow(0x46, kvm_userspace_memory_region)
KVM_SET_TSS_ADDR = _io(0x47)
KVM_SET_IDENTITY_MAP_ADDR = _iow(0x48, 8)
# On a vCPU fd:
KVM_RUN = _io(0x80)
KVM_GET_REGS = _ior(0x81, kvm_regs)
KVM_SET_REGS = _iow(0x82, kvm_regs)
KVM_GET_SREGS = _ior(0x83, kvm_sregs)
KVM_SET_SREGS = _iow(0x84, kvm_sregs)
KVM_INTERRUPT = _iow(0x86, kvm_interrupt)
KVM_GET_MSRS = _iowr(0x88, kvm_msrs)
KVM_SET_MSRS = _iow(0x89, kvm_msrs)
KVM_SET_SIGNAL_MASK = _iow(0x8B, kvm_signal_mask)
KVM_GET_FPU = _ior(0x8C, kvm_fpu)
KVM_SET_FPU = _iow(0x8D, kvm_fpu)
KVM_SET_CPUID2 = _iow(0x90, kvm_cpuid2)
KVM_SET_GUEST_DEBUG = _iow(0x9B, kvm_guest_debug)
KVM_CREATE_IRQCHIP = _io(0x60)
KVM_IRQ_LINE = _iow(0x61, kvm_irq_level)
KVM_SET_GSI_ROUTING = _iow(0x6A, kvm_irq_routing)
KVM_CREATE_PIT2 = _iow(0x77, kvm_pit_config)
KVM_GET_IRQCHIP = _iowr(0x62, kvm_irqchip)
KVM_SET_IRQCHIP = _ior(0x63, kvm_irqchip)  # (sic: the kernel declares it _IOR)
KVM_GET_PIT2 = _ior(0x9F, kvm_pit_state2)
KVM_SET_PIT2 = _iow(0xA0, kvm_pit_state2)
KVM_IRQFD = _iow(0x76, kvm_irqfd)
KVM_IOEVENTFD = _iow(0x79, kvm_ioeventfd)
KVM_SIGNAL_MSI = _iow(0xA5, kvm_msi)  # > 0 delivered, 0 blocked by the guest
KVM_GET_MP_STATE = _ior(0x98, kvm_mp_state)  # vCPU ioctls (in-kernel irqchip)
KVM_SET_MP_STATE = _iow(0x99, kvm_mp_state)
KVM_GET_LAPIC = _ior(0x8E, kvm_lapic_state)
KVM_SET_LAPIC = _iow(0x8F, kvm_lapic_state)
KVM_ENABLE_CAP = _iow(0xA3, kvm_enable_cap)
KVM_GET_TSC_KHZ = _io(0xA3)  # vCPU ioctl: the guest TSC frequency in kHz
KVM_X86_SET_MSR_FILTER = _iow(0xC6, kvm_msr_filter)
KVM_GET_STATS_FD = _io(0xCE)  # VM or vCPU ioctl: a read-only binary statistics fd
KVM_GET_VCPU_EVENTS = _ior(0x9F, kvm_vcpu_events)
KVM_SET_VCPU_EVENTS = _iow(0xA0, kvm_vcpu_events)
KVM_GET_DEBUGREGS = _ior(0xA1, kvm_debugregs)
KVM_SET_DEBUGREGS = _iow(0xA2, kvm_debugregs)
KVM_GET_XSAVE = _ior(0xA4, kvm_xsave)
KVM_SET_XSAVE = _iow(0xA5, kvm_xsave)

# KVM_CHECK_EXTENSION capabilities.
KVM_CAP_IRQCHIP = 0
KVM_CAP_USER_MEMORY = 3
KVM_CAP_SET_TSS_ADDR = 4
KVM_CAP_EXT_CPUID = 7
KVM_CAP_NR_MEMSLOTS = 10
KVM_CAP_SET_IDENTITY_MAP_ADDR = 37
KVM_CAP_XSAVE = 55
KVM_CAP_READONLY_MEM = 81
KVM_CAP_IMMEDIATE_EXIT = 136
KVM_CAP_PIT2 = 33
KVM_CAP_PIT_STATE2 = 35
KVM_CAP_IRQ_ROUTING = 25
KVM_CAP_IRQFD = 32
KVM_CAP_IOEVENTFD = 36
KVM_CAP_TSC_DEADLINE_TIMER = 72
KVM_CAP_SIGNAL_MSI = 77
KVM_CAP_X86_USER_SPACE_MSR = 188
KVM_CAP_X86_MSR_FILTER = 189
KVM_CAP_HALT_POLL = 182  # KVM_ENABLE_CAP args[0]: the VM's maximum halt-polling ns
KVM_CAP_BINARY_STATS_FD = 203

# kvm_userspace_memory_region.flags.
KVM_MEM_LOG_DIRTY_PAGES = 1 << 0
KVM_MEM_READONLY = 1 << 1  # guest writes exit as KVM_EXIT_MMIO


class KvmError(PyvmmError):
    """An ioctl on a KVM file descriptor failed."""

    def __init__(self, what: str, errno_: int) -> None:
        super().__init__(f"KVM {what} failed: {os.strerror(errno_)} (errno {errno_})")
        self.errno = errno_


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
_libc.ioctl.restype = ctypes.c_int


def ioctl_raw(fd: int, request: int, arg: object = None) -> tuple[int, int]:
    """One ioctl(2) through libc: (return value, errno).

    ctypes releases the GIL for the call (so a waker thread can run while a
    vCPU is inside KVM_RUN) and, unlike the os module, never retries on EINTR.
    `arg` is None, an int, or a ctypes object (passed by reference).
    """
    if arg is None:
        pointer: object = None
    elif isinstance(arg, int):
        pointer = ctypes.c_void_p(arg)
    else:
        pointer = ctypes.byref(arg)  # type: ignore[arg-type]
    result = _libc.ioctl(fd, request, pointer)
    return result, (ctypes.get_errno() if result < 0 else 0)


def ioctl(fd: int, request: int, arg: object = None, what: str = "ioctl") -> int:
    """ioctl_raw that raises KvmError on failure."""
    result, err = ioctl_raw(fd, request, arg)
    if result < 0:
        raise KvmError(what, err)
    return result
