"""QEMU's ACPI linker/loader script (`etc/table-loader`), from AcpiTables.

The format (QEMU hw/acpi/bios-linker-loader.c, the interface SeaBIOS's
romfile_loader.c and OVMF's QemuFwCfgAcpiPlatformDxe execute): a sequence
of 128-byte little-endian entries, each a le32 command and its arguments,
padded with zeros; file names are NUL-padded char[56] naming fw_cfg files.

    1 ALLOCATE      file[56], le32 alignment, u8 zone (1 high memory, 2 F-segment)
                    load the file into memory the firmware allocates
    2 ADD_POINTER   dest_file[56], src_file[56], le32 offset, u8 size (1/2/4/8)
                    add src_file's address to the size-byte value at dest+offset
    3 ADD_CHECKSUM  file[56], le32 offset, le32 start, le32 length
                    subtract the byte sum of file[start:start+length] from the
                    byte at offset (so the range then sums to 0)

The tables blob goes to high memory (reserved in the e820 map by the
firmware), the RSDP to the F-segment where OSPM scans for it.
"""

from __future__ import annotations

import struct

from pyvmm.firmware.acpi import AcpiTables

TABLES_FILE = "etc/acpi/tables"
RSDP_FILE = "etc/acpi/rsdp"
LOADER_FILE = "etc/table-loader"

ENTRY_SIZE = 128
FILE_NAME_SIZE = 56
COMMAND_ALLOCATE, COMMAND_ADD_POINTER, COMMAND_ADD_CHECKSUM = 1, 2, 3
ZONE_HIGH, ZONE_FSEG = 1, 2
TABLES_ALIGN = 64  # the FACS is 64-byte aligned (ACPI 6.4 §5.2.10)
RSDP_ALIGN = 16  # OSPM scans 16-byte boundaries (ACPI 6.4 §5.2.5.1)


def _name(file: str) -> bytes:
    data = file.encode()
    if len(data) >= FILE_NAME_SIZE:
        raise ValueError(f"fw_cfg file name too long: {file}")
    return data.ljust(FILE_NAME_SIZE, b"\x00")


def _entry(command: int, args: bytes) -> bytes:
    return (struct.pack("<I", command) + args).ljust(ENTRY_SIZE, b"\x00")


def allocate(file: str, align: int, zone: int) -> bytes:
    return _entry(COMMAND_ALLOCATE, _name(file) + struct.pack("<IB", align, zone))


def add_pointer(dest: str, src: str, offset: int, size: int) -> bytes:
    return _entry(COMMAND_ADD_POINTER, _name(dest) + _name(src) + struct.pack("<IB", offset,
                                                                                  size))


def add_checksum(file: str, offset: int, start: int, length: int) -> bytes:
    return _entry(COMMAND_ADD_CHECKSUM, _name(file) + struct.pack("<III", offset, start, length))


def table_loader(acpi: AcpiTables) -> bytes:
    """The script that installs `acpi` (its blobs served as TABLES_FILE and RSDP_FILE)."""
    script = [allocate(RSDP_FILE, RSDP_ALIGN, ZONE_FSEG),
              allocate(TABLES_FILE, TABLES_ALIGN, ZONE_HIGH)]
    script += [add_pointer(TABLES_FILE, TABLES_FILE, offset, size)
               for offset, size in acpi.table_pointers]
    script += [add_checksum(TABLES_FILE, at, start, length)
               for start, length, at in acpi.table_checksums]
    script += [add_pointer(RSDP_FILE, TABLES_FILE, offset, size)
               for offset, size in acpi.rsdp_pointers]
    script += [add_checksum(RSDP_FILE, at, start, length)
               for start, length, at in acpi.rsdp_checksums]
    return b"".join(script)


def fw_cfg_files(acpi: AcpiTables) -> dict[str, bytes]:
    """The three fw_cfg files that hand `acpi` to firmware."""
    return {TABLES_FILE: acpi.tables, RSDP_FILE: acpi.rsdp, LOADER_FILE: table_loader(acpi)}
