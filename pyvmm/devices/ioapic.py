"""Intel 82093AA I/O APIC: 24 interrupt pins routed to local APICs.

Facts relied on (82093AA I/O Advanced Programmable Interrupt Controller
datasheet, order 290566, section 3 "Register Description"):

- Two memory-mapped registers (default base 0xFEC00000): IOREGSEL at offset
  0x00 (bits 7:0 select an indirect register) and IOWIN at offset 0x10, the
  32-bit window onto the selected register.  IOWIN is accessed as a dword
  (other sizes are ignored here and counted); IOREGSEL keeps only its low
  byte.
- Indirect registers: 0x00 IOAPICID (bits 27:24 read/write), 0x01 IOAPICVER
  (read only: version 0x11 in bits 7:0, maximum redirection entry 0x17 = 24
  entries in bits 23:16), 0x02 IOAPICARB (read only: arbitration ID in bits
  27:24, loaded from the ID when the ID is written), 0x10-0x3F the
  redirection table, two registers per entry (low dword first).
- Redirection entry: vector 7:0, delivery mode 10:8, destination mode 11
  (0 physical, 1 logical), delivery status 12 (read only; always idle here,
  delivery is immediate), input pin polarity 13, remote IRR 14 (read only),
  trigger mode 15 (1 = level), mask 16, destination 63:56.  Entries come out
  of reset masked.
- Edge-triggered pins deliver once per assertion; an edge on a masked pin is
  ignored.  A level-triggered pin delivers while asserted and sets remote
  IRR, which blocks further deliveries until the local APIC's EOI broadcast
  of the entry's vector clears it; a pin still asserted then delivers again.
  As in QEMU and KVM, unmasking an asserted level pin with remote IRR clear
  delivers it.

Inputs are logical assertions (`set_irq(pin, asserted)`): the polarity bit is
stored for the guest to read back, and the board's wiring presents every
source as asserted-high, as QEMU's and KVM's I/O APICs do.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from pyvmm.devices.lapic import ApicBus
from pyvmm.schema import U8, U64, Bits, Int, ListOf, Record
from pyvmm.stats import Stats

DEFAULT_BASE = 0xFEC00000
MMIO_SIZE = 0x1000
PINS = 24
IOAPIC_VERSION = 0x00170011  # 24 entries (max 0x17), version 0x11
OFF_IOREGSEL, OFF_IOWIN = 0x00, 0x10
REG_ID, REG_VERSION, REG_ARB, REG_REDTBL = 0x00, 0x01, 0x02, 0x10

RTE_DELIVERY_STATUS = 1 << 12
RTE_REMOTE_IRR = 1 << 14
RTE_LEVEL = 1 << 15
RTE_MASKED = 1 << 16
RTE_LOW_WRITABLE = 0x1AFFF  # all but delivery status and remote IRR
RTE_DEST_LOGICAL = 1 << 11

STATS = "ioapic"


@dataclass
class IoApicState:
    ioapic_id: int = 0
    arb_id: int = 0
    ioregsel: int = 0
    redirection: list[int] = field(default_factory=lambda: [RTE_MASKED] * PINS)
    asserted: int = 0  # input pin levels, one bit per pin


# Snapshot shape: 4-bit IDs, 24 64-bit entries with reserved bits 55:17 clear.
IOAPIC_STATE = Record({
    "ioapic_id": Int(0, 15), "arb_id": Int(0, 15), "ioregsel": U8,
    "redirection": ListOf(U64, PINS, PINS), "asserted": Bits(PINS),
}, rules=((lambda s: all(not e & ~(0xFF << 56 | RTE_LOW_WRITABLE | RTE_REMOTE_IRR)
                         for e in s["redirection"]), "redirection", "reserved bits set"),))


class IoApic:
    """MMIO device (IOREGSEL/IOWIN) and the GSI sink for pins 0-23."""

    def __init__(self, bus: ApicBus, stats: Stats | None = None) -> None:
        self.bus = bus
        self.stats = stats if stats is not None else Stats()
        self.s = IoApicState()
        bus.eoi_listeners.append(self.eoi)

    # -- MMIO -------------------------------------------------------------------
    def mmio_read(self, offset: int, size: int) -> int:
        if offset == OFF_IOREGSEL and size in (1, 2, 4):
            return self.s.ioregsel
        if offset == OFF_IOWIN and size == 4:
            return self.read_register(self.s.ioregsel)
        self.stats.count(STATS, "bad access")
        return 0

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        if offset == OFF_IOREGSEL and size in (1, 2, 4):
            self.s.ioregsel = value & 0xFF
        elif offset == OFF_IOWIN and size == 4:
            self.write_register(self.s.ioregsel, value & 0xFFFFFFFF)
        else:
            self.stats.count(STATS, "bad access")

    def read_register(self, index: int) -> int:
        if index == REG_ID:
            return self.s.ioapic_id << 24
        if index == REG_VERSION:
            return IOAPIC_VERSION
        if index == REG_ARB:
            return self.s.arb_id << 24
        if REG_REDTBL <= index < REG_REDTBL + 2 * PINS:
            pin, high = divmod(index - REG_REDTBL, 2)
            return (self.s.redirection[pin] >> (32 * high)) & 0xFFFFFFFF
        self.stats.count(STATS, "reserved register")
        return 0

    def write_register(self, index: int, value: int) -> None:
        if index == REG_ID:
            self.s.ioapic_id = self.s.arb_id = (value >> 24) & 0xF
            return
        if not REG_REDTBL <= index < REG_REDTBL + 2 * PINS:
            self.stats.count(STATS, "read-only or reserved write")
            return
        pin, high = divmod(index - REG_REDTBL, 2)
        entry = self.s.redirection[pin]
        if high:
            entry = (entry & 0xFFFFFFFF) | (value & 0xFF000000) << 32
        else:
            kept = entry & ~RTE_LOW_WRITABLE
            entry = kept | (value & RTE_LOW_WRITABLE)
            if not entry & RTE_LEVEL:
                entry &= ~RTE_REMOTE_IRR  # remote IRR is undefined for edge entries
        self.s.redirection[pin] = entry
        if not high:
            self._service_level(pin)

    # -- inputs -----------------------------------------------------------------
    def set_irq(self, pin: int, level: bool) -> None:
        """IrqSink: the input pin `pin` is asserted (True) or not."""
        if not 0 <= pin < PINS:
            self.stats.count(STATS, "bad pin")
            return
        bit = 1 << pin
        was = bool(self.s.asserted & bit)
        self.s.asserted = self.s.asserted | bit if level else self.s.asserted & ~bit
        entry = self.s.redirection[pin]
        if entry & RTE_LEVEL:
            self._service_level(pin)
        elif level and not was and not entry & RTE_MASKED:
            self._send(pin)

    def _service_level(self, pin: int) -> None:
        entry = self.s.redirection[pin]
        if (entry & RTE_LEVEL and not entry & (RTE_MASKED | RTE_REMOTE_IRR)
                and self.s.asserted >> pin & 1):
            self.s.redirection[pin] |= RTE_REMOTE_IRR
            self._send(pin)

    def _send(self, pin: int) -> None:
        entry = self.s.redirection[pin]
        self.stats.count(STATS, "delivered")
        accepted = self.bus.deliver(entry >> 56, bool(entry & RTE_DEST_LOGICAL),
                                    (entry >> 8) & 7, entry & 0xFF, bool(entry & RTE_LEVEL))
        if not accepted:
            self.stats.count(STATS, "no destination")

    def eoi(self, vector: int) -> None:
        """The local APIC's EOI broadcast: clear remote IRR of entries with this vector."""
        for pin, entry in enumerate(self.s.redirection):
            if entry & RTE_REMOTE_IRR and entry & 0xFF == vector:
                self.s.redirection[pin] = entry & ~RTE_REMOTE_IRR
                self._service_level(pin)

    # -- snapshot ---------------------------------------------------------------
    def get_state(self) -> dict:
        return asdict(self.s)

    def set_state(self, state: dict) -> None:
        IOAPIC_STATE.check(state)
        self.s = IoApicState(**state)
        self.s.redirection = list(self.s.redirection)
