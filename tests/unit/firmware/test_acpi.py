"""ACPI tables parsed back from their bytes (ACPI 6.4 §5.2), for the PC board's
description; the DSDT disassembled by iasl where acpica-tools is installed."""

from __future__ import annotations

import shutil
import struct
import subprocess

import pytest

from pyvmm.board.pc import PM_IO_BASE, PcBoard
from pyvmm.devices.hpet import CAPABILITIES, DEFAULT_BASE
from pyvmm.firmware import aml
from pyvmm.firmware.acpi import build_acpi
from pyvmm.machine.clock import ClockSource
from pyvmm.machine.stop import StopKind
from tests.unit.firmware.acpi_parse import all_tables, madt_entries

BASE = 0xF1000


@pytest.fixture(scope="module")
def board():
    board = PcBoard(ram_size=8 << 20, clock_source=ClockSource.MANUAL)
    yield board
    board.close()


@pytest.fixture(scope="module")
def tables(board):
    acpi = build_acpi(board.platform_description())
    blob, rsdp = acpi.placed(BASE)
    return all_tables(blob, BASE, rsdp)


def test_every_table_has_a_valid_header_and_is_listed(tables):
    assert set(tables) == {b"RSDT", b"XSDT", b"FACP", b"APIC", b"HPET", b"FACS", b"DSDT"}
    for signature, table in tables.items():
        if signature != b"FACS":
            assert table.data[10:16] == b"PYVMM "  # OEMID


def test_fadt_pm_blocks_sci_and_reset(tables):
    """§5.2.9 Table 5.9: revision 6, the PIIX4 PM blocks at the base the board programs."""
    fadt = tables[b"FACP"].data
    assert len(fadt) == 276 and fadt[8] == 6
    sci, smi_cmd = struct.unpack_from("<HI", fadt, 46)
    assert sci == 9 and smi_cmd == 0
    pm1a_evt, pm1b_evt, pm1a_cnt, pm1b_cnt, pm2, pm_tmr = struct.unpack_from("<6I", fadt, 56)
    assert (pm1a_evt, pm1a_cnt, pm_tmr) == (PM_IO_BASE, PM_IO_BASE + 4, PM_IO_BASE + 8)
    assert pm1b_evt == pm1b_cnt == pm2 == 0
    assert tuple(fadt[88:92]) == (4, 2, 0, 4)  # PM1_EVT_LEN, PM1_CNT_LEN, PM2, PM_TMR_LEN
    assert fadt[108] == 0x32  # CENTURY: the MC146818 century byte
    boot_arch, = struct.unpack_from("<H", fadt, 109)
    assert boot_arch & 0b11 == 0b11  # legacy devices, 8042
    flags, = struct.unpack_from("<I", fadt, 112)
    assert not flags & (1 << 20)  # not HW_REDUCED_ACPI
    assert flags & (1 << 10)  # RESET_REG_SUP
    space, width, _, _, address = struct.unpack_from("<BBBBQ", fadt, 116)
    assert (space, width, address, fadt[128]) == (1, 8, 0x64, 0xFE)
    x_pm1a_evt = struct.unpack_from("<BBBBQ", fadt, 148)
    assert x_pm1a_evt[0] == 1 and x_pm1a_evt[4] == PM_IO_BASE
    x_pm_tmr = struct.unpack_from("<BBBBQ", fadt, 208)
    assert x_pm_tmr[1] == 32 and x_pm_tmr[4] == PM_IO_BASE + 8


def test_fadt_reset_register_resets_the_board(tables):
    board = PcBoard(ram_size=4 << 20, clock_source=ClockSource.MANUAL)
    fadt = tables[b"FACP"].data
    address, = struct.unpack_from("<Q", fadt, 120)
    board.ports.write(address, 1, fadt[128])
    assert board.stop_request is not None and board.stop_request.kind is StopKind.RESET
    board.close()


def test_s5_package_powers_the_piix4_off():
    r"""\_S5's SLP_TYP written with SLP_EN to the FADT's PM1a_CNT stops the board
    with POWER_OFF (ACPI 6.4 §7.4.2.5, §4.8.3.2.1)."""
    board = PcBoard(ram_size=4 << 20, clock_source=ClockSource.MANUAL)
    acpi = build_acpi(board.platform_description())
    blob, rsdp = acpi.placed(BASE)
    tables = all_tables(blob, BASE, rsdp)
    dsdt = tables[b"DSDT"].body
    s5 = dsdt.index(b"_S5_")
    assert dsdt[s5 + 4] == aml.PACKAGE_OP
    slp_typ = dsdt[s5 + 7]  # PackageOp, PkgLength, NumElements, then the first element
    assert slp_typ in (aml.ZERO_OP, aml.ONE_OP)  # an integer 0 or 1 encodes as itself
    pm1a_cnt, = struct.unpack_from("<I", tables[b"FACP"].data, 64)
    pm = board.pm
    pm.config_write(0x40, 4, (pm1a_cnt - 4) | 1)  # PMBA, as firmware programs it
    pm.config_write(0x80, 1, 1)  # PMREGMISC: decode the block
    board.ports.write(pm1a_cnt, 2, slp_typ << 10 | 1 << 13)
    assert board.stop_request is not None and board.stop_request.kind is StopKind.POWER_OFF
    board.close()


def test_madt_lapic_ioapic_and_overrides(tables):
    """§5.2.12: the LAPIC address, PCAT_COMPAT, one LAPIC, the I/O APIC,
    IRQ0 -> GSI 2, and the SCI level-triggered active-high."""
    madt = tables[b"APIC"]
    assert madt.data[8] == 5
    lapic_address, flags = struct.unpack_from("<II", madt.body)
    assert lapic_address == 0xFEE00000 and flags & 1
    entries = madt_entries(madt)
    lapics = [e for kind, e in entries if kind == 0]
    assert lapics == [bytes([0, 8, 0, 0, 1, 0, 0, 0])]  # UID 0, APIC ID 0, enabled
    ioapics = [struct.unpack("<BBBBII", e) for kind, e in entries if kind == 1]
    assert ioapics == [(1, 12, 0, 0, 0xFEC00000, 0)]
    overrides = {e[3]: struct.unpack_from("<IH", e, 4) for kind, e in entries if kind == 2}
    assert overrides[0] == (2, 0)
    assert overrides[9] == (9, 0b1101)  # active high (01), level (11)
    nmis = [e for kind, e in entries if kind == 4]
    assert nmis == [bytes([4, 6, 0xFF, 0, 0, 1])]  # every processor, LINT1


def test_hpet_table_matches_the_device(tables):
    """IA-PC HPET 1.0a §3.2.4: the block ID is the capabilities register's low dword."""
    body = tables[b"HPET"].body
    block_id, = struct.unpack_from("<I", body)
    assert block_id == CAPABILITIES & 0xFFFFFFFF
    space, width, _, _, address = struct.unpack_from("<BBBBQ", body, 4)
    assert (space, address) == (0, DEFAULT_BASE)
    assert len(tables[b"HPET"].data) == 56


def test_facs(tables):
    facs = tables[b"FACS"].data
    assert len(facs) == 64 and facs[32] == 2  # §5.2.10 Table 5.14: version 2


def test_pointers_follow_the_placement(board):
    acpi = build_acpi(board.platform_description())
    for base in (0, 0x7FE0000):
        blob, rsdp = acpi.placed(base)
        tables = all_tables(blob, base, rsdp)
        assert tables[b"DSDT"].address == base + acpi.offsets["DSDT"]


@pytest.mark.skipif(shutil.which("iasl") is None,
                    reason="iasl is not installed (apt package acpica-tools)")
def test_iasl_disassembles_the_dsdt(tables, tmp_path):
    path = tmp_path / "dsdt.aml"
    path.write_bytes(tables[b"DSDT"].data)
    result = subprocess.run(["iasl", "-d", str(path)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    text = (tmp_path / "dsdt.dsl").read_text()
    assert "Scope (\\_SB)" in text
    assert "Device (PCI0)" in text
    assert 'Name (_HID, EisaId ("PNP0A03")' in text
    assert "Name (\\_S5, Package (0x04)" in text
    assert "Error" not in result.stdout + result.stderr
