"""Direct kernel boot leaves the ACPI and MP tables where an OS without a BIOS
finds them (ACPI 6.4 §5.2.5.1: RSDP on a 16-byte boundary in 0xE0000-0xFFFFF;
MP spec 1.4 §4: floating pointer in the BIOS ROM area), in e820-reserved,
read-only memory, with the PM block the FADT names decoded."""

from __future__ import annotations

import struct

import pytest
from boot_builders import elf32_kernel

from pyvmm.board.pc import PcBoard
from pyvmm.boot import linux, load_multiboot
from pyvmm.boot.bios import load_bios
from pyvmm.machine.clock import ClockSource
from tests.unit.boot.test_linux_boot import synthetic_bzimage
from tests.unit.firmware.acpi_parse import all_tables, madt_entries

MIB = 1 << 20
SCAN_START, SCAN_END = 0xE0000, 0x100000


@pytest.fixture
def booted():
    board = PcBoard(ram_size=8 * MIB, clock_source=ClockSource.MANUAL)
    load_multiboot(board, elf32_kernel())
    yield board
    board.close()


def scan(board: PcBoard, signature: bytes, length: int) -> list[int]:
    """16-byte boundaries in 0xE0000-0xFFFFF holding `signature` and summing to 0
    over `length` bytes, as an OS scans (unmapped memory reads all ones)."""
    found = []
    for address in range(SCAN_START, SCAN_END, 16):
        if not board.memory.is_mapped(address, 16):
            continue
        head = board.memory.read(address, len(signature))
        if head == signature and sum(board.memory.read(address, length)) & 0xFF == 0:
            found.append(address)
    return found


def test_rsdp_found_by_scanning_leads_to_the_madt(booted):
    [rsdp_at] = scan(booted, b"RSD PTR ", 20)
    rsdp = booted.memory.read(rsdp_at, 36)
    segment = booted.memory.read(0xF0000, 0x10000)
    tables = all_tables(segment, 0xF0000, rsdp)
    kinds = [kind for kind, _ in madt_entries(tables[b"APIC"])]
    assert kinds.count(0) == 1 and kinds.count(1) == 1


def test_mp_floating_pointer_and_configuration_table(booted):
    """MP spec 1.4 §4.1/§4.2: "_MP_" -> "PCMP" with processor, bus, I/O APIC,
    I/O interrupt and local interrupt entries in ascending type order."""
    [floating] = scan(booted, b"_MP_", 16)
    pointer, length, revision, feature1 = struct.unpack(
        "<IBBxB", booted.memory.read(floating + 4, 8))
    assert (length, revision, feature1) == (1, 4, 0)
    signature, table_length, spec, _ = struct.unpack("<4sHBB", booted.memory.read(pointer, 8))
    assert (signature, spec) == (b"PCMP", 4)
    table = booted.memory.read(pointer, table_length)
    assert sum(table) & 0xFF == 0
    count, lapic_address = struct.unpack_from("<HI", table, 34)
    assert lapic_address == 0xFEE00000
    entries, offset = [], 44
    for _ in range(count):
        kind = table[offset]
        size = 20 if kind == 0 else 8
        entries.append(table[offset:offset + size])
        offset += size
    assert offset == table_length
    kinds = [e[0] for e in entries]
    assert kinds == sorted(kinds) and set(kinds) == {0, 1, 2, 3, 4}
    cpu = entries[0]
    assert cpu[1] == 0 and cpu[3] == 0b11  # APIC ID 0, enabled bootstrap processor
    buses = {e[1]: e[2:8] for e in entries if e[0] == 1}
    assert set(buses.values()) == {b"PCI   ", b"ISA   "}
    isa = next(bus for bus, name in buses.items() if name == b"ISA   ")
    [ioapic] = [e for e in entries if e[0] == 2]
    assert struct.unpack_from("<I", ioapic, 4)[0] == 0xFEC00000
    routes = {e[5]: (e[7], struct.unpack_from("<H", e, 2)[0]) for e in entries
              if e[0] == 3 and e[4] == isa}
    assert routes[0] == (2, 0)  # IRQ0 -> INTIN2
    assert routes[4] == (4, 0)
    assert routes[9] == (9, 0b1101)  # the SCI: level, active high
    assert 2 not in routes  # the cascade is not an input
    lints = sorted((e[1], e[7]) for e in entries if e[0] == 4)
    assert lints == [(1, 1), (3, 0)]  # NMI on LINTIN1, ExtINT on LINTIN0


def test_tables_are_reserved_read_only_and_the_pm_block_answers(booted):
    assert any(e.base <= 0xF0000 and 0x100000 <= e.base + e.length and e.type == 2
               for e in booted.e820_map())
    before = booted.memory.read(0xF0000, 8)
    booted.memory.write(0xF0000, b"\x00" * 8)  # a guest write to read-only shadow RAM
    assert booted.memory.read(0xF0000, 8) == before == b"RSD PTR "
    first = booted.ports.read(0x608, 4)  # PM_TMR at the FADT's PM base + 8
    booted.clock.advance(10_000)
    assert (booted.ports.read(0x608, 4) - first) & 0xFFFFFF == 35  # 3.579545 MHz x 10 us
    assert booted.pm.config[0x3C] == 9  # interrupt line: the SCI


def test_linux_zero_page_names_the_rsdp():
    board = PcBoard(ram_size=64 * MIB, clock_source=ClockSource.MANUAL)
    linux.load_linux(board, synthetic_bzimage(), "")
    params = board.memory.read(linux.BOOT_PARAMS, 0x78)
    rsdp_at, = struct.unpack_from("<Q", params, 0x070)
    assert board.memory.read(rsdp_at, 8) == b"RSD PTR "
    board.close()


def test_a_bios_installs_its_own_tables():
    board = PcBoard(ram_size=8 * MIB, clock_source=ClockSource.MANUAL)
    load_bios(board, b"\xf4" * (64 * 1024))
    assert scan(board, b"RSD PTR ", 20) == []
    board.close()
