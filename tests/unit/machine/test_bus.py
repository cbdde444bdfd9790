"""PortBus and MmioBus (pyvmm/machine/bus.py), and the PcBoard's policy for
physical addresses that nothing claims.

Hardware facts relied on: an ISA I/O read that no device decodes floats high,
so it reads as all ones (0xFF per byte), and a write to it goes nowhere
(IBM PC/AT Technical Reference, "I/O address map"; QEMU does the same).
"""

from __future__ import annotations

import pytest

from pyvmm.board.pc import HIGH_RAM_START, LOW_RAM_END, MIB, PcBoard
from pyvmm.errors import ConfigError
from pyvmm.machine.bus import UNCLAIMED, MmioBus, PortBus
from pyvmm.machine.stop import StopKind
from pyvmm.stats import Stats


class Recorder:
    """A device that logs every access and answers reads with a fixed value."""

    def __init__(self, value: int = 0) -> None:
        self.value = value
        self.log: list[tuple] = []

    def io_read(self, offset: int, size: int) -> int:
        self.log.append(("r", offset, size))
        return self.value

    def io_write(self, offset: int, size: int, value: int) -> None:
        self.log.append(("w", offset, size, value))

    mmio_read = io_read
    mmio_write = io_write


# -- PortBus ------------------------------------------------------------------

@pytest.mark.parametrize("size, expected", [(1, 0xFF), (2, 0xFFFF), (4, 0xFFFFFFFF)])
def test_unclaimed_port_reads_float_high_and_are_counted(size, expected):
    stats = Stats()
    bus = PortBus(stats)
    bus.register(0x3F8, 8, Recorder(), "com1")
    assert bus.read(0x80, size) == expected
    assert bus.read(0x3F7, size) == expected   # just below a device
    assert bus.read(0x400, size) == expected   # just above it
    assert stats.get("ports", UNCLAIMED) == 3
    assert stats.get("ports", "com1") == 0


def test_unclaimed_port_writes_are_dropped_and_counted():
    stats = Stats()
    bus = PortBus(stats)
    device = Recorder()
    bus.register(0x60, 1, device, "kbd")
    bus.write(0x61, 1, 0x12)
    bus.write(0x5F, 2, 0x1234)
    assert device.log == []
    assert stats.get("ports", UNCLAIMED) == 2


def test_device_gets_the_offset_from_its_base_and_is_counted_by_name():
    stats = Stats()
    bus = PortBus(stats)
    uart = Recorder(0x60)
    bus.register(0x3F8, 8, uart, "com1")
    assert bus.read(0x3F8, 1) == 0x60
    assert bus.read(0x3FD, 1) == 0x60
    bus.write(0x3FF, 1, 0x41)
    assert uart.log == [("r", 0, 1), ("r", 5, 1), ("w", 7, 1, 0x41)]
    assert stats.get("ports", "com1") == 3
    assert stats.get("ports", UNCLAIMED) == 0


def test_values_are_truncated_to_the_access_size():
    bus = PortBus()
    device = Recorder(0x12345678)
    bus.register(0x70, 2, device, "cmos")
    assert bus.read(0x70, 1) == 0x78
    assert bus.read(0x70, 2) == 0x5678
    bus.write(0x71, 1, 0x1FF)
    assert device.log[-1] == ("w", 1, 1, 0xFF)


@pytest.mark.parametrize("base, length", [
    (0x20, 2),     # the same range
    (0x1F, 2),     # its last port is the first claimed one
    (0x21, 1),     # inside
    (0x00, 0x100), # contains it
])
def test_overlapping_port_registration_is_refused(base, length):
    bus = PortBus()
    bus.register(0x20, 2, Recorder(), "pic-master")
    with pytest.raises(ValueError, match="overlaps pic-master"):
        bus.register(base, length, Recorder(), "other")
    assert [r.name for r in bus.ranges] == ["pic-master"]


def test_adjacent_port_ranges_are_allowed_and_routed_apart():
    bus = PortBus()
    low, high = Recorder(1), Recorder(2)
    bus.register(0x40, 4, low, "pit")
    bus.register(0x44, 4, high, "next")
    bus.register(0x3C, 4, Recorder(3), "before")
    assert [bus.read(port, 1) for port in (0x3F, 0x40, 0x43, 0x44, 0x47)] == [3, 1, 1, 2, 2]
    assert bus.read(0x48, 1) == 0xFF


def test_zero_length_registration_is_refused():
    with pytest.raises(ValueError):
        PortBus().register(0x80, 0, Recorder(), "none")


# -- MmioBus ------------------------------------------------------------------

def test_mmio_device_gets_its_offset():
    stats = Stats()
    bus = MmioBus(stats)
    device = Recorder(0xCAFE)
    bus.register(0xFEC00000, 0x1000, device, "ioapic")
    assert bus.read(0xFEC00010, 4) == 0xCAFE
    bus.write(0xFEC00FFC, 4, 0xFFFFFFFFFF)
    assert device.log == [("r", 0x10, 4), ("w", 0xFFC, 4, 0xFFFFFFFF)]
    assert stats.get("mmio", "ioapic") == 2


def test_mmio_unclaimed_access_reads_all_ones_and_calls_on_unclaimed():
    stats = Stats()
    bus = MmioBus(stats)
    bus.register(0xFEE00000, 0x1000, Recorder(), "lapic")
    calls: list[tuple[int, int, bool]] = []
    bus.on_unclaimed = lambda address, size, is_write: calls.append((address, size, is_write))
    assert bus.read(0xFEDFFFFC, 4) == 0xFFFFFFFF
    assert bus.read(0xFEE01000, 2) == 0xFFFF
    bus.write(0x12345678, 8, 0)
    assert calls == [(0xFEDFFFFC, 4, False), (0xFEE01000, 2, False), (0x12345678, 8, True)]
    assert stats.get("mmio", UNCLAIMED) == 3


def test_mmio_unclaimed_without_a_callback_is_open_bus():
    bus = MmioBus()
    assert bus.read(0x1000, 1) == 0xFF
    bus.write(0x1000, 1, 0)  # no device, no callback: nothing happens
    assert bus.stats.get("mmio", UNCLAIMED) == 2


def test_overlapping_mmio_registration_is_refused():
    bus = MmioBus()
    bus.register(0xFEC00000, 0x1000, Recorder(), "ioapic")
    with pytest.raises(ValueError, match="overlaps ioapic"):
        bus.register(0xFEC00800, 0x1000, Recorder(), "other")


# -- PcBoard: accesses to unmapped physical memory ------------------------------

@pytest.fixture
def board():
    pc = PcBoard(ram_size=4 * MIB)
    yield pc
    pc.close()


@pytest.mark.parametrize("address, is_write", [
    (4 * MIB, False),           # the first byte past RAM
    (0x80000000, True),
    (0xFEE01000, False),        # just past the local APIC's page
])
def test_board_stops_on_unmapped_access_above_1mib(board, address, is_write):
    if is_write:
        board.mmio.write(address, 4, 0x12345678)
    else:
        assert board.mmio.read(address, 4) == 0xFFFFFFFF
    stop = board.stop_request
    assert stop is not None and stop.kind is StopKind.UNMAPPED_ACCESS
    assert f"{address:#x}" in stop.message
    assert ("write to" if is_write else "read of") in stop.message
    assert "4 MiB" in stop.message


def test_board_first_unmapped_access_is_the_reported_one(board):
    board.mmio.read(0x800000, 1)
    board.mmio.read(0x900000, 1)
    assert "0x800000" in board.stop_request.message


@pytest.mark.parametrize("address", [LOW_RAM_END, 0xB8000, 0xC0000, HIGH_RAM_START - 4])
def test_board_legacy_hole_is_open_bus(board, address):
    """Firmware and kernels probe the VGA window and option-ROM space: all
    ones, and the VM keeps running."""
    assert board.mmio.read(address, 4) == 0xFFFFFFFF
    board.mmio.write(address, 1, 0)
    assert board.stop_request is None
    assert board.stats.get("mmio", UNCLAIMED) == 2


def test_board_ignore_policy_never_stops():
    pc = PcBoard(ram_size=4 * MIB, unmapped="ignore")
    try:
        assert pc.mmio.read(0x80000000, 2) == 0xFFFF
        pc.mmio.write(4 * MIB, 8, 1)
        assert pc.stop_request is None
        assert pc.stats.get("mmio", UNCLAIMED) == 2
    finally:
        pc.close()


def test_board_refuses_an_unknown_policy():
    with pytest.raises(ConfigError, match="unmapped-access policy"):
        PcBoard(ram_size=4 * MIB, unmapped="panic")


def test_board_unclaimed_ports_read_ff_and_are_counted(board):
    """Port 0x80 (POST codes) has no device on this board."""
    assert board.ports.read(0x80, 1) == 0xFF
    board.ports.write(0x80, 1, 0x55)
    assert board.stats.get("ports", UNCLAIMED) == 2
    assert board.stop_request is None
