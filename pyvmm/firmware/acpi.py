"""ACPI tables from a PlatformDescription (ACPI Specification 6.4, §5.2).

`build_acpi` lays the tables out in one blob, as if it sat at address 0,
with every pointer and checksum recorded, so the same tables can be
- placed at a fixed address by a direct-boot loader (`AcpiTables.placed`), or
- handed to firmware through fw_cfg with a table-loader script that allocates,
  patches and checksums them (loader.py), as QEMU does.

Tables (the blob "etc/acpi/tables", in this order): FACS (§5.2.10, 64-byte
aligned), DSDT (§5.2.11.1), FADT (§5.2.9), MADT (§5.2.12), HPET (IA-PC HPET
Specification 1.0a §3.2.4), RSDT (§5.2.7), XSDT (§5.2.8); and the RSDP
(§5.2.5.3) apart ("etc/acpi/rsdp"), since firmware puts it where OSPM scans
(0xE0000-0xFFFFF).  Every table has the 36-byte header of §5.2.6 whose
checksum byte makes the whole table sum to 0 (mod 256).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from pyvmm.firmware import aml
from pyvmm.firmware import resources as res
from pyvmm.firmware.description import (
    POLARITY_HIGH,
    TRIGGER_LEVEL,
    GenericRegister,
    IsaOverride,
    PlatformDescription,
    inti_flags,
)

OEM_ID = b"PYVMM "
OEM_TABLE_ID = b"PYVMM-PC"
OEM_REVISION = 1
CREATOR_ID = b"PYVM"
CREATOR_REVISION = 1
HEADER_SIZE = 36
CHECKSUM_OFFSET = 9

RSDP_SIGNATURE = b"RSD PTR "
RSDP_REVISION = 2  # ACPI 2.0+: RSDT and XSDT
RSDP_SIZE = 36
RSDP_V1_SIZE = 20
RSDP_CHECKSUM, RSDP_EXT_CHECKSUM = 8, 32
RSDP_RSDT, RSDP_XSDT = 16, 24

FADT_REVISION, FADT_MINOR = 6, 4  # ACPI 6.4 Table 5.9: 276 bytes
FADT_SIZE = 276
FADT_FIRMWARE_CTRL, FADT_DSDT = 36, 40
FADT_X_FIRMWARE_CTRL, FADT_X_DSDT = 132, 140
FADT_FLAG_WBINVD = 1 << 0
FADT_FLAG_PROC_C1 = 1 << 2
FADT_FLAG_PWR_BUTTON = 1 << 4  # 1: no fixed-feature power button
FADT_FLAG_SLP_BUTTON = 1 << 5  # 1: no fixed-feature sleep button
FADT_FLAG_RESET_REG_SUP = 1 << 10
FADT_FLAG_HW_REDUCED = 1 << 20
IAPC_LEGACY_DEVICES, IAPC_8042, IAPC_VGA_NOT_PRESENT = 1 << 0, 1 << 1, 1 << 2
PM1_EVT_LEN, PM1_CNT_LEN, PM_TMR_LEN = 4, 2, 4
PM1_CNT_OFFSET, PM_TMR_OFFSET = 0x04, 0x08
P_LVL2_LAT_NONE, P_LVL3_LAT_NONE = 101, 1001  # > 100 / > 1000 us: C2/C3 unsupported

FACS_SIZE = 64
FACS_VERSION = 2
FACS_ALIGN = 64

MADT_REVISION = 5
MADT_PCAT_COMPAT = 1 << 0
MADT_LAPIC, MADT_IOAPIC, MADT_OVERRIDE, MADT_LAPIC_NMI = 0, 1, 2, 4
MADT_LAPIC_ENABLED = 1 << 0
MADT_ALL_PROCESSORS = 0xFF
LINT1 = 1

HPET_TABLE_REVISION = 1
SPACE_MEMORY, SPACE_IO = 0, 1

TABLE_ALIGN = 8


@dataclass
class AcpiTables:
    """The tables blob and the RSDP, laid out for address 0, with their fixups.

    `table_pointers` / `rsdp_pointers`: (offset, size) of every field holding an
    address inside the tables blob (stored as an offset into it).
    `table_checksums` / `rsdp_checksums`: (start, length, checksum offset), in
    the order they must be computed.  `offsets`: each table's offset by signature.
    """

    tables: bytes
    rsdp: bytes
    table_pointers: list[tuple[int, int]] = field(default_factory=list)
    rsdp_pointers: list[tuple[int, int]] = field(default_factory=list)
    table_checksums: list[tuple[int, int, int]] = field(default_factory=list)
    rsdp_checksums: list[tuple[int, int, int]] = field(default_factory=list)
    offsets: dict[str, int] = field(default_factory=dict)

    def placed(self, tables_address: int) -> tuple[bytes, bytes]:
        """(tables, rsdp) with every pointer made absolute for a blob at
        `tables_address`, and every checksum recomputed."""
        tables = relocate(self.tables, self.table_pointers, self.table_checksums,
                          tables_address)
        rsdp = relocate(self.rsdp, self.rsdp_pointers, self.rsdp_checksums, tables_address)
        return tables, rsdp


def checksum(data: bytes | bytearray) -> int:
    """The byte that makes `data` (with that byte 0) sum to 0 mod 256 (§5.2.6)."""
    return -sum(data) & 0xFF


def relocate(data: bytes, pointers: list[tuple[int, int]],
             checksums: list[tuple[int, int, int]], base: int) -> bytes:
    out = bytearray(data)
    for offset, size in pointers:
        value = int.from_bytes(out[offset:offset + size], "little") + base
        if value >= 1 << (8 * size):
            raise ValueError(f"ACPI pointer at {offset:#x} does not fit in {size} bytes")
        out[offset:offset + size] = value.to_bytes(size, "little")
    for start, length, at in checksums:
        out[at] = 0
        out[at] = checksum(out[start:start + length])
    return bytes(out)


def header(signature: bytes, length: int, revision: int) -> bytes:
    """§5.2.6 System Description Table Header (checksum left 0)."""
    return struct.pack("<4sIBB6s8sI4sI", signature, length, revision, 0, OEM_ID,
                       OEM_TABLE_ID, OEM_REVISION, CREATOR_ID, CREATOR_REVISION)


def gas(register: GenericRegister | None) -> bytes:
    """§5.2.3.2 Generic Address Structure (all zero: not present)."""
    if register is None:
        return bytes(12)
    return struct.pack("<BBBBQ", register.space, register.bit_width, 0, register.access_size,
                       register.address)


def io_register(address: int, length: int) -> GenericRegister:
    return GenericRegister(SPACE_IO, 8 * length, address, {1: 1, 2: 2, 4: 3}[length])


class _Blob:
    """Tables appended at aligned offsets, pointers and checksums recorded."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.pointers: list[tuple[int, int]] = []
        self.checksums: list[tuple[int, int, int]] = []
        self.offsets: dict[str, int] = {}

    def add(self, name: str, table: bytes, pointers: tuple[tuple[int, int, int], ...] = (),
            align: int = TABLE_ALIGN, checksummed: bool = True) -> int:
        """Append `table`; `pointers` are (field offset, size, target offset)."""
        self.data += bytes(-len(self.data) % align)
        at = len(self.data)
        body = bytearray(table)
        for offset, size, target in pointers:
            body[offset:offset + size] = target.to_bytes(size, "little")
            self.pointers.append((at + offset, size))
        if checksummed:
            body[CHECKSUM_OFFSET] = checksum(body)
            self.checksums.append((at, len(body), at + CHECKSUM_OFFSET))
        self.data += body
        self.offsets[name] = at
        return at


def build_facs() -> bytes:
    """§5.2.10 Table 5.14: no waking vector, no global lock; version 2."""
    return struct.pack("<4sIIIIIQB3sI24s", b"FACS", FACS_SIZE, 0, 0, 0, 0, 0, FACS_VERSION,
                       bytes(3), 0, bytes(24))


def build_prt(desc: PlatformDescription) -> bytes:
    """_PRT (§6.2.13): one {Address, Pin, Source, Source Index} package per PCI
    INTx pin in use; Address is the device number in the high word with 0xFFFF
    (any function) in the low one; Source 0 makes Source Index the GSI."""
    return aml.name("_PRT", aml.package(*(
        aml.package(aml.integer(pci.device << 16 | 0xFFFF), aml.integer(pci.pin),
                    aml.integer(0), aml.integer(pci.gsi))
        for pci in desc.pci_interrupts)))


def build_crs(desc: PlatformDescription) -> bytes:
    """PCI0's _CRS (§6.2.2): the windows the host bridge forwards — buses 0-255,
    every I/O port but its own configuration ports (which it consumes), and the
    memory window where BARs go.  Linux places unassigned BARs only inside these
    windows (without a _CRS it needs `pci=nocrs`)."""
    if desc.pci_mmio_window is None:
        return b""
    config, count = desc.pci_config_ports
    return aml.name("_CRS", res.template(
        res.word_space(res.SPACE_BUS, 0, 0xFF),
        res.io_port(config, count),
        res.word_space(res.SPACE_IO, 0, config - 1, res.IO_RANGE_ENTIRE),
        res.word_space(res.SPACE_IO, config + count, 0xFFFF, res.IO_RANGE_ENTIRE),
        res.dword_memory(*desc.pci_mmio_window)))


def build_dsdt(desc: PlatformDescription) -> bytes:
    r"""A minimal DSDT (§5.2.11.1): \_SB.PCI0, the PCI host bridge (PNP0A03,
    §6.1.5 _HID / §6.1.1 _ADR), and \_S5 (§7.4.2.5): the SLP_TYP values PM1a/PM1b
    take for soft off."""
    body = (aml.scope("\\_SB", aml.device(
                "PCI0", aml.name("_HID", aml.eisa_id("PNP0A03")),
                aml.name("_ADR", aml.integer(0)), aml.name("_UID", aml.integer(0)),
                build_crs(desc), build_prt(desc) if desc.pci_interrupts else b""))
            + aml.name("\\_S5", aml.package(aml.integer(desc.s5_sleep_type),
                                            aml.integer(desc.s5_sleep_type),
                                            aml.integer(0), aml.integer(0))))
    return header(b"DSDT", HEADER_SIZE + len(body), 2) + body


def build_fadt(desc: PlatformDescription) -> bytes:
    """§5.2.9 Table 5.9, revision 6: the PIIX4 PM blocks, SCI, reset register;
    not hardware-reduced (HW_REDUCED_ACPI clear).  SMI_CMD 0: there is no SMM,
    so the machine is always in ACPI mode (§4.8.2.1.1 "legacy-free")."""
    pm = desc.pm_base
    flags = (FADT_FLAG_WBINVD | FADT_FLAG_PROC_C1 | FADT_FLAG_PWR_BUTTON
             | FADT_FLAG_SLP_BUTTON | FADT_FLAG_RESET_REG_SUP)
    boot_arch = IAPC_LEGACY_DEVICES | IAPC_VGA_NOT_PRESENT | (IAPC_8042 if desc.has_i8042 else 0)
    evt, cnt, tmr = pm, pm + PM1_CNT_OFFSET, pm + PM_TMR_OFFSET
    fixed = struct.pack(
        "<IIBBHIBBBBIIIIIIIIBBBBBBBBHHHHBBBBBHBI",
        0, 0,                          # FIRMWARE_CTRL, DSDT (patched)
        0, 0,                          # reserved, Preferred_PM_Profile (unspecified)
        desc.sci_irq, 0, 0, 0, 0, 0,   # SCI_INT, SMI_CMD, ACPI_ENABLE/DISABLE, S4BIOS, PSTATE
        evt, 0, cnt, 0, 0, tmr, 0, 0,  # PM1a/b EVT, PM1a/b CNT, PM2 CNT, PM_TMR, GPE0/1
        PM1_EVT_LEN, PM1_CNT_LEN, 0, PM_TMR_LEN, 0, 0, 0, 0,
        P_LVL2_LAT_NONE, P_LVL3_LAT_NONE, 0, 0,  # latencies, FLUSH_SIZE/STRIDE
        0, 0, 0, 0, desc.century_cmos_index, boot_arch, 0, flags)
    extended = (gas(desc.reset) + struct.pack("<BHB", desc.reset_value, 0, FADT_MINOR)
                + struct.pack("<QQ", 0, 0)  # X_FIRMWARE_CTRL, X_DSDT (patched)
                + gas(io_register(evt, PM1_EVT_LEN)) + gas(None)
                + gas(io_register(cnt, PM1_CNT_LEN)) + gas(None) + gas(None)
                + gas(io_register(tmr, PM_TMR_LEN)) + gas(None) + gas(None)
                + gas(None) + gas(None) + bytes(8))  # sleep control/status, hypervisor id
    body = fixed + extended
    assert HEADER_SIZE + len(body) == FADT_SIZE
    return header(b"FACP", FADT_SIZE, FADT_REVISION) + body


def madt_entries(desc: PlatformDescription) -> bytes:
    """§5.2.12.2 Processor Local APIC, §5.2.12.3 I/O APIC, §5.2.12.5 Interrupt
    Source Override, §5.2.12.7 Local APIC NMI (LINT1, as on every PC)."""
    out = b"".join(struct.pack("<BBBBI", MADT_LAPIC, 8, uid, apic_id, MADT_LAPIC_ENABLED)
                   for uid, apic_id in enumerate(desc.apic_ids))
    out += b"".join(struct.pack("<BBBBII", MADT_IOAPIC, 12, io.apic_id, 0, io.address,
                                io.gsi_base) for io in desc.ioapics)
    overrides = list(desc.overrides)
    if not any(o.irq == desc.sci_irq for o in overrides):
        # The SCI is level-triggered; this board drives it active-high (§5.2.12.5).
        overrides.append(IsaOverride(desc.sci_irq, desc.sci_irq,
                                     inti_flags(POLARITY_HIGH, TRIGGER_LEVEL)))
    out += b"".join(struct.pack("<BBBBIH", MADT_OVERRIDE, 10, 0, o.irq, o.gsi, o.flags)
                    for o in overrides)
    out += struct.pack("<BBBHB", MADT_LAPIC_NMI, 6, MADT_ALL_PROCESSORS, 0, LINT1)
    return out


def build_madt(desc: PlatformDescription) -> bytes:
    body = struct.pack("<II", desc.lapic_address, MADT_PCAT_COMPAT) + madt_entries(desc)
    return header(b"APIC", HEADER_SIZE + len(body), MADT_REVISION) + body


def build_hpet(desc: PlatformDescription) -> bytes:
    """IA-PC HPET 1.0a §3.2.4: event timer block ID, base address (memory), number 0,
    minimum periodic tick, no page protection."""
    base = GenericRegister(SPACE_MEMORY, 64, desc.hpet_address, 0)
    body = struct.pack("<I", desc.hpet_block_id) + gas(base) + struct.pack(
        "<BHB", 0, desc.hpet_min_tick, 0)
    return header(b"HPET", HEADER_SIZE + len(body), HPET_TABLE_REVISION) + body


def _sdt(signature: bytes, entry_size: int, targets: list[int]) -> tuple[bytes, tuple]:
    length = HEADER_SIZE + entry_size * len(targets)
    pointers = tuple((HEADER_SIZE + entry_size * i, entry_size, target)
                     for i, target in enumerate(targets))
    return header(signature, length, 1) + bytes(length - HEADER_SIZE), pointers


def build_acpi(desc: PlatformDescription) -> AcpiTables:
    blob = _Blob()
    facs = blob.add("FACS", build_facs(), align=FACS_ALIGN, checksummed=False)
    dsdt = blob.add("DSDT", build_dsdt(desc))
    fadt = blob.add("FACP", build_fadt(desc), pointers=(
        (FADT_FIRMWARE_CTRL, 4, facs), (FADT_DSDT, 4, dsdt),
        (FADT_X_FIRMWARE_CTRL, 8, facs), (FADT_X_DSDT, 8, dsdt)))
    described = [fadt, blob.add("APIC", build_madt(desc)), blob.add("HPET", build_hpet(desc))]
    rsdt = blob.add("RSDT", *_sdt(b"RSDT", 4, described))
    xsdt = blob.add("XSDT", *_sdt(b"XSDT", 8, described))
    rsdp = bytearray(struct.pack("<8sB6sBIIQB3s", RSDP_SIGNATURE, 0, OEM_ID, RSDP_REVISION,
                                 rsdt, RSDP_SIZE, xsdt, 0, bytes(3)))
    rsdp_checksums = [(0, RSDP_V1_SIZE, RSDP_CHECKSUM), (0, RSDP_SIZE, RSDP_EXT_CHECKSUM)]
    for start, length, at in rsdp_checksums:
        rsdp[at] = checksum(rsdp[start:start + length])
    return AcpiTables(bytes(blob.data), bytes(rsdp), blob.pointers,
                      [(RSDP_RSDT, 4), (RSDP_XSDT, 8)], blob.checksums, rsdp_checksums,
                      blob.offsets)
