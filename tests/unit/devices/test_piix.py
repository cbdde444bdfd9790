"""PIIX3 PIRQ routing and ELCR (82371SB datasheet) and the PIIX4 PM function
(82371AB datasheet §3.4, §7: PMBA, PM1 control, the 3.579545 MHz PM timer)."""

from __future__ import annotations

import pytest

from pyvmm.devices.pci.piix import (
    PM1_CONTROL,
    PM_TIMER,
    PMBA,
    PMREGMISC,
    Elcr,
    Piix3IsaBridge,
    Piix4Pm,
)
from pyvmm.machine.clock import ClockSource, VirtualClock
from pyvmm.schema import StateError
from pyvmm.stats import Stats

SLP_EN = 1 << 13


def test_pirq_routing_registers():
    bridge = Piix3IsaBridge()
    # PIRQRC[A:D] at 0x60-0x63 reset to 80h: routing disabled.
    assert bridge.config_read(0x60, 4) == 0x80808080
    assert [bridge.pirq_route(n) for n in range(4)] == [None] * 4
    bridge.config_write(0x60, 4, 0x0B0A0B0A)
    assert [bridge.pirq_route(n) for n in range(4)] == [10, 11, 10, 11]
    # IRQ 0, 1, 2, 8 and 13 are reserved: not routed.
    for irq in (0, 1, 2, 8, 13):
        bridge.config_write(0x61, 1, irq)
        assert bridge.pirq_route(1) is None
    bridge.config_write(0x62, 1, 0xF5)  # bits 6:4 reserved
    assert bridge.config_read(0x62, 1) == 0x85


def test_elcr_reserved_bits_read_zero():
    elcr = Elcr()
    elcr.io_write(0, 1, 0xFF)
    elcr.io_write(1, 1, 0xFF)
    # IRQ 0-2 (ELCR1 bits 2:0), IRQ 8 and 13 (ELCR2 bits 0 and 5) are edge only.
    assert elcr.io_read(0, 1) == 0xF8
    assert elcr.io_read(1, 1) == 0xDE
    assert elcr.io_read(0, 2) == 0xDEF8
    assert [irq for irq in range(16) if elcr.level_triggered(irq)] == \
        [3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15]
    other = Elcr()
    other.set_state({"registers": "ffff"})  # a snapshot cannot set reserved bits
    assert other.io_read(0, 2) == 0xDEF8


@pytest.fixture
def pm():
    clock = VirtualClock(ClockSource.MANUAL)
    offs: list[int] = []
    moves: list[tuple] = []
    pm = Piix4Pm(clock, lambda: offs.append(clock.now_ns()), Stats())
    pm.on_io_change = lambda old, new: moves.append((old, new))
    pm.clock, pm.offs, pm.moves = clock, offs, moves
    return pm


def test_pm_identity_and_io_base(pm):
    assert pm.config_read(0, 4) == 0x71138086
    assert pm.config_read(PMBA, 4) == 1  # bit 0: I/O space indicator, reads 1
    pm.config_write(PMBA, 4, 0xB03F)  # 64-byte block: bits 5:1 hard-wired
    assert pm.config_read(PMBA, 4) == 0xB001
    assert pm.moves == []  # not decoded until PMREGMISC bit 0 (PMIOSE)
    pm.config_write(PMREGMISC, 1, 1)
    assert pm.moves == [(None, 0xB000)]
    pm.config_write(PMBA, 4, 0x6000)
    assert pm.moves[-1] == (0xB000, 0x6000)
    pm.config_write(PMREGMISC, 1, 0)
    assert pm.moves[-1] == (0x6000, None)


def test_pm_timer_counts_at_3_579545_mhz_and_wraps_at_24_bits(pm):
    regs = pm.registers
    assert regs.io_read(PM_TIMER, 4) == 0
    pm.clock.advance(1_000_000_000)
    assert regs.io_read(PM_TIMER, 4) == 3_579_545
    pm.clock.advance(1_000)  # 1 us is 3.58 ticks
    assert regs.io_read(PM_TIMER, 4) == 3_579_548
    # 2^24 ticks is 4.687 s: the counter wraps (§7.1.7, TMR_VAL bits 23:0).
    pm.clock.advance(4_000_000_000)
    assert regs.io_read(PM_TIMER, 4) == (5_000_001_000 * 3_579_545 // 10**9) & 0xFFFFFF
    assert regs.io_read(PM_TIMER, 4) < 1 << 24


def test_s5_powers_off_and_other_sleep_types_do_not(pm):
    regs = pm.registers
    regs.io_write(PM1_CONTROL, 2, SLP_EN | 1 << 10 | 1)  # SUS_TYP 001b: not soft-off
    assert pm.offs == []
    assert regs.io_read(PM1_CONTROL, 2) == 1 << 10 | 1  # SLP_EN is write-only, reads 0
    regs.io_write(PM1_CONTROL, 2, 1)  # SUS_TYP 000b without SLP_EN: nothing
    assert pm.offs == []
    regs.io_write(PM1_CONTROL + 1, 1, SLP_EN >> 8)  # high byte alone: SLP_EN, S5
    assert len(pm.offs) == 1


def test_pm1_status_is_write_one_to_clear(pm):
    regs = pm.registers
    regs.status = 0x0121
    regs.io_write(0, 2, 0x0001)
    assert regs.io_read(0, 2) == 0x0120


def test_pm_state_round_trip_and_damage(pm):
    pm.config_write(PMBA, 4, 0xB000)
    pm.config_write(PMREGMISC, 1, 1)
    pm.registers.io_write(PM1_CONTROL, 2, 1)
    clock = VirtualClock(ClockSource.MANUAL)
    moves = []
    other = Piix4Pm(clock, lambda: None, Stats())
    other.on_io_change = lambda old, new: moves.append((old, new))
    other.set_state(pm.get_state())
    assert moves == [(None, 0xB000)]
    assert other.registers.io_read(PM1_CONTROL, 2) == 1
    state = pm.get_state()
    state["registers"]["control"] = 1 << 16
    with pytest.raises(StateError, match="control"):
        other.set_state(state)
