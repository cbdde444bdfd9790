"""Guest mistakes on the platform's devices (issue 13 "Bad input"): each behaves as
the hardware does, never harms the host process, and is counted in `--stats`.

Covered elsewhere: odd-sized/unaligned APIC, I/O APIC and HPET accesses
(tests/unit/devices/test_lapic.py, test_ioapic.py, test_hpet.py), local APIC
read-only writes (test_lapic.py), a BAR over RAM or another device
(tests/unit/test_board_virtio.py), an absent fw_cfg selector and a DMA access
structure outside RAM (tests/unit/devices/test_fw_cfg.py), the guest-fuzzed
devices (tests/fuzz).  Here: the rest, on a whole board.
"""

from __future__ import annotations

import io
import struct
import tracemalloc

import pytest

from pyvmm.board.pc import IRQ_COM1, PcBoard
from pyvmm.devices.hpet import DEFAULT_BASE as HPET
from pyvmm.devices.ioapic import DEFAULT_BASE as IOAPIC
from pyvmm.devices.lapic import DEFAULT_BASE as LAPIC
from pyvmm.machine.clock import ClockSource
from tests.unit.test_board_interrupts import apic_on, route

MIB = 1 << 20
CF8, CFC = 0xCF8, 0xCFC
FW_CFG_DMA = 0x514
DMA_ERROR, DMA_READ, DMA_SELECT = 0x01, 0x02, 0x08


@pytest.fixture
def board():
    b = PcBoard(ram_size=16 * MIB, serial_output=io.BytesIO(), clock_source=ClockSource.MANUAL)
    yield b
    b.close()


def counter(board: PcBoard, category: str, name: str) -> int:
    return board.stats.get(category, name)


def test_writes_to_read_only_and_reserved_registers(board):
    """HPET capabilities (§2.3.4, read-only), I/O APIC version (82093AA IOAPICVER,
    read-only), a reserved local APIC register (SDM Vol. 3A Table 11-1): the
    write changes nothing, the read of a reserved register gives 0 (and the
    local APIC's ESR its illegal-register bit)."""
    capabilities = board.mmio.read(HPET, 4)
    board.mmio.write(HPET, 4, 0)
    assert board.mmio.read(HPET, 4) == capabilities
    assert counter(board, "hpet", "write to a read-only or reserved register") == 1
    board.mmio.write(IOAPIC, 4, 0x01)  # IOREGSEL: IOAPICVER
    version = board.mmio.read(IOAPIC + 0x10, 4)
    board.mmio.write(IOAPIC + 0x10, 4, 0)
    assert board.mmio.read(IOAPIC + 0x10, 4) == version
    assert counter(board, "ioapic", "read-only or reserved write") == 1
    assert board.mmio.read(LAPIC + 0x3F0, 4) == 0  # reserved
    assert counter(board, "lapic", "reserved register") == 1


def test_config_cycles_to_absent_functions_read_all_ones_and_are_counted(board):
    for device, function in ((0, 5), (7, 0), (31, 7)):
        board.ports.write(CF8, 4, 1 << 31 | device << 11 | function << 8)
        assert board.ports.read(CFC, 4) == 0xFFFFFFFF
        board.ports.write(CFC, 4, 0x12345678)  # dropped
        assert board.ports.read(CFC, 2) == 0xFFFF
    assert counter(board, "pci", "absent function read") == 6
    assert counter(board, "pci", "absent function write") == 3


def dma(board: PcBoard, control: int, length: int, target: int, access: int = 0x1000) -> int:
    board.memory.write(access, struct.pack(">IIQ", control, length, target))
    board.ports.write(FW_CFG_DMA, 4, 0)  # high dword, big-endian
    board.ports.write(FW_CFG_DMA + 4, 4, int.from_bytes(access.to_bytes(4, "big"), "little"))
    return struct.unpack(">I", board.memory.read(access, 4))[0]


@pytest.mark.parametrize("target", [16 * MIB, 0xFEC00000, 0xFFFFFFFF_00000000, 15 * MIB])
def test_fw_cfg_dma_outside_ram_sets_the_error_bit(board, target):
    """QEMU's fw_cfg.rst: a failed transfer sets the error bit; the largest length
    the 32-bit field holds, aimed at or past the end of RAM, a device or above
    4 GiB, writes nothing and allocates nothing of that size."""
    before = board.memory.read(15 * MIB, 64)
    tracemalloc.start()
    try:
        assert dma(board, 0x19 << 16 | DMA_SELECT | DMA_READ, 0xFFFFFFFF, target) == DMA_ERROR
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * MIB
    assert board.memory.read(15 * MIB, 64) == before
    assert counter(board, "fw_cfg", "dma outside RAM") == 1


def test_a_large_dma_read_into_ram_zero_fills_in_bounded_pieces(board):
    board.memory.write(0x200000, b"\xAA" * (3 * MIB))
    tracemalloc.start()
    try:
        assert dma(board, 0x0000 << 16 | DMA_SELECT | DMA_READ, 3 * MIB, 0x200000) == 0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert board.memory.read(0x200000, 4) == b"QEMU"  # the signature item, then zeros
    assert board.memory.read(0x200004, 3 * MIB - 4) == bytes(3 * MIB - 4)
    assert peak < 2 * MIB + 512 * 1024


def test_an_edge_interrupt_storm_is_coalesced_in_the_irr(board):
    """Edges faster than the CPU accepts them: the local APIC's IRR holds one
    request per vector (SDM Vol. 3A §11.8.4), the rest are counted as coalesced."""
    route(board, IRQ_COM1, 0x44)
    apic_on(board)
    line = board.irq_line(IRQ_COM1)
    for _ in range(10_000):
        line.pulse()
    lapic = board.interrupt_controller
    assert lapic.s.irr == 1 << 0x44
    assert counter(board, "ioapic", "delivered") == 10_000
    assert counter(board, "lapic", "coalesced") == 9_999
    assert lapic.acknowledge() == 0x44 and not lapic.interrupt_pending()


def test_a_level_storm_is_redelivered_after_each_eoi_and_stops_when_masked(board):
    """A level pin the guest never quiets: after each EOI the asserted pin is
    delivered again (82093AA remote IRR); masking the entry ends the storm."""
    route(board, IRQ_COM1, 0x45, level=True)
    apic_on(board)
    board.irq_line(IRQ_COM1).raise_()
    lapic = board.interrupt_controller
    for _ in range(1_000):
        assert lapic.acknowledge() == 0x45
        board.mmio.write(LAPIC + 0xB0, 4, 0)  # EOI
    assert lapic.interrupt_pending()
    assert counter(board, "ioapic", "delivered") == 1_001
    route(board, IRQ_COM1, 0x45, level=True, masked=True)
    assert lapic.acknowledge() == 0x45
    board.mmio.write(LAPIC + 0xB0, 4, 0)
    assert not lapic.interrupt_pending()
