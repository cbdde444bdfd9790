"""Local APIC (xAPIC and x2APIC modes), one per vCPU, and the bus carrying its messages.

Facts relied on (Intel SDM Vol. 3A, chapter "Advanced Programmable Interrupt
Controller (APIC)", numbered 11 in older and 12 in newer editions; section
titles are cited):

- "Local APIC Status and Location": IA32_APIC_BASE (MSR 0x1B) holds the base
  (bits 12 and up, default 0xFEE00000), BSP (bit 8, read only), x2APIC enable
  (bit 10, EXTD) and the global enable (bit 11); reserved bits set by WRMSR
  raise #GP.  Clearing bit 11 makes the processor behave as one
  without an APIC: the INTR pin goes straight to the 8259 (see
  `interrupt_pending`), and "x2APIC State Transitions" puts the APIC back in
  its power-up state when it is enabled again.
- "Local APIC Register Address Map": 32-bit registers on 16-byte boundaries;
  "All registers must be accessed using 128-bit aligned 32-bit loads or
  stores"; smaller accesses are model specific.  Here a read of 1, 2 or 4
  bytes inside a register's first dword returns those bytes (as KVM does);
  any other read returns 0 and any other write is ignored, both counted.
- "Local APIC Version Register": 0x00050014, version 0x14 and six LVT entries
  (max LVT entry 5), as QEMU's P6-class APIC reports.
- "Task and Processor Priorities": PPR = TPR if TPR[7:4] >= ISRV[7:4], else
  ISRV[7:4] << 4; an IRR vector is dispatched only when its class (bits 7:4)
  is above PPR[7:4].  APR (arbitration priority) is derived the same way from
  TPR and the highest IRR/ISR classes.
- "Interrupt Acceptance for Fixed Interrupts": the highest IRR vector moves
  to ISR on INTA; vectors 0-15 are illegal and set "Received Illegal Vector"
  in the ESR instead of IRR; TMR records a level-triggered vector, and the
  EOI of such a vector is broadcast to the I/O APICs ("End-of-Interrupt
  (EOI)").
- "Error Handling": a write to ESR latches the errors found since the
  previous write into the readable register and clears the internal ones; an
  error also signals the LVT error entry.
- "Spurious Interrupt": SVR bits 7:0 are the spurious vector, bit 8 the
  software enable, bit 12 EOI-broadcast suppression (not offered: version bit
  24 is 0).  While software-disabled every LVT mask bit is set and cannot be
  cleared ("Local APIC State After It Has Been Software Disabled").
- "APIC Timer": the counter runs at the bus clock divided by the Divide
  Configuration Register (bits 0, 1, 3: 0b1011 = 1, else 2^(value+1)); a
  write of the initial count starts it (0 stops it); current count reads the
  remaining count; LVT timer bits 18:17 select one-shot, periodic and
  TSC-deadline mode.  In TSC-deadline mode initial-count writes are ignored,
  current count reads 0, and IA32_TSC_DEADLINE (MSR 0x6E0) arms the timer
  (0 disarms; it reads 0 after firing).  Outside that mode the MSR reads 0
  and writes are ignored.  The bus clock is 1 GHz here (one count per
  nanosecond of the virtual clock before division), KVM's value.
- "Interrupt Command Register (ICR)": vector 7:0, delivery mode 10:8,
  destination mode 11, delivery status 12 (always idle here: delivery is
  immediate), level 14, trigger 15, shorthand 19:18, destination 63:56.
- "Logical Destination Mode": LDR bits 31:24; DFR bits 31:28 select the flat
  (0xF) or cluster (0x0) model, bits 27:0 read as ones.
- Reset values ("Power-Up Reset and INIT Reset"): IRR/ISR/TMR/ICR/LDR/TPR 0,
  timer counts 0, DFR all ones, LVTs masked, SVR 0xFF.  As QEMU and KVM do in
  place of a BIOS, the BSP's LINT0 comes out of reset as ExtINT, unmasked
  (the MP specification's virtual-wire mode), so 8259 interrupts keep
  reaching the CPU until the guest reprograms LINT0.

x2APIC mode ("Extended XAPIC (x2APIC)"): EN and EXTD set.  "x2APIC State
Transitions": xAPIC -> x2APIC is allowed; EXTD without EN, x2APIC -> xAPIC
and disabled -> x2APIC raise #GP.  In x2APIC mode the MMIO page is not
decoded and the registers are MSRs 0x800 + (offset >> 4) ("x2APIC Register
Address Space"): RDMSR of a write-only (EOI, SELF IPI 0x83F) or absent (APR,
RRD, DFR, ICR high) register, WRMSR of a read-only one, of reserved bits or
of a non-zero EOI/ESR value raise #GP; every such access outside x2APIC
mode too.  The ID reads as the 32-bit x2APIC ID; the LDR is derived from it
(cluster = ID bits 19:4 in 31:16, 1 << ID[3:0] in 15:0) and read-only; ICR
is one 64-bit MSR with a 32-bit destination (0xFFFFFFFF: broadcast).

ExtINT through LINT0 means "ask the 8259": `interrupt_pending/acknowledge`
(the protocol of `pyvmm.machine.interrupts.InterruptController`) consult the
PIC given as `extint` when LINT0 is unmasked in ExtINT mode, or when the APIC
is globally disabled.  ExtINT is served before fixed interrupts (as KVM
does).  Nothing reads the host clock: the timer runs on the `VirtualClock`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from pyvmm.machine.clock import Timer, VirtualClock
from pyvmm.machine.interrupts import InterruptController
from pyvmm.schema import NS, U8, U32, U64, Bits, Bool, Int, ListOf, Maybe, Record
from pyvmm.stats import Stats

MSR_IA32_APIC_BASE = 0x1B
MSR_IA32_TSC_DEADLINE = 0x6E0
DEFAULT_BASE = 0xFEE00000
MMIO_SIZE = 0x1000
APIC_VERSION = 0x00050014

BASE_BSP = 1 << 8
BASE_EXTD = 1 << 10  # x2APIC mode ("Extended XAPIC (x2APIC)")
BASE_ENABLE = 1 << 11
PHYS_ADDR_BITS = 36
BASE_ADDRESS_MASK = ((1 << PHYS_ADDR_BITS) - 1) & ~0xFFF
BASE_WRITABLE = BASE_ADDRESS_MASK | BASE_ENABLE | BASE_EXTD | BASE_BSP  # BSP kept, not written
# x2APIC registers are MSRs 0x800 + (xAPIC offset >> 4) ("x2APIC Register Address Space").
X2APIC_MSR_FIRST, X2APIC_MSR_LAST = 0x800, 0x8FF
X2APIC_ICR = 0x830  # ICR as one 64-bit MSR (destination in bits 63:32)
X2APIC_SELF_IPI = 0x83F  # write-only: a fixed, edge self-IPI of vector bits 7:0
X2APIC_BROADCAST = 0xFFFFFFFF
# Not present in x2APIC mode: APR, RRD, DFR and ICR high (their MSRs raise #GP).
X2APIC_ABSENT = frozenset({0x90, 0xC0, 0xE0, 0x310})
# The offsets the x2APIC MSRs reach: ID ... SVR, ISR/TMR/IRR, ESR, the LVTs, ICR,
# the timer's counts and divider, SELF IPI (0x3F0).
X2APIC_PRESENT = frozenset({0x20, 0x30, 0x80, 0xA0, 0xB0, 0xD0, 0xF0, 0x280, 0x2F0, 0x300,
                            *range(0x100, 0x280, 0x10), *range(0x320, 0x380, 0x10),
                            0x380, 0x390, 0x3E0, 0x3F0})
# Read-only in x2APIC mode (a WRMSR raises #GP), besides ISR/TMR/IRR.
X2APIC_READ_ONLY = frozenset({0x20, 0x30, 0xA0, 0xD0, 0x390})

# Register offsets ("Local APIC Register Address Map").
REG_ID, REG_VERSION, REG_TPR, REG_APR, REG_PPR, REG_EOI = 0x20, 0x30, 0x80, 0x90, 0xA0, 0xB0
REG_RRD, REG_LDR, REG_DFR, REG_SVR = 0xC0, 0xD0, 0xE0, 0xF0
REG_ISR, REG_TMR, REG_IRR = 0x100, 0x180, 0x200  # eight registers each
REG_ESR, REG_LVT_CMCI, REG_ICR_LO, REG_ICR_HI = 0x280, 0x2F0, 0x300, 0x310
REG_LVT_TIMER, REG_LVT_THERMAL, REG_LVT_PERF = 0x320, 0x330, 0x340
REG_LVT_LINT0, REG_LVT_LINT1, REG_LVT_ERROR = 0x350, 0x360, 0x370
REG_TIMER_INITIAL, REG_TIMER_CURRENT, REG_TIMER_DIVIDE = 0x380, 0x390, 0x3E0

# LVT index in `LapicState.lvt`, by register.
LVT_REGS = {REG_LVT_TIMER: 0, REG_LVT_THERMAL: 1, REG_LVT_PERF: 2, REG_LVT_LINT0: 3,
            REG_LVT_LINT1: 4, REG_LVT_ERROR: 5, REG_LVT_CMCI: 6}
LVT_TIMER, LVT_LINT0, LVT_LINT1, LVT_ERROR = 0, 3, 4, 5
# Writable bits per LVT ("Local Vector Table" figure): vector, delivery mode
# (not timer/error), polarity/trigger (LINT only), mask, timer mode.
LVT_WRITABLE = (0x000700FF, 0x000107FF, 0x000107FF, 0x0001A7FF, 0x0001A7FF, 0x000100FF,
                0x000107FF)
LVT_MASKED = 1 << 16
LVT_LEVEL = 1 << 15
LVT_REMOTE_IRR = 1 << 14
TIMER_MODE_SHIFT = 17
TIMER_ONESHOT, TIMER_PERIODIC, TIMER_TSC_DEADLINE = 0, 1, 2

SVR_ENABLE = 1 << 8
SVR_WRITABLE = 0x000013FF & ~(1 << 12)  # vector, enable, focus check; no EOI suppression

# Delivery modes (ICR, LVT, I/O APIC redirection entries).
DM_FIXED, DM_LOWEST, DM_SMI, DM_NMI, DM_INIT, DM_STARTUP, DM_EXTINT = 0, 1, 2, 4, 5, 6, 7
ICR_DEST_LOGICAL = 1 << 11
ICR_LEVEL_ASSERT = 1 << 14
ICR_TRIGGER_LEVEL = 1 << 15
ICR_WRITABLE = 0x000CCFFF  # vector, mode, dest mode, level, trigger, shorthand
SH_NONE, SH_SELF, SH_ALL, SH_OTHERS = 0, 1, 2, 3
BROADCAST = 0xFF
# MSI message format (SDM Vol. 3A "Message Address Register Format" and
# "Message Data Register Format").
MSI_ADDRESS_PREFIX = 0xFEE
MSI_REDIRECTION_HINT = 1 << 3
MSI_DEST_LOGICAL = 1 << 2
MSI_TRIGGER_LEVEL = 1 << 15

# ESR bits ("Error Handling").
ESR_SEND_ILLEGAL_VECTOR = 1 << 5
ESR_RECV_ILLEGAL_VECTOR = 1 << 6
ESR_ILLEGAL_REGISTER = 1 << 7

STATS = "lapic"


def _divisor(dcr: int) -> int:
    """Divide Configuration Register bits 0, 1 and 3 -> divisor (0b111 -> 1)."""
    value = (dcr & 3) | (dcr >> 1) & 4
    return 1 if value == 7 else 2 << value


timer_divisor = _divisor  # for converters of this state (engines/kvm/chipstate.py)


def _highest(bits: int) -> int:
    """Highest set vector in a 256-bit register, or -1."""
    return bits.bit_length() - 1


@dataclass
class LapicState:
    """Everything that defines the APIC; plain data for snapshots."""

    apic_id: int = 0
    apic_base: int = DEFAULT_BASE | BASE_ENABLE
    tpr: int = 0
    ldr: int = 0
    dfr: int = 0xFFFFFFFF
    svr: int = 0xFF
    isr: int = 0
    tmr: int = 0
    irr: int = 0
    esr: int = 0  # the readable ESR, latched by the last write
    esr_pending: int = 0  # errors found since the last write
    icr_lo: int = 0
    icr_hi: int = 0
    lvt: list[int] = field(default_factory=lambda: [LVT_MASKED] * 7)
    timer_initial: int = 0
    timer_divide: int = 0
    timer_start_ns: int = 0  # when counting (re)started from timer_initial
    timer_running: bool = False
    tsc_deadline: int = 0
    init_pending: bool = False
    sipi_vector: int | None = None
    nmi_pending: bool = False


U256 = Bits(256)
# Snapshot shape: register widths from the register map; only writable bits set.
LAPIC_STATE = Record({
    "apic_id": U8, "apic_base": U64, "tpr": U8, "ldr": U32, "dfr": U32, "svr": U32,
    "isr": U256, "tmr": U256, "irr": U256, "esr": U8, "esr_pending": U8, "icr_lo": U32,
    "icr_hi": U32, "lvt": ListOf(U32, 7, 7), "timer_initial": U32, "timer_divide": Int(0, 0xB),
    "timer_start_ns": Int(-NS.hi, NS.hi), "timer_running": Bool(), "tsc_deadline": U64,
    "init_pending": Bool(), "sipi_vector": Maybe(U8), "nmi_pending": Bool(),
}, rules=(
    (lambda s: not s["apic_base"] & ~BASE_WRITABLE, "apic_base", "reserved bits set"),
    (lambda s: not s["svr"] & ~SVR_WRITABLE, "svr", "reserved bits set"),
    (lambda s: not s["ldr"] & 0xFFFFFF, "ldr", "bits 23:0 are reserved"),
    (lambda s: not s["icr_hi"] & 0xFFFFFF or s["apic_base"] & BASE_EXTD, "icr_hi",
     "bits 55:32 are reserved outside x2APIC mode"),
    (lambda s: not s["timer_divide"] & 0x4, "timer_divide", "bit 2 is reserved"),
    (lambda s: all(not v & ~(w | LVT_MASKED | LVT_REMOTE_IRR | 1 << 12)
                   for v, w in zip(s["lvt"], LVT_WRITABLE, strict=True)), "lvt",
     "reserved bits set"),
    (lambda s: not s["timer_running"] or s["timer_initial"] > 0, "timer_running",
     "a running count needs a nonzero initial count"),
))


class ApicBus:
    """The APIC message path: delivers interrupts to the local APICs by destination.

    I/O APICs and local APICs (IPIs) send through it; I/O APICs listen for the
    EOI broadcast.  One local APIC per vCPU attaches here.
    """

    def __init__(self) -> None:
        self.lapics: list[LocalApic] = []
        self.eoi_listeners: list[Callable[[int], None]] = []

    def attach(self, lapic: LocalApic) -> None:
        self.lapics.append(lapic)

    def targets(self, dest: int, logical: bool, wide: bool = False) -> list[LocalApic]:
        """APICs matching a destination ("Determining IPI Destination")."""
        return [a for a in self.lapics if a.matches(dest, logical, wide)]

    def deliver(self, dest: int, logical: bool, mode: int, vector: int, level: bool,
                wide: bool = False) -> bool:
        """Deliver one message; returns whether any APIC accepted it.  `wide`: a
        32-bit x2APIC destination (an x2APIC ICR), else the 8-bit xAPIC one."""
        targets = self.targets(dest, logical, wide)
        if mode == DM_LOWEST and targets:
            targets = [min(targets, key=lambda a: a.arbitration_priority())]
        for lapic in targets:
            lapic.accept(mode, vector, level)
        return bool(targets)

    def deliver_msi(self, address: int, data: int) -> bool:
        """A message-signalled interrupt: the (address, data) a PCI function wrote
        (Intel SDM Vol. 3A "Message Signalled Interrupts").

        Address: bits 31:20 are 0xFEE, destination ID 19:12, redirection hint
        bit 3, destination mode bit 2 (1 logical).  Data: vector 7:0, delivery
        mode 10:8, level bit 14, trigger mode bit 15 (1 level).  With the
        redirection hint set in logical mode the lowest-priority APIC of the
        destination set takes it (as KVM reads RH).  A write outside the 0xFEE
        window is not an interrupt: it is dropped and the caller counts it.
        """
        if (address >> 20) & 0xFFF != MSI_ADDRESS_PREFIX:
            return False
        dest = (address >> 12) & 0xFF
        logical = bool(address & MSI_DEST_LOGICAL)
        mode = (data >> 8) & 7
        if address & MSI_REDIRECTION_HINT and logical and mode == DM_FIXED:
            mode = DM_LOWEST
        return self.deliver(dest, logical, mode, data & 0xFF, bool(data & MSI_TRIGGER_LEVEL))

    def broadcast_eoi(self, vector: int) -> None:
        for listener in self.eoi_listeners:
            listener(vector)


class LocalApic:
    """One vCPU's local APIC: MMIO page, MSRs, timer and the engine's interrupt source."""

    def __init__(self, clock: VirtualClock, bus: ApicBus | None = None, *, apic_id: int = 0,
                 bsp: bool = True, extint: InterruptController | None = None,
                 read_tsc: Callable[[], int] | None = None, stats: Stats | None = None) -> None:
        self.clock = clock
        self.bus = bus if bus is not None else ApicBus()
        self.bus.attach(self)
        self.extint = extint
        self.read_tsc = read_tsc if read_tsc is not None else clock.now_ns
        self.stats = stats if stats is not None else Stats()
        self.bsp = bsp
        # Called with the new MMIO base (or None when globally disabled) so the
        # board can move the page on its MMIO bus.
        self.on_base_change: Callable[[int | None], None] | None = None
        self._timer: Timer | None = None
        self.s = self._reset_state(apic_id)

    # -- reset ------------------------------------------------------------------
    def _reset_state(self, apic_id: int) -> LapicState:
        state = LapicState(apic_id=apic_id)
        state.apic_base = DEFAULT_BASE | BASE_ENABLE | (BASE_BSP if self.bsp else 0)
        if self.bsp:
            state.lvt[LVT_LINT0] = DM_EXTINT << 8  # virtual wire, as QEMU/KVM's reset
        return state

    @property
    def enabled(self) -> bool:
        """Globally enabled (IA32_APIC_BASE bit 11)."""
        return bool(self.s.apic_base & BASE_ENABLE)

    @property
    def x2apic(self) -> bool:
        """In x2APIC mode (IA32_APIC_BASE bits 11 and 10): MSRs, no MMIO page."""
        return self.s.apic_base & (BASE_ENABLE | BASE_EXTD) == BASE_ENABLE | BASE_EXTD

    @property
    def mmio_base(self) -> int | None:
        """Where the MMIO page is decoded: nowhere while disabled or in x2APIC mode."""
        return self.base if self.enabled and not self.x2apic else None

    @property
    def software_enabled(self) -> bool:
        return bool(self.s.svr & SVR_ENABLE)

    @property
    def base(self) -> int:
        return self.s.apic_base & BASE_ADDRESS_MASK

    # -- MSRs -------------------------------------------------------------------
    def rdmsr(self, index: int) -> int | None:
        """RDMSR of 0x1B, 0x6E0 or an x2APIC register; None means #GP (another MSR,
        an x2APIC MSR outside x2APIC mode, a write-only or absent register)."""
        if index == MSR_IA32_APIC_BASE:
            return self.s.apic_base
        if index == MSR_IA32_TSC_DEADLINE:
            return self.s.tsc_deadline if self._timer_mode() == TIMER_TSC_DEADLINE else 0
        if X2APIC_MSR_FIRST <= index <= X2APIC_MSR_LAST:
            return self._x2apic_read(index)
        return None

    def wrmsr(self, index: int, value: int) -> bool:
        """WRMSR of 0x1B, 0x6E0 or an x2APIC register; False means #GP (reserved
        bits, an illegal mode transition, or another MSR)."""
        if index == MSR_IA32_APIC_BASE:
            return self._write_base(value)
        if index == MSR_IA32_TSC_DEADLINE:
            if self._timer_mode() == TIMER_TSC_DEADLINE and self.enabled:
                self.s.tsc_deadline = value & (1 << 64) - 1
                self._schedule_deadline()
            return True
        if X2APIC_MSR_FIRST <= index <= X2APIC_MSR_LAST:
            return self._x2apic_write(index, value)
        return False

    # -- x2APIC ("Extended XAPIC (x2APIC)") -------------------------------------------
    def _x2apic_read(self, index: int) -> int | None:
        """"x2APIC Register Availability": RDMSR outside x2APIC mode, of a
        write-only register (EOI, SELF IPI) or of an absent one raises #GP."""
        reg = (index - X2APIC_MSR_FIRST) << 4
        if not self.x2apic or reg in X2APIC_ABSENT or reg == REG_EOI \
                or index == X2APIC_SELF_IPI or reg not in X2APIC_PRESENT:
            self.stats.count(STATS, "x2apic msr #GP")
            return None
        if reg == REG_ID:
            return self.s.apic_id  # the 32-bit x2APIC ID
        if reg == REG_LDR:
            return self.x2apic_ldr()
        if index == X2APIC_ICR:
            return self.s.icr_hi << 32 | self.s.icr_lo
        return self.read_register(reg)

    def _x2apic_write(self, index: int, value: int) -> bool:
        """WRMSR outside x2APIC mode, of a read-only or absent register, with bits
        set that the register reserves (above 31, but for ICR), or of a non-zero
        value to EOI or ESR raises #GP."""
        reg = (index - X2APIC_MSR_FIRST) << 4
        bad = (not self.x2apic or reg in X2APIC_ABSENT or reg in X2APIC_READ_ONLY
               or REG_ISR <= reg < REG_IRR + 0x80 or reg not in X2APIC_PRESENT
               or (index != X2APIC_ICR and value >> 32)
               or (reg in (REG_EOI, REG_ESR) and value)
               or (index == X2APIC_SELF_IPI and value & ~0xFF))
        if bad:
            self.stats.count(STATS, "x2apic msr #GP")
            return False
        if index == X2APIC_SELF_IPI:
            self.stats.count(STATS, "ipis sent")
            self.accept(DM_FIXED, value & 0xFF)
        elif index == X2APIC_ICR:
            self.s.icr_hi = value >> 32
            self._write_icr(value & 0xFFFFFFFF, x2apic_dest=value >> 32)
        else:
            self.write_register(reg, value)
        return True

    def x2apic_ldr(self) -> int:
        """"Logical Destination Mode in x2APIC Mode": cluster ID (x2APIC ID bits
        19:4) in bits 31:16, bit (ID & 0xF) of the logical ID in bits 15:0."""
        apic_id = self.s.apic_id
        return (apic_id >> 4) << 16 | 1 << (apic_id & 0xF)

    def _write_base(self, value: int) -> bool:
        if value & ~(BASE_WRITABLE):
            self.stats.count(STATS, "apic base #GP")
            return False
        # "x2APIC State Transitions": EXTD without EN is invalid; x2APIC -> xAPIC
        # and disabled -> x2APIC are illegal (only through disabled / xAPIC).
        new_mode = value & (BASE_ENABLE | BASE_EXTD)
        old_mode = self.s.apic_base & (BASE_ENABLE | BASE_EXTD)
        if new_mode == BASE_EXTD or (old_mode == BASE_ENABLE | BASE_EXTD
                                     and new_mode == BASE_ENABLE) \
                or (old_mode == 0 and new_mode == BASE_ENABLE | BASE_EXTD):
            self.stats.count(STATS, "apic base #GP")
            return False
        old_mapped = self.mmio_base
        new = (value & ~BASE_BSP) | (self.s.apic_base & BASE_BSP)
        if not value & BASE_ENABLE:
            self._cancel_timer()
            self.s = self._reset_state(self.s.apic_id)
            self.s.apic_base = new
        elif not old_mode & BASE_ENABLE:
            self._cancel_timer()
            self.s = self._reset_state(self.s.apic_id)
            self.s.apic_base = new
        else:
            self.s.apic_base = new
        if self.mmio_base != old_mapped and self.on_base_change:
            self.on_base_change(self.mmio_base)
        return True

    # -- MMIO -------------------------------------------------------------------
    def mmio_read(self, offset: int, size: int) -> int:
        within = offset & 0xF
        if size not in (1, 2, 4) or within + size > 4:
            self.stats.count(STATS, "bad access")
            return 0
        value = self.read_register(offset & ~0xF)
        return (value >> (8 * within)) & ((1 << (8 * size)) - 1)

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        if size != 4 or offset & 0xF:
            self.stats.count(STATS, "bad access")
            return
        self.write_register(offset, value & 0xFFFFFFFF)

    def read_register(self, reg: int) -> int:
        s = self.s
        if REG_ISR <= reg < REG_IRR + 0x80:
            bank, index = divmod(reg - REG_ISR, 0x80)
            bits = (s.isr, s.tmr, s.irr)[bank]
            return (bits >> (32 * (index >> 4))) & 0xFFFFFFFF
        if reg in LVT_REGS:
            return s.lvt[LVT_REGS[reg]]
        simple = {
            REG_ID: lambda: s.apic_id << 24,
            REG_VERSION: lambda: APIC_VERSION,
            REG_TPR: lambda: s.tpr,
            REG_APR: self.arbitration_priority,
            REG_PPR: self.processor_priority,
            REG_EOI: lambda: 0,
            REG_RRD: lambda: 0,
            REG_LDR: lambda: s.ldr,
            REG_DFR: lambda: s.dfr,
            REG_SVR: lambda: s.svr,
            REG_ESR: lambda: s.esr,
            REG_ICR_LO: lambda: s.icr_lo,
            REG_ICR_HI: lambda: s.icr_hi,
            REG_TIMER_INITIAL: lambda: s.timer_initial,
            REG_TIMER_CURRENT: self.current_count,
            REG_TIMER_DIVIDE: lambda: s.timer_divide,
        }
        getter = simple.get(reg)
        if getter is None:
            self._error(ESR_ILLEGAL_REGISTER)
            self.stats.count(STATS, "reserved register")
            return 0
        return getter()

    def write_register(self, reg: int, value: int) -> None:
        s = self.s
        if reg in LVT_REGS:
            self._write_lvt(LVT_REGS[reg], value)
            return
        handler = {
            REG_ID: lambda: setattr(s, "apic_id", value >> 24),
            REG_TPR: lambda: setattr(s, "tpr", value & 0xFF),
            REG_EOI: self.eoi,
            REG_LDR: lambda: setattr(s, "ldr", value & 0xFF000000),
            REG_DFR: lambda: setattr(s, "dfr", value | 0x0FFFFFFF),
            REG_SVR: lambda: self._write_svr(value),
            REG_ESR: self._latch_esr,
            REG_ICR_LO: lambda: self._write_icr(value),
            REG_ICR_HI: lambda: setattr(s, "icr_hi", value & 0xFF000000),
            REG_TIMER_INITIAL: lambda: self._write_initial(value),
            REG_TIMER_DIVIDE: lambda: self._write_divide(value),
        }.get(reg)
        if handler is None:
            # Read-only (version, APR, PPR, ISR/TMR/IRR, current count) or reserved.
            self.stats.count(STATS, "read-only or reserved write")
            return
        handler()

    # -- priorities -------------------------------------------------------------
    def processor_priority(self) -> int:
        """PPR ("Processor Priority Register (PPR)")."""
        isrv = max(_highest(self.s.isr), 0)
        if (self.s.tpr >> 4) >= (isrv >> 4):
            return self.s.tpr
        return isrv & 0xF0

    def arbitration_priority(self) -> int:
        """APR ("Arbitration Priority Register (APR)")."""
        tpr = self.s.tpr
        irrv = max(_highest(self.s.irr), 0)
        isrv = max(_highest(self.s.isr), 0)
        if (tpr >> 4) >= (irrv >> 4) and (tpr >> 4) > (isrv >> 4):
            return tpr
        return max(tpr & 0xF0, isrv & 0xF0, irrv & 0xF0)

    # -- receiving --------------------------------------------------------------
    def matches(self, dest: int, logical: bool, wide: bool = False) -> bool:
        """Whether a message for `dest` in this destination mode is for this APIC.

        In x2APIC mode destinations are 32 bits ("x2APIC Logical Destination
        Mode": cluster in bits 31:16, a bit mask in 15:0; 0xFFFFFFFF broadcast);
        an 8-bit destination (I/O APIC, MSI) of 0xFF is still a broadcast, the
        rest compare the same way (as KVM does without interrupt remapping)."""
        if not self.enabled:
            return False
        if self.x2apic:
            if dest == X2APIC_BROADCAST or (not wide and dest == BROADCAST):
                return True
            if not logical:
                return dest == self.s.apic_id
            ldr = self.x2apic_ldr()
            return dest >> 16 == ldr >> 16 and bool(dest & ldr & 0xFFFF)
        if not logical:
            return dest == BROADCAST or dest == self.s.apic_id
        ldr = self.s.ldr >> 24
        if dest == BROADCAST:
            return True
        if self.s.dfr >> 28 == 0xF:  # flat model
            return bool(ldr & dest)
        return (ldr >> 4) == (dest >> 4) and bool(ldr & dest & 0xF)  # cluster model

    def accept(self, mode: int, vector: int, level: bool = False) -> None:
        """Take one interrupt message (from the bus, an LVT entry or a self-IPI)."""
        if mode in (DM_FIXED, DM_LOWEST):
            self._accept_fixed(vector, level)
        elif mode == DM_NMI:
            self.s.nmi_pending = True
        elif mode == DM_INIT:
            self.s.init_pending = True
        elif mode == DM_STARTUP:
            self.s.sipi_vector = vector
        else:  # SMI and ExtINT messages are not modelled: counted
            self.stats.count(STATS, f"unsupported delivery mode {mode}")

    def _accept_fixed(self, vector: int, level: bool) -> None:
        if vector < 16:
            self._error(ESR_RECV_ILLEGAL_VECTOR)
            return
        bit = 1 << vector
        if self.s.irr & bit:
            self.stats.count(STATS, "coalesced")
        self.s.irr |= bit
        self.s.tmr = self.s.tmr | bit if level else self.s.tmr & ~bit
        self.stats.count(STATS, "accepted")

    def set_lint(self, pin: int, level: bool) -> None:
        """Input on LINT0/LINT1 (fixed or NMI modes; ExtINT is polled through `extint`)."""
        lvt = self.s.lvt[LVT_LINT0 if pin == 0 else LVT_LINT1]
        if not level or lvt & LVT_MASKED or not self.enabled:
            return
        mode = (lvt >> 8) & 7
        if mode != DM_EXTINT:
            self.accept(mode, lvt & 0xFF, bool(lvt & LVT_LEVEL))

    # -- the engine's side: InterruptController protocol ------------------------
    def _extint_active(self) -> bool:
        if self.extint is None:
            return False
        if not self.enabled:
            return True
        lint0 = self.s.lvt[LVT_LINT0]
        return not lint0 & LVT_MASKED and (lint0 >> 8) & 7 == DM_EXTINT

    def _deliverable(self) -> int:
        """The IRR vector the CPU would take now, or -1."""
        if not self.enabled:
            return -1
        vector = _highest(self.s.irr)
        if vector < 0 or (vector >> 4) <= (self.processor_priority() >> 4):
            return -1
        return vector

    def interrupt_pending(self) -> bool:
        if self._extint_active() and self.extint.interrupt_pending():
            return True
        return self._deliverable() >= 0

    def acknowledge(self) -> int:
        """INTA: the PIC's vector for ExtINT, else the highest IRR vector goes to ISR."""
        if self._extint_active() and self.extint.interrupt_pending():
            return self.extint.acknowledge()
        vector = self._deliverable()
        if vector < 0:
            self.stats.count(STATS, "spurious")
            return self.s.svr & 0xFF
        self.s.irr &= ~(1 << vector)
        self.s.isr |= 1 << vector
        self.stats.count(STATS, "delivered")
        return vector

    def eoi(self) -> None:
        """EOI: retire the highest in-service vector; broadcast it if level-triggered."""
        vector = _highest(self.s.isr)
        if vector < 0:
            self.stats.count(STATS, "eoi without isr")
            return
        self.s.isr &= ~(1 << vector)
        if self.s.tmr & (1 << vector):
            self.bus.broadcast_eoi(vector)

    # -- errors -----------------------------------------------------------------
    def _error(self, bit: int) -> None:
        self.s.esr_pending |= bit
        self.stats.count(STATS, "errors")
        lvt = self.s.lvt[LVT_ERROR]
        if not lvt & LVT_MASKED and (lvt & 0xFF) >= 16:
            self._accept_fixed(lvt & 0xFF, False)

    def _latch_esr(self) -> None:
        self.s.esr, self.s.esr_pending = self.s.esr_pending, 0

    # -- registers with side effects ---------------------------------------------
    def _write_svr(self, value: int) -> None:
        self.s.svr = value & SVR_WRITABLE
        if not self.software_enabled:
            self.s.lvt = [lvt | LVT_MASKED for lvt in self.s.lvt]

    def _write_lvt(self, index: int, value: int) -> None:
        old = self.s.lvt[index]
        kept = old & ~LVT_WRITABLE[index] & ~LVT_MASKED
        new = (value & LVT_WRITABLE[index]) | kept
        if not self.software_enabled:
            new |= LVT_MASKED
        self.s.lvt[index] = new
        if index == LVT_TIMER and (old ^ new) >> TIMER_MODE_SHIFT & 3:
            self._timer_mode_changed(old >> TIMER_MODE_SHIFT & 3)

    def _write_icr(self, value: int, x2apic_dest: int | None = None) -> None:
        """An IPI; `x2apic_dest`: the 32-bit destination of an x2APIC ICR write."""
        self.s.icr_lo = value & ICR_WRITABLE
        vector = value & 0xFF
        mode = (value >> 8) & 7
        shorthand = (value >> 18) & 3
        level = bool(value & ICR_TRIGGER_LEVEL)
        if mode == DM_INIT and level and not value & ICR_LEVEL_ASSERT:
            return  # INIT level de-assert: only resynchronises arbitration IDs
        if mode in (DM_FIXED, DM_LOWEST) and vector < 16:
            self._error(ESR_SEND_ILLEGAL_VECTOR)
            return
        self.stats.count(STATS, "ipis sent")
        if shorthand == SH_SELF:
            self.accept(mode, vector, level)
            return
        if shorthand == SH_NONE:
            if x2apic_dest is None:
                self.bus.deliver(self.s.icr_hi >> 24, bool(value & ICR_DEST_LOGICAL), mode,
                                 vector, level)
            else:
                self.bus.deliver(x2apic_dest, bool(value & ICR_DEST_LOGICAL), mode, vector,
                                 level, wide=True)
            return
        for lapic in self.bus.lapics:
            if lapic.enabled and (shorthand == SH_ALL or lapic is not self):
                lapic.accept(mode, vector, level)

    # -- timer ------------------------------------------------------------------
    def _timer_mode(self) -> int:
        return self.s.lvt[LVT_TIMER] >> TIMER_MODE_SHIFT & 3

    def _period_ns(self) -> int:
        return self.s.timer_initial * _divisor(self.s.timer_divide)

    def _timer_mode_changed(self, old_mode: int) -> None:
        """Switching into or out of TSC-deadline mode disarms the timer."""
        if TIMER_TSC_DEADLINE in (old_mode, self._timer_mode()):
            self._cancel_timer()
            self.s.timer_running = False
            self.s.tsc_deadline = 0
        elif self.s.timer_running:
            self._schedule_count()

    def _write_initial(self, value: int) -> None:
        if self._timer_mode() == TIMER_TSC_DEADLINE:
            return
        self.s.timer_initial = value
        self.s.timer_start_ns = self.clock.now_ns()
        self.s.timer_running = value != 0
        self._schedule_count()

    def _write_divide(self, value: int) -> None:
        """A new divisor applies from now: restart the remaining count under it."""
        if self.s.timer_running and self._timer_mode() != TIMER_TSC_DEADLINE:
            remaining = self.current_count()
            now = self.clock.now_ns()
            self.s.timer_divide = value & 0xB
            self.s.timer_start_ns = now - (self.s.timer_initial - remaining) * _divisor(
                self.s.timer_divide)
            self._schedule_count()
        else:
            self.s.timer_divide = value & 0xB

    def current_count(self) -> int:
        s = self.s
        if not s.timer_running or self._timer_mode() == TIMER_TSC_DEADLINE:
            return 0
        elapsed = (self.clock.now_ns() - s.timer_start_ns) // _divisor(s.timer_divide)
        if self._timer_mode() == TIMER_PERIODIC:
            return s.timer_initial - elapsed % s.timer_initial
        return max(0, s.timer_initial - elapsed)

    def stop_timer(self) -> None:
        """Disarm the timer on the clock, keeping the registers (while another
        APIC, KVM's in-kernel one, runs this vCPU's timer)."""
        self._cancel_timer()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _schedule_count(self) -> None:
        self._cancel_timer()
        if not self.s.timer_running:
            return
        period = self._period_ns()
        deadline = self.s.timer_start_ns + period
        now = self.clock.now_ns()
        if self._timer_mode() == TIMER_PERIODIC and deadline <= now:
            # Periods missed while nobody looked coalesce into one (IRR holds one bit):
            # the next deadline is the first period boundary after now.
            missed = (now - self.s.timer_start_ns) // period
            deadline = self.s.timer_start_ns + (missed + 1) * period
            self.s.timer_start_ns = deadline - period
        self._timer = self.clock.set_timer(deadline, self._count_expired)

    def _count_expired(self) -> None:
        self._timer = None
        self._fire()
        if self._timer_mode() == TIMER_PERIODIC:
            self.s.timer_start_ns += self._period_ns()
            self._schedule_count()
        else:
            self.s.timer_running = False

    def _schedule_deadline(self) -> None:
        self._cancel_timer()
        if not self.s.tsc_deadline:
            return
        delay = self.s.tsc_deadline - self.read_tsc()  # a 1 GHz TSC: ticks are ns
        self._timer = self.clock.set_timer_after(max(0, delay), self._deadline_expired)

    def _deadline_expired(self) -> None:
        self._timer = None
        self.s.tsc_deadline = 0
        self._fire()

    def _fire(self) -> None:
        lvt = self.s.lvt[LVT_TIMER]
        self.stats.count(STATS, "timer expirations")
        if not lvt & LVT_MASKED and self.enabled:
            self._accept_fixed(lvt & 0xFF, False)

    # -- snapshot ---------------------------------------------------------------
    def get_state(self) -> dict:
        return asdict(self.s)

    def set_state(self, state: dict) -> None:
        LAPIC_STATE.check(state)
        self._cancel_timer()
        self.s = LapicState(**state)
        self.s.lvt = list(self.s.lvt)
        if self._timer_mode() == TIMER_TSC_DEADLINE:
            self._schedule_deadline()
        else:
            self._schedule_count()
        if self.on_base_change:
            self.on_base_change(self.mmio_base)
