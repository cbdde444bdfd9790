"""The fw_cfg table-loader script, executed as firmware does (QEMU's
bios-linker-loader format: 128-byte ALLOCATE / ADD_POINTER / ADD_CHECKSUM
entries), and the files the board serves through fw_cfg."""

from __future__ import annotations

import struct

import pytest

from pyvmm.board.pc import PcBoard
from pyvmm.devices import fw_cfg as fw
from pyvmm.firmware.acpi import build_acpi
from pyvmm.firmware.loader import LOADER_FILE, RSDP_FILE, TABLES_FILE, fw_cfg_files
from pyvmm.machine.clock import ClockSource
from tests.unit.firmware.acpi_parse import all_tables

ZONES = {1: 0x3F00000, 2: 0xF5A30}  # where a firmware might allocate high / F-segment


def execute(script: bytes, files: dict[str, bytes]) -> dict[str, tuple[int, bytearray]]:
    """Run the script the way the format describes; returns file -> (address, bytes)."""
    assert len(script) % 128 == 0
    loaded: dict[str, tuple[int, bytearray]] = {}

    def name(raw: bytes) -> str:
        assert raw.count(b"\x00") >= 1
        return raw.split(b"\x00", 1)[0].decode()

    for at in range(0, len(script), 128):
        entry = script[at:at + 128]
        command, = struct.unpack_from("<I", entry)
        if command == 1:
            file = name(entry[4:60])
            align, zone = struct.unpack_from("<IB", entry, 60)
            address = ZONES[zone]
            assert align and align & (align - 1) == 0
            address += -address % align
            loaded[file] = (address, bytearray(files[file]))
        elif command == 2:
            dest, src = name(entry[4:60]), name(entry[60:116])
            offset, size = struct.unpack_from("<IB", entry, 116)
            data = loaded[dest][1]
            value = int.from_bytes(data[offset:offset + size], "little") + loaded[src][0]
            data[offset:offset + size] = (value & ((1 << 8 * size) - 1)).to_bytes(size, "little")
        elif command == 3:
            file = name(entry[4:60])
            offset, start, length = struct.unpack_from("<III", entry, 60)
            data = loaded[file][1]
            data[offset] = (data[offset] - sum(data[start:start + length])) & 0xFF
        else:
            pytest.fail(f"unexpected loader command {command}")
    return loaded


@pytest.fixture(scope="module")
def board():
    board = PcBoard(ram_size=64 << 20, clock_source=ClockSource.MANUAL)
    yield board
    board.close()


def test_the_script_installs_tables_a_parser_accepts(board):
    files = fw_cfg_files(build_acpi(board.platform_description()))
    loaded = execute(files[LOADER_FILE], files)
    assert set(loaded) == {TABLES_FILE, RSDP_FILE}
    rsdp_at, rsdp = loaded[RSDP_FILE]
    assert rsdp_at % 16 == 0 and 0xE0000 <= rsdp_at < 0x100000
    tables_at, tables = loaded[TABLES_FILE]
    parsed = all_tables(bytes(tables), tables_at, bytes(rsdp))
    assert parsed[b"APIC"].address > tables_at
    # The same bytes as the tables placed there directly.
    assert (bytes(tables), bytes(rsdp)) == build_acpi(board.platform_description()).placed(
        tables_at)


def read_file(board: PcBoard, file: str) -> bytes:
    board.ports.write(fw.PORT_FW_CFG, 2, fw.FILE_DIR)
    count = int.from_bytes(bytes(board.ports.read(fw.PORT_FW_CFG + 1, 1) for _ in range(4)),
                           "big")
    for _ in range(count):
        entry = bytes(board.ports.read(fw.PORT_FW_CFG + 1, 1) for _ in range(64))
        size, select = struct.unpack_from(">IH", entry)
        if entry[8:].split(b"\x00", 1)[0].decode() == file:
            board.ports.write(fw.PORT_FW_CFG, 2, select)
            return bytes(board.ports.read(fw.PORT_FW_CFG + 1, 1) for _ in range(size))
    raise AssertionError(f"{file} not in the fw_cfg directory")


def test_board_serves_the_loader_files_through_fw_cfg(board):
    files = {name: read_file(board, name) for name in (TABLES_FILE, RSDP_FILE, LOADER_FILE)}
    assert files == fw_cfg_files(build_acpi(board.platform_description()))
    assert files[RSDP_FILE].startswith(b"RSD PTR ")
