"""The HPET's legacy replacement on the board (IA-PC HPET 1.0a §2.3.9.2.2).

While LEG_RT_CNF is set, timer 0 drives IRQ0 (I/O APIC pin 2) and timer 1
IRQ8 (pin 8), and the 8254's OUT0 and the RTC's IRQ8 output no longer reach
those inputs; clearing it reconnects them with the level they have then.
"""

from __future__ import annotations

import pytest

from pyvmm.board.pc import PcBoard
from pyvmm.devices.hpet import (
    CONF_ENABLE,
    CONF_LEGACY,
    REG_CONFIG,
    REG_STATUS,
    REG_TIMER_BASE,
    TIMER_COMPARATOR,
    TIMER_STRIDE,
    TN_INT_ENABLE,
    TN_LEVEL,
)
from pyvmm.machine.clock import ClockSource

HPET = 0xFED00000


@pytest.fixture
def board():
    b = PcBoard(ram_size=4 << 20, clock_source=ClockSource.MANUAL)
    yield b
    b.close()


def wires(board: PcBoard) -> tuple[bool, bool, bool, bool]:
    """(i8259 input 0, I/O APIC pin 2, i8259 input 8, I/O APIC pin 8) levels."""
    w = board.wiring
    return (w.pic_inputs[0].level, w.gsi_inputs[2].level, w.pic_inputs[8].level,
            w.gsi_inputs[8].level)


def hpet_write(board: PcBoard, register: int, value: int) -> None:
    board.mmio.write(HPET + register, 4, value & 0xFFFFFFFF)


def pit_and_rtc_asserted(board: PcBoard) -> None:
    """PIT channel 0 in mode 0 reaches terminal count (OUT0 high and stays high);
    the RTC's periodic interrupt sets IRQF (IRQ8 high until register C is read)."""
    board.ports.write(0x43, 1, 0x30)  # channel 0, lo/hi byte, mode 0
    board.ports.write(0x40, 1, 10)
    board.ports.write(0x40, 1, 0)
    board.ports.write(0x70, 1, 0x0B)
    board.ports.write(0x71, 1, 0x42)  # PIE, 24-hour
    board.clock.advance(2_000_000)  # 2 ms: past 10 PIT ticks and a 1024 Hz period
    board.clock.run_due()


def test_legacy_replacement_cuts_the_pit_and_rtc_and_reconnects_them(board):
    pit_and_rtc_asserted(board)
    assert wires(board) == (True, True, True, True)
    hpet_write(board, REG_CONFIG, CONF_ENABLE | CONF_LEGACY)
    assert wires(board) == (False, False, False, False)
    assert board.pit.channel_output(0)  # the PIT itself still drives OUT0 high
    hpet_write(board, REG_CONFIG, CONF_ENABLE)
    assert wires(board) == (True, True, True, True)
    assert board.stats.get("hpet", "legacy replacement on") == 1


@pytest.mark.parametrize(("timer", "expected"), [(0, (True, True, False, False)),
                                                 (1, (False, False, True, True))])
def test_legacy_timers_drive_irq0_and_irq8(board, timer, expected):
    config = REG_TIMER_BASE + TIMER_STRIDE * timer
    hpet_write(board, config, TN_LEVEL | TN_INT_ENABLE)
    hpet_write(board, config + TIMER_COMPARATOR, 100)  # 1 us at 10 ns a tick
    hpet_write(board, config + TIMER_COMPARATOR + 4, 0)
    hpet_write(board, REG_CONFIG, CONF_ENABLE | CONF_LEGACY)
    board.clock.advance(2_000)
    board.clock.run_due()
    assert wires(board) == expected
    hpet_write(board, REG_STATUS, 1 << timer)  # level: write 1 to clear releases the pin
    assert wires(board) == (False, False, False, False)


def test_reset_and_snapshot_restore_reconnect_per_the_hpet(board):
    pit_and_rtc_asserted(board)
    hpet_write(board, REG_CONFIG, CONF_ENABLE | CONF_LEGACY)
    saved = board.get_state()
    other = PcBoard(ram_size=4 << 20, clock_source=ClockSource.MANUAL)
    try:
        other.set_state(saved)
        assert wires(other) == (False, False, False, False)
        assert other.pit.channel_output(0)
    finally:
        other.close()
    board.reset()  # the HPET's power-on state: no legacy replacement
    assert not wires(board)[0]  # the PIT's power-on OUT0 is low...
    assert all(gate.connected for gate in board._legacy_gates)  # ...and connected again
