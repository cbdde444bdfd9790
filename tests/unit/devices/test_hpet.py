"""HPET facts from the IA-PC HPET Specification 1.0a (section numbers in each test)."""

from __future__ import annotations

import pytest

from pyvmm.devices.hpet import Hpet
from pyvmm.machine.clock import ClockSource, VirtualClock
from pyvmm.machine.interrupts import IrqLine
from pyvmm.schema import StateError
from pyvmm.stats import Stats
from tests.unit.devices.irq_sink import Sink

GCAP, CONF, STATUS, COUNTER = 0x000, 0x010, 0x020, 0x0F0
ENABLE, LEGACY = 1, 2
LEVEL, INT_ENB, PERIODIC, VAL_SET, MODE32 = 1 << 1, 1 << 2, 1 << 3, 1 << 6, 1 << 8


def tn_conf(n: int) -> int:
    return 0x100 + 0x20 * n


def tn_cmp(n: int) -> int:
    return 0x108 + 0x20 * n


class Board:
    """The lines an HPET drives: ISA IRQs (8259 + override) and I/O APIC pins."""

    def __init__(self) -> None:
        self.clock = VirtualClock(ClockSource.MANUAL)
        self.isa = {irq: Sink() for irq in range(16)}
        self.pins = {pin: Sink() for pin in range(24)}
        self.stats = Stats()
        self.hpet = Hpet(self.clock, lambda irq: IrqLine(self.isa[irq], irq),
                         lambda pin: IrqLine(self.pins[pin], pin), self.stats)

    def run_to(self, ns: int) -> None:
        while (deadline := self.clock.next_deadline()) is not None and deadline <= ns:
            self.clock.advance_to(deadline)
            self.clock.run_due()
        self.clock.advance_to(ns)


def write64(hpet: Hpet, offset: int, value: int) -> None:
    hpet.mmio_write(offset, 8, value)


def test_capabilities_register() -> None:
    """§2.3.4: period in fs (<= 100 ns), 64-bit counter, legacy capable, 3 timers."""
    hpet = Board().hpet
    caps = hpet.mmio_read(GCAP, 8)
    period_fs = caps >> 32
    assert 0 < period_fs <= 0x05F5E100
    assert period_fs == 10_000_000
    assert caps & (1 << 15)  # LEG_RT_CAP
    assert caps & (1 << 13)  # COUNT_SIZE_CAP
    assert (caps >> 8) & 0x1F == 2  # NUM_TIM_CAP: last timer is number 2
    assert caps & 0xFF != 0  # REV_ID
    assert hpet.mmio_read(GCAP + 4, 4) == period_fs  # the high dword alone
    hpet.mmio_write(GCAP, 8, 0)
    assert hpet.mmio_read(GCAP, 8) == caps  # read only


def test_counter_halted_until_enabled_and_writable() -> None:
    """§2.3.5/§2.3.7: the counter runs only with ENABLE_CNF; it can be written halted."""
    board = Board()
    hpet = board.hpet
    board.run_to(1000)
    assert hpet.mmio_read(COUNTER, 8) == 0
    write64(hpet, COUNTER, 0x1_0000_0005)
    assert hpet.mmio_read(COUNTER, 4) == 5 and hpet.mmio_read(COUNTER + 4, 4) == 1
    hpet.mmio_write(CONF, 4, ENABLE)
    board.run_to(1000 + 250)  # 25 ticks of 10 ns
    assert hpet.mmio_read(COUNTER, 8) == 0x1_0000_0005 + 25
    hpet.mmio_write(CONF, 4, 0)
    board.run_to(5000)
    assert hpet.mmio_read(COUNTER, 8) == 0x1_0000_0005 + 25  # halted


def test_one_shot_edge_timer_routed_to_ioapic_pin() -> None:
    """§2.3.8/§2.3.9.2.1: a non-periodic timer interrupts once at the match."""
    board = Board()
    hpet = board.hpet
    caps = hpet.mmio_read(tn_conf(2), 8)
    assert caps >> 32 & (1 << 20)  # pin 20 offered
    assert not caps & (1 << 4)  # timer 2 is one-shot only
    hpet.mmio_write(tn_conf(2), 4, INT_ENB | (20 << 9))
    assert (hpet.mmio_read(tn_conf(2), 4) >> 9) & 0x1F == 20
    write64(hpet, tn_cmp(2), 100)
    hpet.mmio_write(CONF, 4, ENABLE)
    board.run_to(999)
    assert board.pins[20].rises == 0
    board.run_to(1000)
    assert board.pins[20].rises == 1 and not board.pins[20].level
    board.run_to(100_000)
    assert board.pins[20].rises == 1
    assert hpet.mmio_read(STATUS, 4) == 0  # edge mode leaves the status bit clear


def test_route_outside_the_capability_is_not_taken() -> None:
    """§2.3.8: a Tn_INT_ROUTE_CNF value the timer does not support does not read back."""
    board = Board()
    hpet = board.hpet
    hpet.mmio_write(tn_conf(1), 4, 5 << 9)
    assert (hpet.mmio_read(tn_conf(1), 4) >> 9) & 0x1F == 0
    assert board.stats.get("hpet", "route outside Tn_INT_ROUTE_CAP ignored") == 1


def test_one_shot_32bit_matches_again_after_the_counter_wraps() -> None:
    """§2.3.9.2.1: in 32-bit mode only the low 32 bits compare, each wrap matches again."""
    board = Board()
    hpet = board.hpet
    hpet.mmio_write(tn_conf(2), 4, INT_ENB | MODE32 | (21 << 9))
    write64(hpet, tn_cmp(2), 0x1_0000_0010)
    assert hpet.mmio_read(tn_cmp(2), 8) == 0x10  # upper half is 0 in 32-bit mode
    hpet.mmio_write(CONF, 4, ENABLE)
    board.run_to(0x10 * 10)
    assert board.pins[21].rises == 1
    board.run_to((0x10 + (1 << 32)) * 10)
    assert board.pins[21].rises == 2


def test_periodic_timer_with_val_set() -> None:
    """§2.3.9.2.2: VAL_SET sets the accumulator; later writes set the period only."""
    board = Board()
    hpet = board.hpet
    assert hpet.mmio_read(tn_conf(0), 4) & (1 << 4)  # timer 0 periodic-capable
    hpet.mmio_write(tn_conf(0), 4, INT_ENB | PERIODIC | VAL_SET | (22 << 9))
    write64(hpet, tn_cmp(0), 50)  # first match at tick 50
    write64(hpet, tn_cmp(0), 20)  # period 20 (VAL_SET cleared itself)
    assert not hpet.mmio_read(tn_conf(0), 4) & VAL_SET
    hpet.mmio_write(CONF, 4, ENABLE)
    board.run_to(500)
    assert board.pins[22].rises == 1
    assert hpet.mmio_read(tn_cmp(0), 8) == 70
    board.run_to(500 + 5 * 200)
    assert board.pins[22].rises == 6
    assert hpet.mmio_read(tn_cmp(0), 8) == 70 + 5 * 20


def test_periodic_timer_catches_up_with_one_interrupt() -> None:
    board = Board()
    hpet = board.hpet
    hpet.mmio_write(tn_conf(0), 4, INT_ENB | PERIODIC | VAL_SET | (22 << 9))
    write64(hpet, tn_cmp(0), 10)
    hpet.mmio_write(CONF, 4, ENABLE)
    board.clock.advance_to(10 * 10 * 1000)  # a clock jump over 1000 periods
    assert board.clock.run_due() == 1
    assert board.pins[22].rises == 1
    assert hpet.mmio_read(tn_cmp(0), 8) > hpet.mmio_read(COUNTER, 8)


def test_periodic_type_is_not_writable_on_a_one_shot_timer() -> None:
    hpet = Board().hpet
    hpet.mmio_write(tn_conf(1), 4, PERIODIC)
    assert not hpet.mmio_read(tn_conf(1), 4) & PERIODIC


def test_level_interrupt_status_write_one_to_clear() -> None:
    """§2.3.6: level mode sets Tn_INT_STS and holds the pin until software writes 1."""
    board = Board()
    hpet = board.hpet
    hpet.mmio_write(tn_conf(2), 4, LEVEL | INT_ENB | (23 << 9))
    write64(hpet, tn_cmp(2), 5)
    hpet.mmio_write(CONF, 4, ENABLE)
    board.run_to(50)
    assert hpet.mmio_read(STATUS, 4) == 1 << 2
    assert board.pins[23].level
    hpet.mmio_write(STATUS, 4, 0)  # writing 0 has no effect
    assert hpet.mmio_read(STATUS, 4) == 1 << 2 and board.pins[23].level
    hpet.mmio_write(STATUS, 4, 1 << 2)
    assert hpet.mmio_read(STATUS, 4) == 0 and not board.pins[23].level


def test_level_status_set_even_when_the_interrupt_is_disabled() -> None:
    """§2.3.8 Tn_INT_ENB_CNF: a disabled timer still sets its status bit."""
    board = Board()
    hpet = board.hpet
    hpet.mmio_write(tn_conf(2), 4, LEVEL | (23 << 9))
    write64(hpet, tn_cmp(2), 5)
    hpet.mmio_write(CONF, 4, ENABLE)
    board.run_to(50)
    assert hpet.mmio_read(STATUS, 4) == 1 << 2
    assert not board.pins[23].level


def test_legacy_replacement_routes_timer0_to_irq0_and_timer1_to_irq8() -> None:
    """§2.3.9.2.2 Legacy Replacement: timer 0 -> IRQ0 (I/O APIC 2), timer 1 -> IRQ8."""
    board = Board()
    hpet = board.hpet
    hpet.mmio_write(tn_conf(0), 4, INT_ENB | PERIODIC | VAL_SET | (20 << 9))
    write64(hpet, tn_cmp(0), 100)
    write64(hpet, tn_cmp(0), 100)
    hpet.mmio_write(tn_conf(1), 4, INT_ENB | (21 << 9))
    write64(hpet, tn_cmp(1), 150)
    hpet.mmio_write(CONF, 4, ENABLE | LEGACY)
    board.run_to(2000)
    assert board.isa[0].rises == 2  # ticks 100 and 200
    assert board.isa[8].rises == 1
    assert board.pins[20].rises == 0 and board.pins[21].rises == 0
    hpet.mmio_write(CONF, 4, ENABLE)  # legacy off: their own routes again
    board.run_to(3000)
    assert board.pins[20].rises == 1 and board.isa[0].rises == 2


def test_no_interrupt_while_disabled() -> None:
    board = Board()
    hpet = board.hpet
    hpet.mmio_write(tn_conf(2), 4, INT_ENB | (20 << 9))
    write64(hpet, tn_cmp(2), 1)
    board.run_to(10_000)
    assert board.pins[20].rises == 0
    assert board.clock.next_deadline() is None


@pytest.mark.parametrize(("offset", "size"), [(0x0F0, 1), (0x0F0, 2), (0x0F2, 4), (0x0F4, 8)])
def test_odd_sized_or_unaligned_access_is_ignored_and_counted(offset: int, size: int) -> None:
    board = Board()
    hpet = board.hpet
    assert hpet.mmio_read(offset, size) == (1 << (8 * size)) - 1
    hpet.mmio_write(offset, size, 0x55)
    assert hpet.mmio_read(COUNTER, 8) == 0
    assert board.stats.get("hpet", "odd-sized or unaligned access") == 2


def test_reserved_and_read_only_writes_are_harmless() -> None:
    board = Board()
    hpet = board.hpet
    hpet.mmio_write(0x3F8, 4, 0xFFFFFFFF)  # reserved
    hpet.mmio_write(0x110, 8, 0xFFFFFFFF)  # FSB route: no FSB delivery
    assert hpet.mmio_read(0x3F8, 4) == 0 and hpet.mmio_read(0x110, 8) == 0
    hpet.mmio_write(CONF, 4, 0xFFFFFFFF)
    assert hpet.mmio_read(CONF, 4) == ENABLE | LEGACY  # reserved bits read 0


def test_snapshot_round_trip_keeps_counter_and_pending_match() -> None:
    board = Board()
    hpet = board.hpet
    hpet.mmio_write(tn_conf(0), 4, INT_ENB | PERIODIC | VAL_SET | (22 << 9))
    write64(hpet, tn_cmp(0), 30)
    write64(hpet, tn_cmp(0), 30)
    hpet.mmio_write(CONF, 4, ENABLE)
    board.run_to(450)
    state = hpet.get_state()
    other = Board()
    other.clock.set_state(board.clock.get_state())
    other.hpet.set_state(state)
    assert other.hpet.get_state() == state
    assert other.hpet.mmio_read(COUNTER, 8) == 45
    other.run_to(600)
    assert other.pins[22].rises == 1  # tick 60


def test_snapshot_refuses_impossible_state() -> None:
    hpet = Board().hpet
    state = hpet.get_state()
    state["running"] = True
    with pytest.raises(StateError):
        hpet.set_state(state)
    state = hpet.get_state()
    state["timers"][0]["config"] = 3 << 9
    with pytest.raises(StateError, match="route 3"):
        hpet.set_state(state)
    state = hpet.get_state()
    state["timers"][1]["config"] = PERIODIC
    hpet.set_state(state)
    assert not hpet.mmio_read(tn_conf(1), 4) & PERIODIC  # a capability is not restored


def test_board_hpet_at_fed00000_drives_pic_irq0_in_legacy_mode() -> None:
    """On the PC board the HPET answers at 0xFED00000; legacy timer 0 is ISA IRQ0."""
    from pyvmm.board.pc import PcBoard

    board = PcBoard(ram_size=4 << 20, clock_source=ClockSource.MANUAL)
    base = 0xFED00000
    assert board.mmio.read(base + GCAP + 4, 4) == 10_000_000
    board.pic.master.io_write(0, 1, 0x11)  # ICW1..ICW4: vectors 0x20.., unmasked
    board.pic.master.io_write(1, 1, 0x20)
    board.pic.master.io_write(1, 1, 0x04)
    board.pic.master.io_write(1, 1, 0x01)
    board.pic.master.io_write(1, 1, 0x00)
    board.mmio.write(base + tn_conf(0), 4, INT_ENB)
    board.mmio.write(base + tn_cmp(0), 8, 7)
    board.mmio.write(base + CONF, 4, ENABLE | LEGACY)
    board.clock.advance_to(70)
    board.clock.run_due()
    assert board.pic.interrupt_pending()
    assert board.pic.acknowledge() == 0x20
    assert board.get_state()["devices"]["hpet"]["counter"] == 7
    board.close()
