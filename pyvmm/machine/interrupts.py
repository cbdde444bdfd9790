"""Interrupt lines and the interface an engine uses to take interrupts.

A device never knows which controller it is wired to: it holds an `IrqLine`
and raises, lowers or pulses it (the "trigger" interface).  The board wires
each line to an `IrqSink` (the i8259 pair).  An engine sees only the
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


class NullInterruptController:
    """Never interrupts; for machines without a PIC (tests, snippets)."""

    def interrupt_pending(self) -> bool:
        return False

    def acknowledge(self) -> int:
        raise RuntimeError("no interrupt pending")
