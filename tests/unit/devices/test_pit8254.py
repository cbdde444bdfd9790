"""i8254 PIT on a manual virtual clock (Intel 8254 datasheet, modes 0-5)."""

import json

import pytest

from pyvmm.devices.pit8254 import PIT_HZ, Pit8254, SystemControlPortB
from pyvmm.machine.clock import ClockSource, VirtualClock
from pyvmm.machine.interrupts import IrqLine

NS = 1_000_000_000


class EdgeRecorder:
    """An IrqSink that records the virtual time of each rising edge."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.rises: list[int] = []
        self.level = False

    def set_irq(self, irq: int, level: bool) -> None:
        if level and not self.level:
            self.rises.append(self.clock.now_ns())
        self.level = level


def make():
    clock = VirtualClock(ClockSource.MANUAL)
    sink = EdgeRecorder(clock)
    pit = Pit8254(clock, IrqLine(sink, 0))
    return clock, sink, pit


def ns_for(ticks: int) -> int:
    return -(-ticks * NS // PIT_HZ)


def step(clock: VirtualClock, until_ns: int) -> None:
    """Advance like an engine does: jump to each timer deadline and run it."""
    while True:
        deadline = clock.next_deadline()
        if deadline is None or deadline > until_ns:
            clock.advance_to(until_ns)
            clock.run_due()
            return
        clock.advance_to(deadline)
        clock.run_due()


def program(pit: Pit8254, channel: int, mode: int, count: int) -> None:
    pit.io_write(3, 1, channel << 6 | 0x30 | mode << 1)  # lobyte/hibyte access
    pit.io_write(channel, 1, count & 0xFF)
    pit.io_write(channel, 1, count >> 8)


def read_latched(pit: Pit8254, channel: int) -> int:
    pit.io_write(3, 1, channel << 6)  # counter latch command
    return pit.io_read(channel, 1) | pit.io_read(channel, 1) << 8


def test_mode2_pulses_irq0_every_period_at_the_right_times():
    clock, sink, pit = make()
    program(pit, 0, 2, 1193)  # ~1000.15 Hz
    step(clock, ns_for(1193 * 5) + 1)
    assert sink.rises == [ns_for(1193 * k) for k in range(1, 6)]
    assert pit.irq_pulses == 5


def test_periodic_deadlines_do_not_drift_when_callbacks_run_late():
    clock, sink, pit = make()
    program(pit, 0, 3, 11932)
    # Run the timers only every 7 ms: each edge is still at its ideal time.
    for _ in range(30):
        clock.advance(7_000_000)
        clock.run_due()
    assert len(sink.rises) == 20  # 210 ms / 10.0002 ms
    # Deadlines stay on the k * N grid: the next armed deadline proves it.
    assert clock.next_deadline() == ns_for(11932 * 21)


def test_mode0_one_shot_raises_once_and_output_stays_high():
    clock, sink, pit = make()
    program(pit, 0, 0, 1000)
    assert not pit.channel_output(0)
    step(clock, ns_for(999))
    assert not pit.channel_output(0)
    assert sink.rises == []
    step(clock, ns_for(5000))
    assert sink.rises == [ns_for(1000)]
    assert pit.channel_output(0)
    assert clock.next_deadline() is None


def test_mode0_rewrite_restarts_with_new_edge():
    clock, sink, pit = make()
    program(pit, 0, 0, 100)
    step(clock, ns_for(200))
    program(pit, 0, 0, 100)
    assert not pit.channel_output(0)
    step(clock, ns_for(400))
    assert len(sink.rises) == 2


def test_latch_freezes_count_until_read():
    clock, _, pit = make()
    program(pit, 0, 2, 50000)
    clock.advance(ns_for(1000))
    pit.io_write(3, 1, 0x00)  # latch channel 0
    clock.advance(ns_for(5000))
    latched = pit.io_read(0, 1) | pit.io_read(0, 1) << 8
    assert latched == 49000
    # Afterwards reads are live again.
    assert read_latched(pit, 0) == 44000


def test_live_count_decrements_with_virtual_time():
    clock, _, pit = make()
    program(pit, 2, 0, 0xFFFF)
    pit.set_gate(2, True)
    clock.advance(ns_for(12345))
    assert read_latched(pit, 2) == 0xFFFF - 12345


def test_lobyte_only_access_and_count_zero_means_65536():
    clock, sink, pit = make()
    pit.io_write(3, 1, 0x14)  # channel 0, LSB only, mode 2
    pit.io_write(0, 1, 100)
    step(clock, ns_for(300))
    assert len(sink.rises) == 3
    program(pit, 0, 2, 0)
    clock.advance(ns_for(1))
    assert read_latched(pit, 0) == 65535


def test_mode3_square_wave_duty_cycle():
    clock, _, pit = make()
    program(pit, 2, 3, 100)
    pit.set_gate(2, True)
    highs = 0
    for tick in range(100):
        clock.advance_to(ns_for(tick) + 1)
        highs += pit.channel_output(2)
    assert highs == 50


def test_gate_low_suspends_mode0():
    clock, _, pit = make()
    program(pit, 2, 0, 1000)  # gate 2 starts low
    clock.advance(ns_for(5000))
    assert read_latched(pit, 2) == 1000
    pit.set_gate(2, True)
    clock.advance(ns_for(400) + 1)
    pit.set_gate(2, False)
    clock.advance(ns_for(5000))
    assert read_latched(pit, 2) == 600


def test_mode2_new_count_takes_effect_at_end_of_period():
    clock, sink, pit = make()
    program(pit, 0, 2, 1000)
    step(clock, ns_for(500))
    pit.io_write(0, 1, 2000 & 0xFF)  # count only, no control word
    pit.io_write(0, 1, 2000 >> 8)
    step(clock, ns_for(5000) + 1)
    assert sink.rises == [ns_for(1000), ns_for(1000) + ns_for(2000),
                          ns_for(1000) + ns_for(4000)]


def test_read_back_status_and_count():
    clock, _, pit = make()
    program(pit, 1, 2, 300)
    clock.advance(ns_for(100))
    pit.io_write(3, 1, 0xC4)  # read-back: count and status of counter 1
    status = pit.io_read(1, 1)
    assert status & 0x3F == 0x34  # RW=3, mode 2, binary
    assert status & 0x80  # OUT high in mode 2
    assert not status & 0x40  # count loaded
    assert pit.io_read(1, 1) | pit.io_read(1, 1) << 8 == 200


def test_bcd_counting():
    clock, _, pit = make()
    pit.io_write(3, 1, 0x71)  # channel 1, lo/hi, mode 0, BCD
    pit.io_write(1, 1, 0x00)
    pit.io_write(1, 1, 0x10)  # 1000 decimal
    clock.advance(ns_for(1))
    assert read_latched(pit, 1) == 0x0999


def test_port61_gate_and_out2_and_refresh_toggle():
    clock, _, pit = make()
    port = SystemControlPortB(pit)
    program(pit, 2, 0, 100)
    port.io_write(0, 1, 0x01)  # gate 2 on, speaker off
    first = port.io_read(0, 1)
    assert first & 0x01
    assert not first & 0x20
    clock.advance(ns_for(100))
    second = port.io_read(0, 1)
    assert second & 0x20  # OUT2 went high at terminal count
    assert (first ^ second) & 0x10  # refresh bit toggles per read
    port.io_write(0, 1, 0x00)
    assert not pit.channels[2].s.gate


@pytest.mark.parametrize("mode", [2, 3])
def test_state_round_trip_keeps_counting(mode):
    clock, sink, pit = make()
    program(pit, 0, mode, 2000)
    step(clock, ns_for(2500))
    state = json.loads(json.dumps(pit.get_state()))
    clock2 = VirtualClock(ClockSource.MANUAL)
    clock2.set_state(clock.get_state())
    sink2 = EdgeRecorder(clock2)
    pit2 = Pit8254(clock2, IrqLine(sink2, 0))
    pit2.set_state(state)
    assert read_latched(pit2, 0) == read_latched(pit, 0)
    step(clock2, ns_for(6000) + 1)
    assert sink2.rises == [ns_for(4000), ns_for(6000)]


def test_mode1_waits_for_gate_trigger_then_one_shot():
    clock, _, pit = make()
    program(pit, 2, 1, 500)
    clock.advance(ns_for(1000))
    assert pit.channel_output(2)  # not triggered: OUT stays high
    pit.set_gate(2, True)  # rising GATE triggers
    assert not pit.channel_output(2)
    clock.advance(ns_for(499))
    assert not pit.channel_output(2)
    clock.advance(ns_for(2))
    assert pit.channel_output(2)


def test_mode4_strobe_pulses_once_after_n_plus_one():
    clock, sink, pit = make()
    program(pit, 0, 4, 300)
    step(clock, ns_for(2000))
    assert sink.rises == [ns_for(301)]


def test_board_wiring_pit_through_pic_to_vector():
    from pyvmm.board.pc import PcBoard

    board = PcBoard(ram_size=4 << 20, clock_source=ClockSource.MANUAL)
    try:
        ports, pic = board.ports, board.pic
        for base, vec, casc in ((0x20, 0x08, 4), (0xA0, 0x70, 2)):
            for port, value in ((base, 0x11), (base + 1, vec), (base + 1, casc), (base + 1, 1)):
                ports.write(port, 1, value)
        ports.write(0x43, 1, 0x34)
        ports.write(0x40, 1, 11932 & 0xFF)
        ports.write(0x40, 1, 11932 >> 8)
        step(board.clock, ns_for(11931))
        assert not pic.interrupt_pending()
        step(board.clock, ns_for(11932))
        assert pic.interrupt_pending()
        assert pic.acknowledge() == 0x08
    finally:
        board.close()
