"""The board's reset: the reset lines, and every device back to its power-on state."""

from __future__ import annotations

import pytest

from pyvmm.board.pc import PcBoard
from pyvmm.devices.pci.piix import ResetControl
from pyvmm.machine.stop import StopKind

CF8, CF9, CFC = 0xCF8, 0xCF9, 0xCFC


@pytest.fixture
def board():
    b = PcBoard(ram_size=4 << 20)
    yield b
    b.close()


def test_reset_control_starts_a_reset_when_rcpu_goes_from_0_to_1():
    """82371SB RC (0CF9h): RCPU 0 -> 1 starts the reset SRST selects; reserved bits read 0."""
    seen = []
    rc = ResetControl(seen.append)
    rc.io_write(0, 1, 0xFA)  # SRST and reserved bits, RCPU clear
    assert rc.io_read(0, 1) == 0x02 and seen == []
    rc.io_write(0, 1, 0x06)
    assert seen == [True] and rc.io_read(0, 1) == 0  # back to its default 00h
    rc.io_write(0, 1, 0x04)
    assert seen == [True, False]  # SRST clear: a soft reset (INIT)


@pytest.mark.parametrize(("port", "size", "value", "source", "hard"), [
    (0x64, 1, 0xFE, "port 0x64", True),
    (0x92, 1, 0x01, "port 0x92", True),
    (CF9, 1, 0x06, "port 0xCF9", True),
    (CF9, 1, 0x04, "port 0xCF9", False),
])
def test_each_reset_line_stops_with_its_source(board, port, size, value, source, hard):
    board.ports.write(port, size, value)
    stop = board.stop_request
    assert stop is not None and stop.kind is StopKind.RESET and source in stop.message
    assert board.reset_hard is hard


def test_cf9_dword_and_config_cycles_are_untouched_by_the_reset_register(board):
    """Only a byte at 0xCF9 is RC; the dword at 0xCF8 stays CONFIG_ADDRESS."""
    board.ports.write(CF8, 4, 0x80000000)
    assert board.ports.read(CF8, 4) == 0x80000000
    assert board.ports.read(CFC, 2) == 0x8086  # the i440FX's vendor ID
    assert board.stop_request is None


def test_reset_returns_every_device_to_its_power_on_state(board):
    power_on = board.get_state()["devices"]
    board.ports.write(0x21, 1, 0x5A)  # i8259 IMR (after ICW1-4 it would be a mask)
    board.ports.write(0x43, 1, 0x34)  # PIT channel 0, mode 2
    board.ports.write(0x40, 1, 0x00)
    board.ports.write(0x40, 1, 0x10)
    board.ports.write(CF8, 4, 0x80000058)
    board.ports.write(CFC + 2, 1, 0x33)  # PAM1: 0xC0000-0xC7FFF shadow RAM
    board.memory.write(0xC0000, b"\x42")
    board.ports.write(0x70, 1, 0x0E)
    board.ports.write(0x71, 1, 0x99)  # CMOS NVRAM: battery-backed
    board.ports.write(0x64, 1, 0xFE)
    changed = board.get_state()["devices"]
    assert changed["pic"] != power_on["pic"] and changed["i440fx"] != power_on["i440fx"]
    board.reset()
    after = board.get_state()["devices"]
    for name in power_on:
        if name != "cmos":
            assert after[name] == power_on[name], name
    assert after["cmos"] == changed["cmos"]
    assert board.stop_request is None
    assert board.memory.region_at(0xC0000) is None  # PAM1 disabled again: a hole
    assert board.lapics[0].get_state() == PcBoard(ram_size=4 << 20).lapics[0].get_state()
    assert board.stats.get("reset", "hard resets") == 1
