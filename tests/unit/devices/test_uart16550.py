"""16550 UART, checked against the PC16550D datasheet's register model."""

import io
import json

from pyvmm.devices.uart16550 import Uart16550
from pyvmm.machine.interrupts import IrqLine
from tests.unit.devices.irq_sink import Sink

RBR = THR = DLL = 0
IER = DLM = 1
IIR = FCR = 2
LCR = 3
MCR = 4
LSR = 5
MSR = 6
SCR = 7


def make():
    sink = Sink()
    out = io.BytesIO()
    uart = Uart16550(IrqLine(sink, 4), out)
    return uart, sink, out


def test_divisor_latch_round_trip_and_dlab_switches_registers():
    uart, _, _ = make()
    uart.io_write(IER, 1, 0x05)
    uart.io_write(LCR, 1, 0x83)  # DLAB + 8N1
    uart.io_write(DLL, 1, 0x01)
    uart.io_write(DLM, 1, 0x02)
    assert uart.io_read(DLL, 1) == 0x01
    assert uart.io_read(DLM, 1) == 0x02
    uart.io_write(LCR, 1, 0x03)
    assert uart.io_read(IER, 1) == 0x05  # IER untouched by the DLM write
    assert uart.io_read(LCR, 1) == 0x03
    assert uart.s.divisor == 0x0201


def test_transmit_writes_output_and_lsr_shows_empty():
    uart, sink, out = make()
    for ch in b"hi\n":
        uart.io_write(THR, 1, ch)
    assert out.getvalue() == b"hi\n"
    assert uart.io_read(LSR, 1) & 0x60 == 0x60  # THRE and TEMT
    assert not sink.level  # ETBEI off: no interrupt


def test_thre_interrupt_on_enabling_etbei_and_cleared_by_iir_read():
    uart, sink, _ = make()
    assert uart.io_read(IIR, 1) == 0x01
    uart.io_write(IER, 1, 0x02)
    assert sink.level
    assert uart.io_read(IIR, 1) == 0x02  # THRE is the source ...
    assert not sink.level  # ... and reading IIR cleared it
    assert uart.io_read(IIR, 1) == 0x01
    # Rewriting IER with ETBEI still set does not re-raise: no storm.
    uart.io_write(IER, 1, 0x02)
    assert not sink.level
    assert sink.rises == 1


def test_thre_interrupt_after_each_transmit():
    uart, sink, out = make()
    uart.io_write(IER, 1, 0x02)
    uart.io_read(IIR, 1)
    uart.io_write(THR, 1, ord("a"))
    assert sink.level  # THR emptied again
    assert uart.io_read(IIR, 1) == 0x02
    assert not sink.level
    assert sink.rises == 2


def test_rda_raised_on_input_and_cleared_when_drained():
    uart, sink, _ = make()
    uart.io_write(IER, 1, 0x01)
    assert uart.enqueue_input(b"x") == 1
    assert sink.level
    assert uart.io_read(IIR, 1) == 0x04
    assert uart.io_read(LSR, 1) & 0x01
    assert uart.io_read(RBR, 1) == ord("x")
    assert not sink.level
    assert not uart.io_read(LSR, 1) & 0x01
    assert uart.io_read(IIR, 1) == 0x01


def test_non_fifo_overrun_keeps_one_byte_and_sets_oe():
    # Overrun needs a sender that ignores flow control: loopback (MCR bit 4)
    # feeds THR straight into the receiver.
    uart, sink, _ = make()
    uart.io_write(MCR, 1, 0x10)
    uart.io_write(IER, 1, 0x05)  # RDA + line status
    uart.io_write(THR, 1, ord("a"))
    uart.io_write(THR, 1, ord("b"))
    assert uart.io_read(IIR, 1) == 0x06  # line status outranks RDA
    lsr = uart.io_read(LSR, 1)
    assert lsr & 0x02
    assert not uart.io_read(LSR, 1) & 0x02  # reading LSR cleared OE
    assert uart.io_read(IIR, 1) == 0x04
    assert uart.io_read(RBR, 1) == ord("b")  # RBR overwritten without FIFO


def test_host_input_is_flow_controlled_not_overrun():
    uart, sink, _ = make()
    assert uart.enqueue_input(b"abc") == 1  # only RBR has room without the FIFO
    assert not uart.io_read(LSR, 1) & 0x02  # no overrun: the rest waits
    assert bytes(uart.io_read(RBR, 1) for _ in range(3)) == b"abc"
    assert not uart.io_read(LSR, 1) & 0x01  # drained


def test_fifo_trigger_levels_and_timeout():
    uart, sink, _ = make()
    uart.io_write(FCR, 1, 0x81)  # enable FIFO, trigger 8
    uart.io_write(IER, 1, 0x01)
    uart.enqueue_input(b"1234567")
    assert uart.io_read(IIR, 1) == 0xCC  # below trigger: character timeout
    uart.enqueue_input(b"8")
    assert uart.io_read(IIR, 1) == 0xC4  # trigger reached: data available
    uart.io_read(RBR, 1)
    assert uart.io_read(IIR, 1) == 0xCC
    for _ in range(7):
        uart.io_read(RBR, 1)
    assert uart.io_read(IIR, 1) == 0xC1
    assert not sink.level


def test_fifo_capacity_overrun_and_clear():
    uart, _, _ = make()
    uart.io_write(FCR, 1, 0xC1)  # trigger 14
    uart.io_write(MCR, 1, 0x10)  # loopback: THR -> receiver, no flow control
    for byte in range(20):
        uart.io_write(THR, 1, byte)
    assert uart.s.dropped == 4
    assert uart.io_read(LSR, 1) & 0x03 == 0x03  # DR + OE
    assert [uart.io_read(RBR, 1) for _ in range(16)] == list(range(16))
    uart.io_write(MCR, 1, 0x00)
    assert uart.enqueue_input(bytes(range(20))) == 16  # host bytes wait, none lost
    assert uart.s.dropped == 4
    uart.io_write(FCR, 1, 0xC3)  # clear RX FIFO: the waiting host bytes move in
    assert [uart.io_read(RBR, 1) for _ in range(4)] == [16, 17, 18, 19]
    assert not uart.io_read(LSR, 1) & 0x01
    uart.enqueue_input(b"q")
    uart.io_write(FCR, 1, 0x00)  # disabling the FIFOs clears them too
    assert not uart.io_read(LSR, 1) & 0x01
    assert uart.io_read(IIR, 1) & 0xC0 == 0


def test_loopback_echoes_transmit_and_maps_modem_lines():
    uart, sink, out = make()
    uart.io_write(MCR, 1, 0x10)  # loopback, all outputs off
    uart.io_read(MSR, 1)
    assert uart.io_read(MSR, 1) & 0xF0 == 0
    uart.io_write(MCR, 1, 0x1A)  # loopback + OUT2 + RTS -> DCD + CTS
    msr = uart.io_read(MSR, 1)
    assert msr & 0xF0 == 0x90
    assert msr & 0x09 == 0x09  # DDCD and DCTS
    uart.io_write(THR, 1, 0x5A)
    assert out.getvalue() == b""  # nothing leaves in loopback
    assert uart.io_read(RBR, 1) == 0x5A
    assert uart.enqueue_input(b"ignored") == 0
    uart.io_write(MCR, 1, 0x00)
    assert uart.io_read(MSR, 1) & 0xF0 == 0xB0  # host asserts DCD, DSR, CTS


def test_modem_status_interrupt_lowest_priority():
    uart, sink, _ = make()
    uart.io_write(IER, 1, 0x0B)  # RDA, THRE, modem status
    uart.io_read(IIR, 1)  # consume the THRE from enabling ETBEI
    uart.io_write(MCR, 1, 0x10)  # loopback drops CTS/DSR/DCD: deltas
    uart.io_write(THR, 1, 0x41)  # loops back: RDA and THRE pending as well
    assert uart.io_read(IIR, 1) == 0x04
    uart.io_read(RBR, 1)
    assert uart.io_read(IIR, 1) == 0x02
    assert uart.io_read(IIR, 1) == 0x00  # modem status
    uart.io_read(MSR, 1)
    assert uart.io_read(IIR, 1) == 0x01
    assert not sink.level


def test_irq_not_gated_by_out2():
    uart, sink, _ = make()
    uart.io_write(MCR, 1, 0x00)
    uart.io_write(IER, 1, 0x01)
    uart.enqueue_input(b"k")
    assert sink.level


def test_scratch_register():
    uart, _, _ = make()
    uart.io_write(SCR, 1, 0xA5)
    assert uart.io_read(SCR, 1) == 0xA5


def test_state_round_trip():
    uart, _, _ = make()
    uart.io_write(FCR, 1, 0x41)
    uart.io_write(IER, 1, 0x01)
    uart.enqueue_input(b"abc")
    state = json.loads(json.dumps(uart.get_state()))
    other, sink, _ = make()
    other.set_state(state)
    assert sink.level
    assert other.io_read(IIR, 1) == 0xCC
    assert bytes(other.io_read(RBR, 1) for _ in range(3)) == b"abc"
