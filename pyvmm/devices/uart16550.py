"""National/TI PC16550D UART (COM1: ports 0x3F8-0x3FF, IRQ 4).

Facts relied on (TI PC16550D datasheet, SNLS378, tables "Register Summary"
and "Interrupt Control Functions"):

- Offset 0 is RBR (read) / THR (write), offsets 0-1 are the divisor latch
  when LCR.DLAB is set; IIR (read) and FCR (write) share offset 2.
- Interrupt priority: receiver line status (OE/PE/FE/BI) > received data
  available or character timeout > THR empty > modem status.  IIR bit 0 is 1
  when nothing is pending; bits 7-6 read 11 while the FIFOs are enabled.
- The THRE interrupt is set when THR empties or ETBEI is newly enabled while
  THR is empty, and cleared by reading IIR when THRE is the reported source
  or by writing THR (so a guest never sees an interrupt storm).
- Loopback (MCR bit 4): transmitted bytes come back into the receiver and
  MSR's CTS/DSR/RI/DCD reflect MCR's RTS/DTR/OUT1/OUT2.

Modelling choices (as rust-vmm vm-superio's serial.rs and QEMU's serial.c):
transmission is instantaneous, so THR and the transmitter are always empty;
the IRQ is not gated by MCR.OUT2; outside loopback the host side asserts
CTS, DSR and DCD.  Host input arrives in batches through `enqueue_input`, so
the FIFO character-timeout condition ("data below the trigger level and no
new character for four character times") holds as soon as a batch has been
delivered: it is reported whenever the FIFO holds data below the trigger.

Byte-wide device: a 2- or 4-byte access uses the low byte.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import BinaryIO, Protocol

from pyvmm.machine.interrupts import IrqLine
from pyvmm.schema import U8, U16, Bool, Int, ListOf, Record

# Register offsets from the base port.
DATA = 0  # RBR (read), THR (write); DLL when DLAB=1
IER = 1  # interrupt enable; DLM when DLAB=1
IIR_FCR = 2  # interrupt identification (read), FIFO control (write)
LCR = 3  # line control
MCR = 4  # modem control
LSR = 5  # line status
MSR = 6  # modem status
SCR = 7  # scratch

IER_ERBFI = 0x01  # enable received data available (and timeout) interrupt
IER_ETBEI = 0x02  # enable THR empty interrupt
IER_ELSI = 0x04  # enable receiver line status interrupt
IER_EDSSI = 0x08  # enable modem status interrupt
IER_MASK = 0x0F  # bits 4-7 are always 0

IIR_NONE = 0x01  # bit 0 set: no interrupt pending
IIR_MODEM_STATUS = 0x00  # priority 4: MSR delta bits
IIR_THR_EMPTY = 0x02  # priority 3: THR empty
IIR_RX_DATA = 0x04  # priority 2: received data at/over trigger level
IIR_RX_LINE_STATUS = 0x06  # priority 1: OE, PE, FE or BI
IIR_RX_TIMEOUT = 0x0C  # priority 2: character timeout (FIFO mode)
IIR_FIFO_ENABLED = 0xC0  # bits 7-6 set while FCR0 = 1

FCR_ENABLE = 0x01  # enable both FIFOs (changing it clears them)
FCR_CLEAR_RX = 0x02  # clear the receiver FIFO (self-clearing)
FCR_CLEAR_TX = 0x04  # clear the transmitter FIFO (self-clearing)
FCR_DMA_MODE = 0x08  # RXRDY/TXRDY pin mode; no effect on the programming model
FCR_TRIGGER_SHIFT = 6  # bits 7-6: receiver trigger level
RX_TRIGGER_LEVELS = (1, 4, 8, 14)  # bytes, indexed by FCR bits 7-6

LCR_DLAB = 0x80  # divisor latch access bit

MCR_DTR = 0x01  # data terminal ready
MCR_RTS = 0x02  # request to send
MCR_OUT1 = 0x04  # user output 1
MCR_OUT2 = 0x08  # user output 2 (the PC's IRQ enable gate; not modelled)
MCR_LOOP = 0x10  # loopback mode
MCR_MASK = 0x1F  # bits 5-7 are always 0

LSR_DR = 0x01  # data ready
LSR_OE = 0x02  # overrun error
LSR_PE = 0x04  # parity error
LSR_FE = 0x08  # framing error
LSR_BI = 0x10  # break interrupt
LSR_THRE = 0x20  # transmitter holding register (FIFO) empty
LSR_TEMT = 0x40  # transmitter empty
LSR_ERRORS = LSR_OE | LSR_PE | LSR_FE | LSR_BI  # cleared by reading LSR

MSR_DCTS = 0x01  # delta clear to send
MSR_DDSR = 0x02  # delta data set ready
MSR_TERI = 0x04  # trailing edge ring indicator
MSR_DDCD = 0x08  # delta data carrier detect
MSR_DELTAS = 0x0F  # cleared by reading MSR
MSR_CTS = 0x10  # clear to send
MSR_DSR = 0x20  # data set ready
MSR_RI = 0x40  # ring indicator
MSR_DCD = 0x80  # data carrier detect
HOST_MODEM_LINES = MSR_CTS | MSR_DSR | MSR_DCD  # what the host side asserts

FIFO_SIZE = 16  # bytes in each 16550 FIFO
DEFAULT_DIVISOR = 12  # 115200 / 12 = 9600 baud (vm-superio's default)

# Loopback wiring: MCR output bit -> MSR input bit (datasheet, "MCR bit 4").
_LOOPBACK_MAP = ((MCR_RTS, MSR_CTS), (MCR_DTR, MSR_DSR), (MCR_OUT1, MSR_RI), (MCR_OUT2, MSR_DCD))
# MSR input bit -> delta bit that records a change of it.
_DELTA_MAP = ((MSR_CTS, MSR_DCTS), (MSR_DSR, MSR_DDSR), (MSR_DCD, MSR_DDCD))


class Writer(Protocol):
    def write(self, data: bytes) -> object: ...
    def flush(self) -> None: ...


MAX_HOST_BACKLOG = 1 << 16  # bytes of typed/pasted input held for a slow guest


@dataclass
class UartState:
    divisor: int = DEFAULT_DIVISOR
    ier: int = 0
    fcr: int = 0  # last value written with FCR0 = 1 (enable + trigger bits)
    lcr: int = 0x03  # 8 data bits, no parity, 1 stop bit
    mcr: int = 0
    lsr_errors: int = 0  # OE/PE/FE/BI latched until LSR is read
    msr: int = HOST_MODEM_LINES
    scr: int = 0
    thre_pending: bool = False  # THR-empty interrupt condition
    rx: list[int] = field(default_factory=list)  # receiver FIFO (or the single RBR)
    dropped: int = 0  # received bytes lost to overrun
    # Host-side input not yet accepted by the receiver (flow control towards
    # the terminal, as QEMU's chardev "can_receive" does): not a UART register.
    host_backlog: list[int] = field(default_factory=list)



# Snapshot shape.  The divisor latch is a plain 16-bit register: 0 is what a
# guest leaves between its DLL and DLM writes, so it is a state, not damage.
UART_STATE = Record({
    "divisor": U16, "ier": Int(0, IER_MASK), "fcr": U8, "lcr": U8, "mcr": Int(0, MCR_MASK),
    "lsr_errors": Int(0, LSR_ERRORS), "msr": U8, "scr": U8, "thre_pending": Bool(),
    "rx": ListOf(U8, 0, FIFO_SIZE), "dropped": Int(0, 1 << 63),
    "host_backlog": ListOf(U8, 0, MAX_HOST_BACKLOG),
})

class Uart16550:
    """Port device at COM1 (offsets 0-7)."""

    def __init__(self, irq: IrqLine, output: BinaryIO | Writer) -> None:
        self.irq = irq
        self.output = output
        self.s = UartState()

    # -- helpers --------------------------------------------------------------
    @property
    def fifo_enabled(self) -> bool:
        return bool(self.s.fcr & FCR_ENABLE)

    @property
    def loopback(self) -> bool:
        return bool(self.s.mcr & MCR_LOOP)

    def _rx_capacity(self) -> int:
        return FIFO_SIZE if self.fifo_enabled else 1

    def _trigger_level(self) -> int:
        return RX_TRIGGER_LEVELS[self.s.fcr >> FCR_TRIGGER_SHIFT] if self.fifo_enabled else 1

    def _interrupt_id(self) -> int:
        """The highest-priority enabled pending source (IIR bits 3-0)."""
        s = self.s
        if s.ier & IER_ELSI and s.lsr_errors:
            return IIR_RX_LINE_STATUS
        if s.ier & IER_ERBFI and s.rx:
            if len(s.rx) >= self._trigger_level():
                return IIR_RX_DATA
            return IIR_RX_TIMEOUT
        if s.ier & IER_ETBEI and s.thre_pending:
            return IIR_THR_EMPTY
        if s.ier & IER_EDSSI and s.msr & MSR_DELTAS:
            return IIR_MODEM_STATUS
        return IIR_NONE

    def _update_irq(self) -> None:
        if self.s.host_backlog and not self.loopback:
            self._pump_backlog()
        self.irq.set(self._interrupt_id() != IIR_NONE)

    def _receive(self, byte: int) -> bool:
        """One character into the receiver; False (and OE) if there was no room.

        FIFO mode keeps the FIFO and loses the new character; non-FIFO mode
        overwrites RBR (datasheet, LSR bit 1)."""
        s = self.s
        if len(s.rx) < self._rx_capacity():
            s.rx.append(byte)
            return True
        s.lsr_errors |= LSR_OE
        s.dropped += 1
        if not self.fifo_enabled:
            s.rx[-1] = byte
        return False

    def _set_modem_inputs(self, lines: int) -> None:
        """New CTS/DSR/RI/DCD levels; record the delta bits they cause."""
        s = self.s
        old = s.msr
        deltas = 0
        for line, delta in _DELTA_MAP:
            if (old ^ lines) & line:
                deltas |= delta
        if old & MSR_RI and not lines & MSR_RI:
            deltas |= MSR_TERI  # trailing edge of RI only
        s.msr = lines | (old & MSR_DELTAS) | deltas

    def _modem_inputs_for(self, mcr: int) -> int:
        if not mcr & MCR_LOOP:
            return HOST_MODEM_LINES
        return sum(msr_bit for mcr_bit, msr_bit in _LOOPBACK_MAP if mcr & mcr_bit)

    # -- host side ---------------------------------------------------------------
    def enqueue_input(self, data: bytes) -> int:
        """Bytes from the host terminal; returns how many the receiver took now.

        The host side is flow-controlled: bytes that do not fit in the
        receiver (RBR, or the 16-byte FIFO) wait in a host backlog and move in
        as the guest reads RBR, so typing or pasting faster than the guest
        reads loses nothing (up to MAX_HOST_BACKLOG bytes; beyond that they are
        dropped and counted).  Ignored in loopback mode, where the serial input
        pin is disconnected."""
        if self.loopback:
            return 0
        backlog = self.s.host_backlog
        room = MAX_HOST_BACKLOG - len(backlog)
        if len(data) > room:
            self.s.dropped += len(data) - room
            data = data[:room]
        backlog.extend(data)
        accepted = self._pump_backlog()
        self._update_irq()
        return accepted

    def _pump_backlog(self) -> int:
        """Move waiting host bytes into the receiver while it has room."""
        s = self.s
        moved = 0
        while s.host_backlog and len(s.rx) < self._rx_capacity():
            s.rx.append(s.host_backlog.pop(0))
            moved += 1
        return moved

    # -- ports --------------------------------------------------------------------
    def io_read(self, offset: int, size: int) -> int:
        s = self.s
        dlab = s.lcr & LCR_DLAB
        if offset == DATA:
            if dlab:
                return s.divisor & 0xFF
            value = s.rx.pop(0) if s.rx else 0
            self._update_irq()  # also refills the receiver from the host backlog
            return value
        if offset == IER:
            return s.divisor >> 8 if dlab else s.ier
        if offset == IIR_FCR:
            ident = self._interrupt_id()
            if ident == IIR_THR_EMPTY:
                s.thre_pending = False
                self._update_irq()
            return ident | (IIR_FIFO_ENABLED if self.fifo_enabled else 0)
        if offset == LCR:
            return s.lcr
        if offset == MCR:
            return s.mcr
        if offset == LSR:
            value = (s.lsr_errors | LSR_THRE | LSR_TEMT | (LSR_DR if s.rx else 0))
            if s.lsr_errors:
                s.lsr_errors = 0
                self._update_irq()
            return value
        if offset == MSR:
            value = s.msr
            if value & MSR_DELTAS:
                s.msr &= ~MSR_DELTAS
                self._update_irq()
            return value
        return s.scr

    def io_write(self, offset: int, size: int, value: int) -> None:
        s = self.s
        value &= 0xFF
        dlab = s.lcr & LCR_DLAB
        if offset == DATA:
            if dlab:
                s.divisor = (s.divisor & 0xFF00) | value
                return
            self._transmit(value)
        elif offset == IER:
            if dlab:
                s.divisor = (s.divisor & 0x00FF) | value << 8
                return
            newly_etbei = value & IER_ETBEI and not s.ier & IER_ETBEI
            s.ier = value & IER_MASK
            if newly_etbei:
                s.thre_pending = True  # THR is always empty here
        elif offset == IIR_FCR:
            self._write_fcr(value)
        elif offset == LCR:
            s.lcr = value
        elif offset == MCR:
            value &= MCR_MASK
            s.mcr = value
            self._set_modem_inputs(self._modem_inputs_for(value))
        elif offset == SCR:
            s.scr = value
        # LSR and MSR are read-only (factory test writes are ignored).
        self._update_irq()

    def _transmit(self, byte: int) -> None:
        """THR write: the byte leaves at once, so THR empties again (THRE set)."""
        if self.loopback:
            self._receive(byte)
        else:
            self.output.write(bytes((byte,)))
            self.output.flush()
        self.s.thre_pending = True

    def _write_fcr(self, value: int) -> None:
        """FCR: changing FCR0 clears both FIFOs; other bits need FCR0 = 1."""
        s = self.s
        if (value ^ s.fcr) & FCR_ENABLE:
            s.rx.clear()
        if not value & FCR_ENABLE:
            s.fcr = 0
            return
        if value & FCR_CLEAR_RX:
            s.rx.clear()
        s.fcr = value & ~(FCR_CLEAR_RX | FCR_CLEAR_TX)

    # -- snapshot ------------------------------------------------------------------
    def get_state(self) -> dict:
        return asdict(self.s)

    def set_state(self, state: dict) -> None:
        UART_STATE.check(state)
        self.s = UartState(**state)
        self.s.rx = list(self.s.rx)
        self.s.host_backlog = list(self.s.host_backlog)
        self._update_irq()
