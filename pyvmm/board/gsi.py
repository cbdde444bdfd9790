"""The board's interrupt wires, laid out from pyvmm/board/irq_routing.py.

    device -> ISA IRQ n wire --+--> i8259 input n ------------------> i8259 pair --+
                               +--> I/O APIC pin isa_gsi(n) --+                    | ExtINT
    PCI INTx -> PIRQ A-D wire -+--> i8259 input PIRQRC[x] ... | (PIIX3 steering)   | (LINT0)
                               +--> I/O APIC pin 16-19 -------+--> APIC bus --> local APIC
                                                                                  --> engine
    GSI-only sources (the HPET's routes) ---> I/O APIC pin n

Every input (an i8259 input, an I/O APIC pin) is itself a wired-OR
`SharedLine`, so ISA sources, steered PIRQs and GSI-only sources that share
an input never overwrite one another.
"""

from __future__ import annotations

from typing import Protocol

from pyvmm.board.irq_routing import IOAPIC_PINS, ISA_IRQS, PIRQS, isa_gsi, pirq_gsi
from pyvmm.machine.interrupts import IrqLine, IrqSink, SharedLine


class PirqSteering(Protocol):
    def pirq_route(self, pirq: int) -> int | None: ...


class InterruptWiring:
    """ISA IRQ wires, PIRQ wires and GSI inputs between devices and the controllers."""

    def __init__(self, pic: IrqSink, ioapic: IrqSink) -> None:
        self.pic_inputs = [SharedLine([(pic, irq)]) for irq in range(ISA_IRQS)]
        self.gsi_inputs = [SharedLine([(ioapic, pin)]) for pin in range(IOAPIC_PINS)]
        self.isa = [self._wire(irq) for irq in range(ISA_IRQS)]
        self.steering: PirqSteering | None = None  # the PIIX3, once the board has one
        self.pirqs = [SharedLine() for _ in range(PIRQS)]
        for pirq, wire in enumerate(self.pirqs):
            gsi = self.gsi_inputs[pirq_gsi(pirq)]
            wire.targets.append((gsi, gsi.input()))
            wire.targets.append((self, pirq))
        # One source per (PIRQ, i8259 input), made when first steered there.
        self._steered: dict[tuple[int, int], IrqLine] = {}
        self._routes: list[int | None] = [None] * PIRQS

    def _wire(self, irq: int) -> SharedLine:
        pic_input = self.pic_inputs[irq]
        targets = [(pic_input, pic_input.input())]
        gsi = isa_gsi(irq)
        if gsi is not None:
            targets.append((self.gsi_inputs[gsi], self.gsi_inputs[gsi].input()))
        return SharedLine(targets)

    def isa_pin(self, irq: int) -> int | None:
        """The I/O APIC pin ISA IRQ `irq` reaches (irq_routing.isa_gsi)."""
        return isa_gsi(irq)

    def retarget(self, pic: IrqSink, ioapic: IrqSink) -> None:
        """Wire every i8259 input to `pic` and every I/O APIC pin to `ioapic` instead
        (an engine whose interrupt controllers live elsewhere: KVM's in-kernel
        irqchip), each new sink getting the input's current level."""
        for inputs, sink in ((self.pic_inputs, pic), (self.gsi_inputs, ioapic)):
            for index, wire in enumerate(inputs):
                wire.targets = [(sink, index)]
                if wire.level:
                    sink.set_irq(index, True)

    def isa_line(self, irq: int, line_type: type[IrqLine] | None = None,
                 *args: object) -> IrqLine:
        """A new source on ISA IRQ `irq`."""
        return self.isa[irq].line(line_type, *args)

    def gsi_line(self, gsi: int) -> IrqLine:
        """A new source wired to I/O APIC pin `gsi` only."""
        return self.gsi_inputs[gsi].line()

    def pirq_line(self, pirq: int) -> IrqLine:
        """A new source on PIIX3 PIRQ `pirq` (0 = PIRQA), e.g. a PCI device's INTx."""
        return self.pirqs[pirq].line()

    # -- PIIX3 steering (82371SB "PIRQRC"): PIRQ x -> the i8259 input it selects ------
    def set_irq(self, pirq: int, level: bool) -> None:
        """IrqSink for the PIRQ wires: drive the i8259 input PIRQRC selects."""
        irq = self._routes[pirq]
        if irq is not None:
            self._source(pirq, irq).set(level)

    def _source(self, pirq: int, irq: int) -> IrqLine:
        key = (pirq, irq)
        if key not in self._steered:
            self._steered[key] = self.pic_inputs[irq].line()
        return self._steered[key]

    def steering_changed(self) -> None:
        """PIRQRC was written or restored: move each PIRQ's level to its new input."""
        for pirq, wire in enumerate(self.pirqs):
            old = self._routes[pirq]
            new = None if self.steering is None else self.steering.pirq_route(pirq)
            if old == new:
                continue
            if old is not None:
                self._source(pirq, old).lower()
            self._routes[pirq] = new
            if new is not None:
                self._source(pirq, new).set(wire.level)
