"""What the firmware tables describe: a small, plain description the board fills in.

The builders in this package read only this; the board (pyvmm/board/pc.py,
`PcBoard.platform_description`) fills it from its own device table and
routing facts, so no table is a hand-kept copy of the board.
"""

from __future__ import annotations

from dataclasses import dataclass

# MPS INTI / ACPI MPS INTI flags (ACPI 6.4 §5.2.12.5 Table 5.26; MP spec 1.4 Table 4-10):
# polarity bits 1:0 and trigger mode bits 3:2; 00 = conforms to the bus.
POLARITY_CONFORMS, POLARITY_HIGH, POLARITY_LOW = 0b00, 0b01, 0b11
TRIGGER_CONFORMS, TRIGGER_EDGE, TRIGGER_LEVEL = 0b00, 0b01, 0b11


def inti_flags(polarity: int, trigger: int) -> int:
    return polarity | trigger << 2


@dataclass(frozen=True)
class IoApicInfo:
    apic_id: int
    address: int
    gsi_base: int
    pins: int
    version: int


@dataclass(frozen=True)
class IsaOverride:
    """ISA IRQ `irq` arrives at I/O APIC input `gsi` with `flags` (INTI flags)."""

    irq: int
    gsi: int
    flags: int


@dataclass(frozen=True)
class PciInterrupt:
    """INTx `pin` (0 = INTA#) of PCI bus 0 device `device` arrives at I/O APIC
    input `gsi` with `flags` (INTI flags)."""

    device: int
    pin: int
    gsi: int
    flags: int


@dataclass(frozen=True)
class GenericRegister:
    """An ACPI Generic Address (ACPI 6.4 §5.2.3.2): space 0 memory, 1 system I/O."""

    space: int
    bit_width: int
    address: int
    access_size: int  # 1 byte, 2 word, 3 dword, 4 qword


@dataclass(frozen=True)
class PlatformDescription:
    """The PC as its firmware tables state it."""

    apic_ids: tuple[int, ...]  # one local APIC per CPU, the BSP first
    cpu_signature: int  # CPUID.01H:EAX (stepping, model, family)
    cpu_features: int  # CPUID.01H:EDX
    lapic_address: int
    lapic_version: int
    ioapics: tuple[IoApicInfo, ...]
    isa_irqs: tuple[int, ...]  # the ISA IRQs wired to the I/O APIC (identity unless overridden)
    overrides: tuple[IsaOverride, ...]
    pm_base: int  # PIIX4 PM I/O block (PM1a_EVT at +0, PM1a_CNT at +4, PM_TMR at +8)
    sci_irq: int
    s5_sleep_type: int  # the PM1_CNT SLP_TYP value that powers off
    reset: GenericRegister
    reset_value: int
    century_cmos_index: int
    has_i8042: bool
    hpet_address: int
    hpet_block_id: int  # the low dword of the HPET's capabilities register
    hpet_min_tick: int
    pci_interrupts: tuple[PciInterrupt, ...] = ()  # the bus-0 functions with an INTx pin
    pci_config_ports: tuple[int, int] = (0, 0)  # (base, count): configuration mechanism #1
    pci_mmio_window: tuple[int, int] | None = None  # [first, last] the host bridge forwards
