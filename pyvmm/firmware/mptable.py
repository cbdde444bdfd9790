"""The MP configuration table (Intel MultiProcessor Specification 1.4, May 1997).

Facts relied on (chapter 4 "MP Configuration Table"):
- §4.1 MP Floating Pointer Structure, 16 bytes on a 16-byte boundary where
  the OS scans (the BIOS ROM area 0xF0000-0xFFFFF among them): "_MP_", the
  configuration table's physical address, length 1 (paragraphs), spec
  revision 4, a checksum making the 16 bytes sum to 0, feature byte 1 = 0
  (a configuration table is present), feature byte 2 bit 7 IMCRP = 0
  (virtual-wire mode: no IMCR).
- §4.2 Table 4-2 the header, 44 bytes: "PCMP", base table length, revision 4,
  checksum of the base table, OEM ID (8) and product ID (12), no OEM table,
  the entry count, the local APIC address, no extended table.
- §4.3 entries in ascending type order: processor (type 0, 20 bytes: APIC ID,
  version, EN | BP flags, CPUID signature and feature flags), bus (type 1,
  8 bytes, "PCI   " / "ISA   "), I/O APIC (type 2, 8 bytes), I/O interrupt
  assignment (type 3) and local interrupt assignment (type 4), 8 bytes each:
  interrupt type (0 INT, 1 NMI, 3 ExtINT), PO/EL flags (Table 4-10, the
  same encoding as ACPI's MPS INTI flags), source bus and IRQ, destination
  APIC and its INTIN#/LINTIN#.  For a PCI source bus the source IRQ is the
  device number in bits 6:2 and the INTx pin in bits 1:0 (00 = INTA#;
  §4.3.4 and Appendix D), one entry per device and pin in use.
"""

from __future__ import annotations

import struct

from pyvmm.firmware.description import (
    POLARITY_HIGH,
    TRIGGER_LEVEL,
    PlatformDescription,
    inti_flags,
)

FLOATING_SIGNATURE = b"_MP_"
FLOATING_SIZE = 16
CONFIG_SIGNATURE = b"PCMP"
SPEC_REVISION = 4
OEM_ID = b"PYVMM   "
PRODUCT_ID = b"PC          "
HEADER_SIZE = 44

ENTRY_PROCESSOR, ENTRY_BUS, ENTRY_IOAPIC, ENTRY_IO_INTERRUPT, ENTRY_LOCAL_INTERRUPT = range(5)
CPU_ENABLED, CPU_BOOTSTRAP = 1 << 0, 1 << 1
IOAPIC_ENABLED = 1 << 0
INT, NMI, SMI, EXTINT = 0, 1, 2, 3
PCI_BUS_ID, ISA_BUS_ID = 0, 1
ALL_LOCAL_APICS = 0xFF
LINTIN0, LINTIN1 = 0, 1


def _checksum(data: bytes | bytearray) -> int:
    return -sum(data) & 0xFF


def _entries(desc: PlatformDescription) -> list[bytes]:
    entries = [struct.pack("<BBBBII8s", ENTRY_PROCESSOR, apic_id, desc.lapic_version,
                           CPU_ENABLED | (CPU_BOOTSTRAP if index == 0 else 0),
                           desc.cpu_signature, desc.cpu_features, bytes(8))
               for index, apic_id in enumerate(desc.apic_ids)]
    entries += [struct.pack("<BB6s", ENTRY_BUS, PCI_BUS_ID, b"PCI   "),
                struct.pack("<BB6s", ENTRY_BUS, ISA_BUS_ID, b"ISA   ")]
    entries += [struct.pack("<BBBBI", ENTRY_IOAPIC, io.apic_id, io.version, IOAPIC_ENABLED,
                            io.address) for io in desc.ioapics]
    overrides = {o.irq: (o.gsi, o.flags) for o in desc.overrides}
    overrides.setdefault(desc.sci_irq, (desc.sci_irq, inti_flags(POLARITY_HIGH, TRIGGER_LEVEL)))
    ioapic = desc.ioapics[0]
    for irq in desc.isa_irqs:
        gsi, flags = overrides.get(irq, (irq, 0))
        entries.append(struct.pack("<BBHBBBB", ENTRY_IO_INTERRUPT, INT, flags, ISA_BUS_ID, irq,
                                   ioapic.apic_id, gsi - ioapic.gsi_base))
    for pci in desc.pci_interrupts:
        entries.append(struct.pack("<BBHBBBB", ENTRY_IO_INTERRUPT, INT, pci.flags, PCI_BUS_ID,
                                   pci.device << 2 | pci.pin, ioapic.apic_id,
                                   pci.gsi - ioapic.gsi_base))
    # The 8259's INTR on every LAPIC's LINTIN0 (virtual wire), NMI on LINTIN1.
    entries += [struct.pack("<BBHBBBB", ENTRY_LOCAL_INTERRUPT, EXTINT, 0, ISA_BUS_ID, 0,
                            ALL_LOCAL_APICS, LINTIN0),
                struct.pack("<BBHBBBB", ENTRY_LOCAL_INTERRUPT, NMI, 0, ISA_BUS_ID, 0,
                            ALL_LOCAL_APICS, LINTIN1)]
    return entries


def config_table(desc: PlatformDescription) -> bytes:
    """§4.2: the base MP configuration table (header and entries)."""
    entries = _entries(desc)
    body = b"".join(entries)
    table = bytearray(struct.pack("<4sHBB8s12sIHHIHBB", CONFIG_SIGNATURE,
                                  HEADER_SIZE + len(body), SPEC_REVISION, 0, OEM_ID,
                                  PRODUCT_ID, 0, 0, len(entries), desc.lapic_address, 0, 0, 0)
                      + body)
    table[7] = _checksum(table)
    return bytes(table)


def floating_pointer(config_address: int) -> bytes:
    """§4.1: the floating pointer to a configuration table at `config_address`."""
    data = bytearray(struct.pack("<4sIBBBB4s", FLOATING_SIGNATURE, config_address, 1,
                                 SPEC_REVISION, 0, 0, bytes(4)))
    data[10] = _checksum(data)
    return bytes(data)
