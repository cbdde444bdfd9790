"""Reading ACPI tables back (ACPI 6.4 §5.2), for the tests: a parser written
from the spec, independent of the builders."""

from __future__ import annotations

import struct
from dataclasses import dataclass


@dataclass
class Table:
    signature: bytes
    address: int
    data: bytes

    @property
    def body(self) -> bytes:
        return self.data[36:]


def read_table(memory: bytes, base: int, address: int) -> Table:
    """The table at `address` in `memory` (which starts at physical `base`);
    asserts §5.2.6: the length field, and a sum of 0 over that length."""
    offset = address - base
    signature, length = struct.unpack_from("<4sI", memory, offset)
    data = bytes(memory[offset:offset + length])
    assert len(data) == length >= 36, (signature, length)
    if signature != b"FACS":
        assert sum(data) & 0xFF == 0, f"{signature!r} checksum"
    return Table(signature, address, data)


def check_rsdp(rsdp: bytes) -> tuple[int, int]:
    """§5.2.5.3: signature, revision 2, length 36, both checksums; (RSDT, XSDT)."""
    assert rsdp[:8] == b"RSD PTR "
    assert sum(rsdp[:20]) & 0xFF == 0
    assert rsdp[15] == 2
    length, = struct.unpack_from("<I", rsdp, 20)
    assert length == 36 and sum(rsdp[:36]) & 0xFF == 0
    return struct.unpack_from("<I", rsdp, 16)[0], struct.unpack_from("<Q", rsdp, 24)[0]


def sdt_entries(table: Table, size: int) -> list[int]:
    fmt = "<I" if size == 4 else "<Q"
    return [struct.unpack_from(fmt, table.body, i)[0] for i in range(0, len(table.body), size)]


def all_tables(memory: bytes, base: int, rsdp: bytes) -> dict[bytes, Table]:
    """Every table reachable from the RSDP through the XSDT (and the FADT's
    DSDT and FACS); asserts the RSDT lists the same tables."""
    rsdt_at, xsdt_at = check_rsdp(rsdp)
    rsdt, xsdt = read_table(memory, base, rsdt_at), read_table(memory, base, xsdt_at)
    assert rsdt.signature == b"RSDT" and xsdt.signature == b"XSDT"
    assert sdt_entries(rsdt, 4) == sdt_entries(xsdt, 8)
    tables = {b"RSDT": rsdt, b"XSDT": xsdt}
    for address in sdt_entries(xsdt, 8):
        table = read_table(memory, base, address)
        tables[table.signature] = table
    fadt = tables[b"FACP"]
    facs, dsdt = struct.unpack_from("<II", fadt.data, 36)
    x_facs, x_dsdt = struct.unpack_from("<QQ", fadt.data, 132)
    assert (facs, dsdt) == (x_facs, x_dsdt)
    assert facs % 64 == 0  # §5.2.10: the FACS is 64-byte aligned
    tables[b"FACS"] = read_table(memory, base, facs)
    tables[b"DSDT"] = read_table(memory, base, dsdt)
    return tables


def madt_entries(madt: Table) -> list[tuple[int, bytes]]:
    """(type, bytes) of each interrupt controller structure (§5.2.12)."""
    entries, offset = [], 8
    while offset < len(madt.body):
        kind, length = madt.body[offset], madt.body[offset + 1]
        assert length >= 2
        entries.append((kind, madt.body[offset:offset + length]))
        offset += length
    assert offset == len(madt.body)
    return entries
