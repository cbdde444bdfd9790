"""Engine-neutral architectural CPU state.

`CpuState` is plain data: what every engine reads on entry and writes back on
exit, and what a snapshot stores.  It holds the full x86-64 register file as
software sees it, plus the hidden parts of the segment registers (the
"descriptor cache", Intel SDM Vol. 3A §3.4.3), which is what lets a 16-, 32-
or 64-bit guest be started in any mode without a descriptor table in memory.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

from pyvmm.cpu.fxsave import DEFAULT_IMAGE, FXSAVE_SIZE
from pyvmm.schema import (
    U8,
    U16,
    U32,
    U64,
    Bits,
    Bool,
    HexBytes,
    IntText,
    ListOf,
    MapOf,
    Maybe,
    Record,
)

# General-purpose register names in encoding order (SDM Vol. 2A §2.1.5, Table 2-2).
GPR_NAMES: tuple[str, ...] = (
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
)  # fmt: skip

SEGMENT_NAMES: tuple[str, ...] = ("es", "cs", "ss", "ds", "fs", "gs")

# RFLAGS bits (SDM Vol. 1 §3.4.3).
FLAG_CF = 1 << 0
FLAG_RESERVED1 = 1 << 1  # always reads 1
FLAG_PF = 1 << 2
FLAG_AF = 1 << 4
FLAG_ZF = 1 << 6
FLAG_SF = 1 << 7
FLAG_TF = 1 << 8
FLAG_IF = 1 << 9
FLAG_DF = 1 << 10
FLAG_OF = 1 << 11
FLAG_IOPL_SHIFT = 12
FLAG_IOPL = 3 << FLAG_IOPL_SHIFT
FLAG_NT = 1 << 14
FLAG_RF = 1 << 16
FLAG_VM = 1 << 17
FLAG_AC = 1 << 18
FLAG_VIF = 1 << 19
FLAG_VIP = 1 << 20
FLAG_ID = 1 << 21

# CR0 bits (SDM Vol. 3A §2.5).
CR0_PE = 1 << 0
CR0_MP = 1 << 1
CR0_EM = 1 << 2
CR0_TS = 1 << 3
CR0_ET = 1 << 4
CR0_NE = 1 << 5
CR0_WP = 1 << 16
CR0_AM = 1 << 18
CR0_NW = 1 << 29
CR0_CD = 1 << 30
CR0_PG = 1 << 31

# CR4 bits (SDM Vol. 3A §2.5).
CR4_VME = 1 << 0
CR4_PVI = 1 << 1
CR4_TSD = 1 << 2
CR4_DE = 1 << 3
CR4_PSE = 1 << 4
CR4_PAE = 1 << 5
CR4_MCE = 1 << 6
CR4_PGE = 1 << 7
CR4_PCE = 1 << 8
CR4_OSFXSR = 1 << 9
CR4_OSXMMEXCPT = 1 << 10
CR4_FSGSBASE = 1 << 16
CR4_OSXSAVE = 1 << 18
CR4_SMEP = 1 << 20
CR4_SMAP = 1 << 21

# IA32_EFER bits (SDM Vol. 3A §2.2.1).
EFER_SCE = 1 << 0
EFER_LME = 1 << 8
EFER_LMA = 1 << 10
EFER_NXE = 1 << 11

# MSR indices used across engines (SDM Vol. 4).
MSR_IA32_TSC = 0x10
MSR_IA32_APIC_BASE = 0x1B
MSR_IA32_SYSENTER_CS = 0x174
MSR_IA32_SYSENTER_ESP = 0x175
MSR_IA32_SYSENTER_EIP = 0x176
MSR_IA32_PAT = 0x277
MSR_IA32_EFER = 0xC0000080
MSR_STAR = 0xC0000081
MSR_LSTAR = 0xC0000082
MSR_CSTAR = 0xC0000083
MSR_SFMASK = 0xC0000084
MSR_FS_BASE = 0xC0000100
MSR_GS_BASE = 0xC0000101
MSR_KERNEL_GS_BASE = 0xC0000102
MSR_TSC_AUX = 0xC0000103


@dataclass
class SegmentState:
    """A segment register: visible selector plus its hidden descriptor cache.

    `type` is the 4-bit descriptor type field; `s` is 1 for code/data, 0 for
    system segments; `db` is the D/B (default size) bit; `l` the 64-bit code
    bit; `g` the granularity bit.  `limit` is the byte-granular effective
    limit (already scaled by G).  `unusable` marks a null-selector load.
    """

    selector: int = 0
    base: int = 0
    limit: int = 0xFFFF
    type: int = 0x3  # read/write data, accessed
    s: int = 1
    dpl: int = 0
    present: int = 1
    avl: int = 0
    l: int = 0
    db: int = 0
    g: int = 0
    unusable: int = 0

    @classmethod
    def real_mode(cls, selector: int, code: bool = False) -> SegmentState:
        """The cache contents of a segment loaded in real mode (base = selector*16)."""
        return cls(selector=selector, base=(selector << 4) & 0xFFFFF, limit=0xFFFF,
                   type=0xB if code else 0x3)

    @classmethod
    def flat32(cls, selector: int, code: bool, dpl: int = 0) -> SegmentState:
        """A flat 4 GiB 32-bit segment (base 0, limit 4G-1, G=1, D/B=1)."""
        return cls(selector=selector, base=0, limit=0xFFFFFFFF, type=0xB if code else 0x3,
                   dpl=dpl, db=1, g=1)

    @classmethod
    def flat64_code(cls, selector: int, dpl: int = 0) -> SegmentState:
        """A 64-bit code segment (L=1, D=0)."""
        return cls(selector=selector, base=0, limit=0xFFFFFFFF, type=0xB, dpl=dpl, l=1, g=1)


@dataclass
class TableRegister:
    """GDTR or IDTR: a linear base and a 16-bit limit."""

    base: int = 0
    limit: int = 0xFFFF


def _default_segments() -> dict[str, SegmentState]:
    segments = {name: SegmentState.real_mode(0) for name in SEGMENT_NAMES}
    return segments


@dataclass
class CpuState:
    """Architectural state of one x86-64 logical processor.

    The default is the state after RESET (SDM Vol. 3A §9.1.1, Table 9-1),
    except that CS:IP is 0000:0000; loaders set the entry state they need.
    """

    gprs: list[int] = field(default_factory=lambda: [0] * 16)
    rip: int = 0
    rflags: int = FLAG_RESERVED1
    segments: dict[str, SegmentState] = field(default_factory=_default_segments)
    ldtr: SegmentState = field(
        default_factory=lambda: SegmentState(type=0x2, s=0, limit=0xFFFF))
    tr: SegmentState = field(
        default_factory=lambda: SegmentState(type=0xB, s=0, limit=0xFFFF))
    gdtr: TableRegister = field(default_factory=TableRegister)
    idtr: TableRegister = field(default_factory=TableRegister)
    cr0: int = CR0_ET | CR0_NW | CR0_CD
    cr2: int = 0
    cr3: int = 0
    cr4: int = 0
    cr8: int = 0
    efer: int = 0
    dr: list[int] = field(default_factory=lambda: [0, 0, 0, 0, 0, 0, 0xFFFF0FF0, 0x400])
    apic_base: int = 0xFEE00900
    # Model-specific registers not given a field above, by index.
    msrs: dict[int, int] = field(default_factory=dict)
    # Interrupt shadow after STI / MOV SS (SDM Vol. 3A §6.8.3).
    interrupt_shadow: bool = False
    halted: bool = False
    # An external interrupt's vector already taken from the interrupt controller
    # (INTA done) but not yet delivered through the IDT/IVT: an engine that
    # queues injections (KVM's kvm_vcpu_events.interrupt) can stop in between.
    pending_interrupt: int | None = None
    # The x87/MMX/SSE state as a 512-byte FXSAVE image (64-bit layout, SDM Vol. 2A
    # Table 3-53; field helpers in pyvmm.cpu.fxsave), by default the FNINIT state.
    fpu_image: bytes = DEFAULT_IMAGE

    # -- convenience accessors ------------------------------------------------
    def __getattr__(self, name: str) -> int:
        # Called only when normal lookup fails: lets state.rax etc. work.
        try:
            index = GPR_NAMES.index(name)
        except ValueError:
            raise AttributeError(name) from None
        return self.gprs[index]

    def set_gpr(self, name: str, value: int) -> None:
        self.gprs[GPR_NAMES.index(name)] = value & 0xFFFFFFFFFFFFFFFF

    def segment(self, name: str) -> SegmentState:
        return self.segments[name]

    @property
    def cpl(self) -> int:
        """Current privilege level: the DPL cached in SS (SDM Vol. 3A §5.5)."""
        if not self.cr0 & CR0_PE:
            return 0
        if self.rflags & FLAG_VM:
            return 3
        return self.segments["ss"].dpl

    @property
    def long_mode_active(self) -> bool:
        return bool(self.efer & EFER_LMA)

    def mode_name(self) -> str:
        """Human-readable operating mode, for reports."""
        if not self.cr0 & CR0_PE:
            return "real"
        if self.rflags & FLAG_VM:
            return "virtual-8086"
        if self.efer & EFER_LMA:
            return "64-bit" if self.segments["cs"].l else "compatibility"
        return "protected-32" if self.segments["cs"].db else "protected-16"

    def copy(self) -> CpuState:
        return copy.deepcopy(self)

    def to_dict(self) -> dict:
        """A JSON-serialisable form (used by snapshots and reports)."""
        data = asdict(self)
        data["msrs"] = {str(k): v for k, v in self.msrs.items()}
        data["fpu_image"] = self.fpu_image.hex()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> CpuState:
        """From `to_dict`'s form, checked against CPU_STATE (StateError names the field)."""
        CPU_STATE.check(data)
        data = dict(data)
        data["segments"] = {k: SegmentState(**v) for k, v in data["segments"].items()}
        data["ldtr"] = SegmentState(**data["ldtr"])
        data["tr"] = SegmentState(**data["tr"])
        data["gdtr"] = TableRegister(**data["gdtr"])
        data["idtr"] = TableRegister(**data["idtr"])
        data["msrs"] = {int(k): v for k, v in data["msrs"].items()}
        image = data.get("fpu_image")
        data["fpu_image"] = bytes.fromhex(image) if image else DEFAULT_IMAGE
        if len(data["fpu_image"]) != FXSAVE_SIZE:
            raise ValueError(f"fpu_image is {len(data['fpu_image'])} bytes, not {FXSAVE_SIZE}")
        return cls(**data)


# The shape of `CpuState.to_dict()`: architectural register widths (SDM Vol. 3A
# §3.4.5 descriptor fields, §2.4 GDTR/IDTR, 64-bit GPRs/CRs/DRs/MSRs).
SEGMENT_STATE = Record({
    "selector": U16, "base": U64, "limit": U32, "type": Bits(4), "s": Bits(1), "dpl": Bits(2),
    "present": Bits(1), "avl": Bits(1), "l": Bits(1), "db": Bits(1), "g": Bits(1),
    "unusable": Bits(1),
})
TABLE_STATE = Record({"base": U64, "limit": U16})
CPU_STATE = Record({
    "gprs": ListOf(U64, 16, 16), "rip": U64, "rflags": U64,
    "segments": Record({name: SEGMENT_STATE for name in SEGMENT_NAMES}),
    "ldtr": SEGMENT_STATE, "tr": SEGMENT_STATE, "gdtr": TABLE_STATE, "idtr": TABLE_STATE,
    "cr0": U64, "cr2": U64, "cr3": U64, "cr4": U64, "cr8": U64, "efer": U64,
    "dr": ListOf(U64, 8, 8), "apic_base": U64, "msrs": MapOf(IntText(0, (1 << 32) - 1), U64),
    "interrupt_shadow": Bool(), "halted": Bool(), "pending_interrupt": Maybe(U8),
    "fpu_image": Maybe(HexBytes(FXSAVE_SIZE)),
})
