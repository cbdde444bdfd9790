"""A guest cannot grow host memory or host CPU without bound (issue 12).

Each test drives one guest-reachable path far past any real use and checks
the host-side structure stays at its hardware (or documented) bound.
"""

from __future__ import annotations

import io
import time

from pyvmm.board.pc import PcBoard
from pyvmm.devices.i8042 import KBD_BUFFER
from pyvmm.machine.clock import ClockSource, VirtualClock
from pyvmm.paravirt.abi import TIMER_MAX_PERIOD_NS
from pyvmm.snapshot import restore_snapshot, take_snapshot
from pyvmm.stats import MAX_KEYS, OTHER, Stats
from pyvmm.vm import VirtualMachine

KBD_DATA, KBD_STATUS = 0x60, 0x64
CMOS_IDX, CMOS_DATA = 0x70, 0x71


def manual_board() -> PcBoard:
    return PcBoard(ram_size=4 << 20, clock_source=ClockSource.MANUAL)


def test_i8042_output_holds_one_byte_and_the_keyboard_sixteen():
    board = manual_board()
    for _ in range(100_000):
        board.ports.write(KBD_DATA, 1, 0xF4)  # "enable": the keyboard ACKs each
    state = board.i8042.s
    assert len(state.output) == 1 and len(state.keyboard) == KBD_BUFFER
    # The guest reads back the controller's byte and the keyboard's 16, no more.
    acks = []
    while board.ports.read(KBD_STATUS, 1) & 0x01:
        acks.append(board.ports.read(KBD_DATA, 1))
    assert acks == [0xFA] * (1 + KBD_BUFFER)


def test_i8042_controller_reply_replaces_the_output_byte():
    board = manual_board()
    board.ports.write(KBD_STATUS, 1, 0xAA)  # self-test -> 0x55
    board.ports.write(KBD_STATUS, 1, 0x20)  # read command byte
    assert board.ports.read(KBD_DATA, 1) == board.i8042.s.command_byte
    assert not board.ports.read(KBD_STATUS, 1) & 0x01


def test_rtc_periodic_catch_up_is_constant_time():
    """A 10^6-second guest-clock jump at 8192 Hz is one timer callback, not 8e9 loops."""
    board = manual_board()
    board.ports.write(CMOS_IDX, 1, 0x0A)
    board.ports.write(CMOS_DATA, 1, 0x23)  # 32 kHz base, rate 3 = 8192 Hz
    board.ports.write(CMOS_IDX, 1, 0x0B)
    board.ports.write(CMOS_DATA, 1, 0x42)  # PIE, 24 h
    start = time.process_time()
    board.clock.advance(10**6 * 10**9)
    assert board.clock.run_due() == 1
    assert time.process_time() - start < 1.0  # a linear loop takes hours
    rtc = board.cmos.s
    # The next period is the first one after now: deadline(i) > now >= deadline(i - 1).
    next_deadline = board.cmos._period_deadline(rtc.periodic_index)
    assert board.clock.now_ns() < next_deadline
    assert board.cmos._period_deadline(rtc.periodic_index - 1) <= board.clock.now_ns()


def test_cancelled_timers_do_not_accumulate():
    clock = VirtualClock(ClockSource.MANUAL)
    keep = clock.set_timer(10**15, lambda: None)
    timer = None
    for _ in range(200_000):
        if timer is not None:
            timer.cancel()
        timer = clock.set_timer(TIMER_MAX_PERIOD_NS, lambda: None)
    assert clock.pending_timers <= 4
    assert clock.next_deadline() == TIMER_MAX_PERIOD_NS
    keep.cancel()
    timer.cancel()
    assert clock.next_deadline() is None


def test_pv_timer_rearm_loop_keeps_the_heap_flat():
    board = manual_board()
    for _ in range(100_000):
        board.hypercall.start_timer(TIMER_MAX_PERIOD_NS, periodic=True)
    assert board.clock.pending_timers < 16


def test_stats_keys_per_category_are_bounded():
    stats = Stats()
    for vector in range(10 * MAX_KEYS):
        stats.count("interrupts", f"guest value {vector}")
    assert len(stats.counters["interrupts"]) == MAX_KEYS + 1
    assert stats.get("interrupts", OTHER) == 9 * MAX_KEYS


def test_two_vms_restored_from_one_snapshot_share_no_state():
    vm = VirtualMachine(engine="interp", ram_size=4 << 20, serial_output=io.BytesIO())
    try:
        vm.board.uart.enqueue_input(b"x" * 100)  # more than the FIFO: a host backlog
        snapshot = take_snapshot(vm)
    finally:
        vm.close()
    first = restore_snapshot(snapshot, "interp")
    second = restore_snapshot(snapshot, "interp")
    try:
        assert first.board.uart.s.host_backlog == second.board.uart.s.host_backlog != []
        assert first.board.uart.s.host_backlog is not second.board.uart.s.host_backlog
        first.board.uart.enqueue_input(b"only the first")
        assert second.board.uart.s.host_backlog == snapshot.board["devices"]["com1"][
            "host_backlog"]
    finally:
        first.close()
        second.close()
