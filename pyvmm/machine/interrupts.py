"""Interrupt lines and the interface an engine uses to take interrupts.

A device never knows which controller it is wired to: it holds an `IrqLine`
and raises, lowers or pulses it (the "trigger" interface).  The board wires
each line to an `IrqSink`: a `SharedLine`, the board's wire for one interrupt
input, which several devices may drive at once (wired-OR, as ISA and PCI
interrupt lines are shared) and which may reach several controller inputs
(the i8259 pair and an I/O APIC pin).  An engine sees only the
`InterruptController` protocol: is INTR asserted, and the INTA cycle that
returns the vector (Intel 8259A datasheet, "Interrupt sequence").
"""

from __future__ import annotations

from typing import Protocol


class IrqSink(Protocol):
    def set_irq(self, irq: int, level: bool) -> None: ...


class InterruptController(Protocol):
    def interrupt_pending(self) -> bool:
        """True while the controller asserts INTR to the CPU."""
        ...

    def acknowledge(self) -> int:
        """The INTA cycle: returns the vector and moves the IRQ from IRR to ISR."""
        ...


class IrqLine:
    """One wire from a device to an interrupt controller input."""

    __slots__ = ("sink", "irq", "level")

    def __init__(self, sink: IrqSink | None, irq: int) -> None:
        self.sink = sink
        self.irq = irq
        self.level = False

    def set(self, level: bool) -> None:
        if level == self.level:
            return
        self.level = level
        if self.sink is not None:
            self.sink.set_irq(self.irq, level)

    def raise_(self) -> None:
        self.set(True)

    def lower(self) -> None:
        self.set(False)

    def pulse(self) -> None:
        """A rising then falling edge (what an edge-triggered input latches)."""
        self.set(True)
        self.set(False)


class GatedLine(IrqLine):
    """A device's output through a switch in series with its wire (`inner`).

    `level` is what the device drives; while the switch is open
    (`connect(False)`) the wire sees low, and the device's level reappears on
    it when the switch closes.  The HPET's legacy replacement cuts the PIT
    and the RTC from IRQ0 and IRQ8 this way (IA-PC HPET 1.0a §2.3.9.2.2).
    """

    __slots__ = ("inner", "connected")

    def __init__(self, inner: IrqLine) -> None:
        super().__init__(None, 0)
        self.inner = inner
        self.connected = True

    def set(self, level: bool) -> None:
        self.level = level
        self.inner.set(level and self.connected)

    def connect(self, connected: bool) -> None:
        self.connected = connected
        self.inner.set(self.level and connected)


class SharedLine:
    """One board interrupt wire: several sources, one level, several controller inputs.

    The level is the OR of the sources' levels (a wired-OR line: the PIT's OUT0
    and the PV timer both drive IRQ0, and one lowering its output does not
    lower the other's).  Every change of that level is forwarded to each
    target `(sink, input)`, e.g. the i8259 input and the I/O APIC pin of one
    GSI.  Sources are `IrqLine`s made by `line()`; each owns one bit.
    """

    __slots__ = ("targets", "sources", "count", "level")

    def __init__(self, targets: list[tuple[IrqSink, int]] | None = None) -> None:
        self.targets: list[tuple[IrqSink, int]] = list(targets or ())
        self.sources = 0  # one bit per source currently driving the line high
        self.count = 0  # sources handed out
        self.level = False

    def input(self) -> int:
        """Reserve a source index (for a sink that drives this wire as `set_irq(n, ...)`,
        e.g. another SharedLine targeting this one)."""
        index = self.count
        self.count += 1
        return index

    def line(self, line_type: type[IrqLine] | None = None, *args: object) -> IrqLine:
        """A new source on this wire (an `IrqLine`, or `line_type(self, n, *args)`)."""
        index = self.input()
        return IrqLine(self, index) if line_type is None else line_type(self, index, *args)

    def set_irq(self, irq: int, level: bool) -> None:
        """IrqSink for the sources: source `irq` drives its output to `level`."""
        bit = 1 << irq
        self.sources = self.sources | bit if level else self.sources & ~bit
        new = self.sources != 0
        if new != self.level:
            self.level = new
            for sink, pin in self.targets:
                sink.set_irq(pin, new)


class NullInterruptController:
    """Never interrupts; for machines without a PIC (tests, snippets)."""

    def interrupt_pending(self) -> bool:
        return False

    def acknowledge(self) -> int:
        raise RuntimeError("no interrupt pending")
