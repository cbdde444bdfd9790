"""82093AA I/O APIC facts (datasheet 290566, section 3), delivered to real local APICs."""

from __future__ import annotations

from pyvmm.devices.ioapic import IOAPIC_VERSION, IoApic
from pyvmm.devices.lapic import ApicBus, LocalApic
from pyvmm.machine.clock import ClockSource, VirtualClock
from pyvmm.stats import Stats

LEVEL, MASKED, REMOTE_IRR, LOGICAL = 1 << 15, 1 << 16, 1 << 14, 1 << 11


def setup(stats: Stats | None = None) -> tuple[IoApic, LocalApic]:
    bus = ApicBus()
    lapic = LocalApic(VirtualClock(ClockSource.MANUAL), bus, apic_id=0)
    lapic.mmio_write(0xF0, 4, 0x1FF)  # software enable
    return IoApic(bus, stats), lapic


def reg_write(io: IoApic, index: int, value: int) -> None:
    io.mmio_write(0x00, 4, index)
    io.mmio_write(0x10, 4, value)


def reg_read(io: IoApic, index: int) -> int:
    io.mmio_write(0x00, 4, index)
    return io.mmio_read(0x10, 4)


def route(io: IoApic, pin: int, low: int, dest: int = 0) -> None:
    reg_write(io, 0x11 + 2 * pin, dest << 24)
    reg_write(io, 0x10 + 2 * pin, low)


def test_identification_registers() -> None:
    io, _ = setup()
    assert reg_read(io, 0x01) == IOAPIC_VERSION == 0x00170011
    reg_write(io, 0x00, 0x0A000000)
    assert reg_read(io, 0x00) == 0x0A000000
    assert reg_read(io, 0x02) == 0x0A000000  # arbitration ID loaded from the ID
    reg_write(io, 0x01, 0)
    assert reg_read(io, 0x01) == IOAPIC_VERSION
    assert io.mmio_read(0x00, 4) == 0x01  # IOREGSEL reads back


def test_entries_reset_masked_and_read_only_bits_kept() -> None:
    io, _ = setup()
    assert all(reg_read(io, 0x10 + 2 * p) == MASKED for p in range(24))
    reg_write(io, 0x10, 0xFFFFFFFF)
    assert reg_read(io, 0x10) == 0xFFFFFFFF & ~(1 << 12) & ~REMOTE_IRR & 0x1FFFF
    reg_write(io, 0x11, 0xFFFFFFFF)
    assert reg_read(io, 0x11) == 0xFF000000


def test_edge_pin_delivers_on_each_rising_edge() -> None:
    io, lapic = setup()
    route(io, 2, 0x30)
    io.set_irq(2, True)
    io.set_irq(2, True)  # no new edge
    assert lapic.acknowledge() == 0x30
    lapic.mmio_write(0xB0, 4, 0)  # EOI
    assert not lapic.interrupt_pending()
    io.set_irq(2, False)
    io.set_irq(2, True)
    assert lapic.interrupt_pending()


def test_masked_edge_is_discarded() -> None:
    io, lapic = setup()
    route(io, 4, MASKED | 0x34)
    io.set_irq(4, True)
    route(io, 4, 0x34)
    assert not lapic.interrupt_pending()


def test_level_pin_remote_irr_and_eoi_broadcast() -> None:
    io, lapic = setup()
    route(io, 9, LEVEL | 0x49)
    io.set_irq(9, True)
    assert reg_read(io, 0x10 + 18) & REMOTE_IRR
    assert lapic.acknowledge() == 0x49
    assert lapic.s.tmr >> 0x49 & 1  # level: the LAPIC's TMR is set
    io.set_irq(9, False)
    io.set_irq(9, True)
    assert not lapic.interrupt_pending()  # remote IRR blocks
    lapic.mmio_write(0xB0, 4, 0)  # EOI, broadcast to the I/O APIC
    assert reg_read(io, 0x10 + 18) & REMOTE_IRR  # cleared, then set by the redelivery
    assert lapic.acknowledge() == 0x49  # still asserted: delivered again
    io.set_irq(9, False)
    lapic.mmio_write(0xB0, 4, 0)
    assert not reg_read(io, 0x10 + 18) & REMOTE_IRR
    assert not lapic.interrupt_pending()


def test_unmasking_asserted_level_pin_delivers() -> None:
    io, lapic = setup()
    route(io, 10, MASKED | LEVEL | 0x50)
    io.set_irq(10, True)
    assert not lapic.interrupt_pending()
    route(io, 10, LEVEL | 0x50)
    assert lapic.acknowledge() == 0x50


def test_destination_physical_and_logical() -> None:
    bus = ApicBus()
    clock = VirtualClock(ClockSource.MANUAL)
    a = LocalApic(clock, bus, apic_id=0)
    b = LocalApic(clock, bus, apic_id=1, bsp=False)
    for lapic in (a, b):
        lapic.mmio_write(0xF0, 4, 0x1FF)
    b.mmio_write(0xD0, 4, 0x04000000)
    io = IoApic(bus)
    route(io, 1, 0x41, dest=1)
    io.set_irq(1, True)
    assert b.interrupt_pending() and not a.interrupt_pending()
    b.acknowledge()
    b.mmio_write(0xB0, 4, 0)  # EOI
    route(io, 3, LOGICAL | 0x43, dest=0x04)
    io.set_irq(3, True)
    assert b.acknowledge() == 0x43 and not a.interrupt_pending()


def test_bad_accesses_are_counted_not_fatal() -> None:
    stats = Stats()
    io, _ = setup(stats)
    io.mmio_write(0x10, 2, 0xFFFF)
    assert io.mmio_read(0x10, 1) == 0
    assert io.mmio_read(0x20, 4) == 0
    io.set_irq(40, True)
    assert reg_read(io, 0x80) == 0
    assert stats.get("ioapic", "bad access") == 3
    assert stats.get("ioapic", "bad pin") == 1
    assert stats.get("ioapic", "reserved register") == 1


def test_snapshot_round_trip_keeps_remote_irr() -> None:
    io, lapic = setup()
    route(io, 9, LEVEL | 0x49)
    io.set_irq(9, True)
    bus = ApicBus()
    copy = IoApic(bus)
    copy.set_state(io.get_state())
    assert reg_read(copy, 0x10 + 18) == reg_read(io, 0x10 + 18)
    assert copy.s.asserted == 1 << 9
