"""The PC's interrupt routing facts: ISA IRQ and PCI INTx -> GSI -> controller inputs.

One table for the board's wiring and for the firmware tables (ACPI MADT
interrupt source overrides, MP table I/O interrupt entries), so that what
the guest is told and what the board does cannot disagree.

- One I/O APIC, GSI base 0: GSI n is I/O APIC pin n (ACPI 6.5 §5.2.13
  "Global System Interrupts").
- ISA IRQ n drives i8259 input n and GSI n (identity mapping, ACPI §5.2.12.5
  "Interrupt Source Override Structure": ISA IRQs are identity-mapped unless
  overridden), except IRQ 0, which drives GSI 2: the PIT's output reaches the
  I/O APIC on pin 2, as on QEMU's pc machine and most PC chipsets (QEMU's
  MADT has the override 0 -> 2, flags 0: bus-conforming polarity and
  trigger, i.e. active-high edge for ISA).  ISA IRQ 2 is the i8259 cascade
  and reaches no I/O APIC pin.
- PCI INTx: a device in slot s drives PIIX3 PIRQ[(s - 1 + pin) mod 4] (pin 0
  = INTA#; QEMU's piix3_pci_slot_get_pirq swizzle).  PIRQ A-D drive the
  i8259 input their PIIX3 PIRQRC register selects, and GSI 16-19 (QEMU's pc
  machine; level-triggered, active low on the bus, presented asserted-high).
"""

from __future__ import annotations

from dataclasses import dataclass

ISA_IRQS = 16
IOAPIC_PINS = 24
IRQ_CASCADE = 2  # the i8259 master input the slave's INT drives

# MPS 1.4 Table 4-10 / ACPI MADT "MPS INTI flags": polarity bits 1:0, trigger bits 3:2.
INTI_CONFORMING = 0x0
INTI_ACTIVE_HIGH, INTI_ACTIVE_LOW = 0x1, 0x3
INTI_EDGE, INTI_LEVEL = 0x4, 0xC


@dataclass(frozen=True)
class SourceOverride:
    """An ISA IRQ that does not arrive on the GSI of the same number."""

    isa_irq: int
    gsi: int
    flags: int = INTI_CONFORMING


# The MADT's interrupt source overrides, and the board's wiring of those IRQs.
SOURCE_OVERRIDES: tuple[SourceOverride, ...] = (SourceOverride(0, 2),)

PIRQS = 4  # PIIX3 PIRQ A-D
PIRQ_GSI_BASE = 16
PIRQ_FLAGS = INTI_ACTIVE_LOW | INTI_LEVEL  # PCI INTx as an MP/ACPI entry describes it


def isa_gsi(irq: int) -> int | None:
    """The GSI (I/O APIC pin) ISA IRQ `irq` drives, or None (the cascade)."""
    if not 0 <= irq < ISA_IRQS:
        raise ValueError(f"ISA IRQ {irq} out of range")
    for override in SOURCE_OVERRIDES:
        if override.isa_irq == irq:
            return override.gsi
    return None if irq == IRQ_CASCADE else irq


def pci_pirq(slot: int, pin: int) -> int:
    """The PIRQ (0 = A) that INTx `pin` (0 = INTA#) of a device in `slot` drives."""
    return (slot - 1 + pin) % PIRQS


def pirq_gsi(pirq: int) -> int:
    """The I/O APIC pin PIRQ `pirq` drives."""
    return PIRQ_GSI_BASE + pirq
