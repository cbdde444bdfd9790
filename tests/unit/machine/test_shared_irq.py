"""Shared (wired-OR) interrupt lines: several sources on one input.

An ISA or PCI interrupt line is one wire; its level is high while any source
drives it (issue 12 item 2: the PIT's OUT0 and the PV timer both drive IRQ0).
"""

from pyvmm.board.pc import IRQ_PIT, PcBoard
from pyvmm.machine.clock import ClockSource
from pyvmm.machine.interrupts import SharedLine
from pyvmm.paravirt import RegisterListCpu, abi

MIB = 1 << 20
PIT_CH0, PIT_CW = 0x40, 0x43


class Recorder:
    def __init__(self):
        self.calls = []

    def set_irq(self, irq, level):
        self.calls.append((irq, level))


def test_level_is_the_or_of_the_sources_and_reaches_every_target():
    pic, ioapic = Recorder(), Recorder()
    wire = SharedLine([(pic, 0), (ioapic, 2)])
    a, b = wire.line(), wire.line()
    a.raise_()
    b.raise_()
    a.lower()  # b still drives the wire: no change seen
    assert wire.level and pic.calls == [(0, True)] and ioapic.calls == [(2, True)]
    b.lower()
    assert not wire.level and pic.calls == [(0, True), (0, False)]
    b.pulse()
    assert pic.calls[-2:] == [(0, True), (0, False)]


def test_a_pulse_on_a_high_wire_is_no_edge():
    pic = Recorder()
    wire = SharedLine([(pic, 4)])
    held, pulsed = wire.line(), wire.line()
    held.raise_()
    pulsed.pulse()
    assert pic.calls == [(4, True)]


class FakeCpu:
    def __init__(self):
        self.regs = [0] * 16


def _board():
    board = PcBoard(ram_size=16 * MIB, clock_source=ClockSource.MANUAL)
    cpu = FakeCpu()
    board.cpu_access = RegisterListCpu(cpu)
    return board, cpu


def _pit_out_high(board):
    """PIT channel 0, mode 0 (interrupt on terminal count), count 2: OUT0 goes high
    at terminal count and stays high (82C54 datasheet, mode 0)."""
    board.ports.write(PIT_CW, 1, 0x30)
    board.ports.write(PIT_CH0, 1, 2)
    board.ports.write(PIT_CH0, 1, 0)
    board.clock.advance(10_000)
    board.clock.run_due()


def _pv_pulse(board, cpu):
    cpu.regs[abi.RAX] = abi.HC_TIMER_START
    cpu.regs[abi.ARG_REGISTERS[0]] = abi.TIMER_MIN_PERIOD_NS
    cpu.regs[abi.ARG_REGISTERS[1]] = 0
    board.ports.write(abi.HYPERCALL_PORT, 4, abi.HC_TIMER_START)
    assert cpu.regs[abi.RAX] == 0
    board.clock.advance(2 * abi.TIMER_MIN_PERIOD_NS)
    board.clock.run_due()
    assert board.stats.get("paravirt", "timer interrupts") == 1


def test_pv_timer_pulse_does_not_lower_irq0_held_high_by_the_pit():
    board, cpu = _board()
    _pit_out_high(board)
    assert board.pit.get_state() is not None and board.irqs[IRQ_PIT].level
    _pv_pulse(board, cpu)
    master = board.pic.master.s
    assert master.levels & 1, "IRQ0 must stay high while PIT OUT0 is high"


def test_snapshot_after_a_pv_pulse_invents_no_irq0():
    board, cpu = _board()
    board.ports.write(0x20, 1, 0x11)  # ICW1: edge, cascade, ICW4
    board.ports.write(0x21, 1, 0x20)
    board.ports.write(0x21, 1, 0x04)
    board.ports.write(0x21, 1, 0x01)
    _pit_out_high(board)
    board.pic.acknowledge()  # the PIT's edge is taken ...
    board.ports.write(0x20, 1, 0x20)  # ... and EOI'd
    _pv_pulse(board, cpu)
    assert not board.pic.interrupt_pending()
    restored, _ = _board()
    restored.set_state(board.get_state())
    assert restored.pic.get_state() == board.pic.get_state()
    assert not restored.pic.interrupt_pending()
