"""The hypercall device on a real board, driven like an engine would: the
vCPU's registers in a list, one 32-bit OUT to the hypercall port."""

import io

import pytest

from pyvmm.board.pc import IRQ_PIT, PcBoard
from pyvmm.machine.clock import ClockSource
from pyvmm.paravirt import RegisterListCpu, VirtualSwitch, abi, connect_board
from pyvmm.paravirt.abi import RAX, RBX, RCX, as_signed

MIB = 1 << 20
BUF = 0x200000  # in RAM
BEYOND_RAM = 64 * MIB


class FakeCpu:
    def __init__(self):
        self.regs = [0] * 16


class Irqs:
    """Counts rising edges per IRQ by wrapping the board's PIC."""

    def __init__(self, board):
        self.rises = {}
        pic = board.pic
        original = pic.set_irq
        levels = {}

        def set_irq(irq, level):
            if level and not levels.get(irq):
                self.rises[irq] = self.rises.get(irq, 0) + 1
            levels[irq] = level
            original(irq, level)

        pic.set_irq = set_irq  # the board's IrqLines look the method up per call


def make_board(serial=None):
    board = PcBoard(ram_size=64 * MIB, serial_output=serial if serial is not None else io.BytesIO(),
                    clock_source=ClockSource.MANUAL)
    cpu = FakeCpu()
    board.cpu_access = RegisterListCpu(cpu)
    return board, cpu


def call(board, cpu, number, *args):
    cpu.regs[RAX] = number
    for reg, value in zip(abi.ARG_REGISTERS, args, strict=False):
        cpu.regs[reg] = value
    board.ports.write(abi.HYPERCALL_PORT, 4, number)
    return as_signed(cpu.regs[RAX])


def run_clock_to(board, ns):
    board.clock.advance_to(ns)
    board.clock.run_due()


def test_probe_reports_version_vm_id_and_features():
    board, cpu = make_board()
    assert call(board, cpu, abi.HC_PROBE) == abi.ABI_VERSION
    assert cpu.regs[RBX] == 0
    assert cpu.regs[RCX] == abi.FEATURE_TIMER | abi.FEATURE_CONSOLE
    connect_board(board, VirtualSwitch(), 7)
    call(board, cpu, abi.HC_PROBE)
    assert cpu.regs[RBX] == 7 and cpu.regs[RCX] & abi.FEATURE_NET
    assert board.stats.get("hypercalls", "probe") == 2


def test_unknown_call_is_enosys_and_other_accesses_are_not_calls():
    board, cpu = make_board()
    assert call(board, cpu, 0x1234) == -abi.ENOSYS
    cpu.regs[RAX] = abi.HC_CLOCK
    board.ports.write(abi.HYPERCALL_PORT, 1, abi.HC_CLOCK)  # byte OUT: not a hypercall
    assert cpu.regs[RAX] == abi.HC_CLOCK
    assert board.stats.get("hypercalls", "bad access") == 1
    assert board.ports.read(abi.HYPERCALL_PORT, 4) == 0xFFFFFFFF


def test_without_engine_register_access_the_call_is_ignored_not_fatal():
    board, cpu = make_board()
    board.cpu_access = None
    board.ports.write(abi.HYPERCALL_PORT, 4, abi.HC_PROBE)
    assert board.stats.get("hypercalls", "no register access") == 1


def test_console_write_goes_to_the_com1_writer():
    serial = io.BytesIO()
    board, cpu = make_board(serial)
    board.memory.write(BUF, b"hello, pv\r\n")
    assert call(board, cpu, abi.HC_CONSOLE_WRITE, BUF, 11) == 11
    assert serial.getvalue() == b"hello, pv\r\n"
    assert board.stats.get("paravirt", "console bytes") == 11


@pytest.mark.parametrize("gpa,length", [
    (BEYOND_RAM, 1),  # past the end of RAM
    (BEYOND_RAM - 4, 8),  # straddles the end
    (0x9FFF0, 0x20),  # runs from low RAM into the VGA hole
    ((1 << 64) - 1, 2),  # wraps
])
def test_console_write_outside_ram_is_efault(gpa, length):
    serial = io.BytesIO()
    board, cpu = make_board(serial)
    assert call(board, cpu, abi.HC_CONSOLE_WRITE, gpa, length) == -abi.EFAULT
    assert serial.getvalue() == b""


def test_console_write_too_long_is_einval():
    board, cpu = make_board()
    assert call(board, cpu, abi.HC_CONSOLE_WRITE, BUF, abi.CONSOLE_MAX_WRITE + 1) == -abi.EINVAL


def test_clock_reads_guest_time():
    board, cpu = make_board()
    board.clock.advance(123_456)
    assert call(board, cpu, abi.HC_CLOCK) == 123_456


def test_periodic_timer_raises_irq0_every_period_until_stopped():
    board, cpu = make_board()
    irqs = Irqs(board)
    assert call(board, cpu, abi.HC_TIMER_START, 10_000_000, abi.TIMER_PERIODIC) == 0
    run_clock_to(board, 9_999_999)
    assert irqs.rises.get(IRQ_PIT, 0) == 0
    for tick in range(1, 4):
        run_clock_to(board, tick * 10_000_000)
        assert irqs.rises[IRQ_PIT] == tick
    assert call(board, cpu, abi.HC_TIMER_STOP) == 0
    run_clock_to(board, 100_000_000)
    assert irqs.rises[IRQ_PIT] == 3
    assert board.stats.get("paravirt", "timer interrupts") == 3


def test_one_shot_timer_fires_once():
    board, cpu = make_board()
    irqs = Irqs(board)
    call(board, cpu, abi.HC_TIMER_START, 50_000, 0)
    run_clock_to(board, 10**9)
    assert irqs.rises[IRQ_PIT] == 1
    assert board.hypercall.get_state()["timer_deadline_ns"] is None


def test_periodic_timer_coalesces_missed_ticks():
    board, cpu = make_board()
    irqs = Irqs(board)
    call(board, cpu, abi.HC_TIMER_START, 1_000_000, abi.TIMER_PERIODIC)
    run_clock_to(board, 10_500_000)  # the VM was stalled for 10 periods
    assert irqs.rises[IRQ_PIT] == 1
    assert board.stats.get("paravirt", "timer ticks coalesced") == 9
    run_clock_to(board, 11_000_000)  # back on the original grid
    assert irqs.rises[IRQ_PIT] == 2


@pytest.mark.parametrize("period,flags", [(0, 0), (abi.TIMER_MIN_PERIOD_NS - 1, 1),
                                          (abi.TIMER_MAX_PERIOD_NS + 1, 1), (10**6, 2)])
def test_bad_timer_arguments_are_einval(period, flags):
    board, cpu = make_board()
    assert call(board, cpu, abi.HC_TIMER_START, period, flags) == -abi.EINVAL
    assert board.clock.next_deadline() is None


def test_timer_state_survives_snapshot():
    board, cpu = make_board()
    call(board, cpu, abi.HC_TIMER_START, 2_000_000, abi.TIMER_PERIODIC)
    state = board.hypercall.get_state()
    other, _ = make_board()
    irqs = Irqs(other)
    other.hypercall.set_state(state)
    run_clock_to(other, 2_000_000)
    run_clock_to(other, 4_000_000)
    assert irqs.rises[IRQ_PIT] == 2


# -- datagrams ------------------------------------------------------------------

def pair():
    switch = VirtualSwitch(queue_limit=2)
    a, cpu_a = make_board()
    b, cpu_b = make_board()
    connect_board(a, switch, 1)
    connect_board(b, switch, 2)
    return switch, (a, cpu_a), (b, cpu_b)


def test_datagram_from_one_vm_lands_in_the_others_memory():
    switch, (a, cpu_a), (b, cpu_b) = pair()
    a.memory.write(BUF, b"ping 0001")
    assert call(a, cpu_a, abi.HC_NET_SEND, 2, BUF, 9) == 0
    assert call(b, cpu_b, abi.HC_NET_RECV, BUF + 0x1000, 64) == 9
    assert cpu_b.regs[RBX] == 1  # source VM
    assert b.memory.read(BUF + 0x1000, 9) == b"ping 0001"
    assert call(b, cpu_b, abi.HC_NET_RECV, BUF + 0x1000, 64) == -abi.EAGAIN


def test_send_errors():
    switch, (a, cpu_a), (b, cpu_b) = pair()
    assert call(a, cpu_a, abi.HC_NET_SEND, 3, BUF, 4) == -abi.EHOSTUNREACH
    assert call(a, cpu_a, abi.HC_NET_SEND, 2, BEYOND_RAM, 4) == -abi.EFAULT
    assert call(a, cpu_a, abi.HC_NET_SEND, 2, BUF, abi.NET_MAX_PAYLOAD + 1) == -abi.EMSGSIZE
    assert call(a, cpu_a, abi.HC_NET_SEND, 2, BUF, 4) == 0
    assert call(a, cpu_a, abi.HC_NET_SEND, 2, BUF, 4) == 0
    assert call(a, cpu_a, abi.HC_NET_SEND, 2, BUF, 4) == -abi.ENOBUFS  # queue limit 2
    assert switch.counters(2).dropped == 1
    lone, cpu = make_board()
    assert call(lone, cpu, abi.HC_NET_SEND, 2, BUF, 4) == -abi.ENODEV


def test_recv_errors_leave_the_datagram_queued():
    switch, (a, cpu_a), (b, cpu_b) = pair()
    a.memory.write(BUF, b"0123456789")
    call(a, cpu_a, abi.HC_NET_SEND, 2, BUF, 10)
    assert call(b, cpu_b, abi.HC_NET_RECV, BUF, 4) == -abi.EMSGSIZE
    assert cpu_b.regs[RBX] == 10  # the length it needs
    assert call(b, cpu_b, abi.HC_NET_RECV, BEYOND_RAM - 2, 64) == -abi.EFAULT
    b.map_bios(bytes(64 * 1024))
    assert call(b, cpu_b, abi.HC_NET_RECV, 0xF0000, 64) == -abi.EFAULT  # ROM is not writable
    assert switch.pending(2) == 1
    assert call(b, cpu_b, abi.HC_NET_RECV, BUF, 10) == 10


def test_wait_arms_a_one_shot_event_irq_on_arrival():
    switch, (a, cpu_a), (b, cpu_b) = pair()
    irqs = Irqs(b)
    assert call(b, cpu_b, abi.HC_NET_WAIT, 0) == -abi.EAGAIN
    assert call(a, cpu_a, abi.HC_NET_SEND, 2, BUF, 1) == 0
    assert irqs.rises.get(abi.IRQ_PV_EVENT, 0) == 0  # not before B's thread drains its events
    b.events.drain()
    assert irqs.rises[abi.IRQ_PV_EVENT] == 1
    call(a, cpu_a, abi.HC_NET_SEND, 2, BUF, 1)
    b.events.drain()
    assert irqs.rises[abi.IRQ_PV_EVENT] == 1  # one-shot: disarmed by the first
    assert call(b, cpu_b, abi.HC_NET_WAIT, 0) == 2  # queued: returns at once


def test_wait_times_out_with_the_event_irq():
    switch, (a, cpu_a), (b, cpu_b) = pair()
    irqs = Irqs(b)
    assert call(b, cpu_b, abi.HC_NET_WAIT, 5_000_000) == -abi.EAGAIN
    run_clock_to(b, 4_999_999)
    assert irqs.rises.get(abi.IRQ_PV_EVENT, 0) == 0
    run_clock_to(b, 5_000_000)
    assert irqs.rises[abi.IRQ_PV_EVENT] == 1
    assert b.stats.get("paravirt", "wait timeouts") == 1
    assert call(b, cpu_b, abi.HC_NET_RECV, BUF, 64) == -abi.EAGAIN


def test_wait_longer_than_the_pv_timer_period_is_einval():
    """2**64-1 ns would become a host wait no thread can arm; 1 h is the cap."""
    switch, (a, cpu_a), (b, cpu_b) = pair()
    assert call(b, cpu_b, abi.HC_NET_WAIT, (1 << 64) - 1) == -abi.EINVAL
    assert call(b, cpu_b, abi.HC_NET_WAIT, abi.TIMER_MAX_PERIOD_NS + 1) == -abi.EINVAL
    assert b.clock.next_deadline() is None  # nothing was armed
    assert call(b, cpu_b, abi.HC_NET_WAIT, abi.TIMER_MAX_PERIOD_NS) == -abi.EAGAIN
    assert b.clock.next_deadline() == b.clock.now_ns() + abi.TIMER_MAX_PERIOD_NS


def test_board_given_a_switch_later_plugs_in_on_first_use():
    switch = VirtualSwitch()
    switch.attach(1)
    board, cpu = make_board()
    board.switch, board.vm_id = switch, 5
    board.memory.write(BUF, b"late")
    assert call(board, cpu, abi.HC_NET_SEND, 1, BUF, 4) == 0
    assert switch.receive(1).source == 5


def test_a_vm_id_already_on_the_switch_is_enodev_not_a_crash():
    switch = VirtualSwitch()
    switch.attach(3)
    board, cpu = make_board()
    board.switch, board.vm_id = switch, 3
    assert call(board, cpu, abi.HC_NET_SEND, 1, BUF, 4) == -abi.ENODEV
    assert board.stats.get("hypercalls", "switch id taken") == 1
