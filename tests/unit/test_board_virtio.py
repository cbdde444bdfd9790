"""The board's virtio rows: virtio-pci functions on bus 0 (their BAR on the MMIO
bus, INTA# through the PIIX3 PIRQ of their slot, MSI-X to the local APIC) and
virtio-mmio windows, from one VirtioSpec list."""

from __future__ import annotations

import pytest

from pyvmm.board.irq_routing import pci_pirq, pirq_gsi
from pyvmm.board.pc import PcBoard
from pyvmm.board.virtio import VIRTIO_MMIO_BASE, VirtioSpec
from pyvmm.devices.pci.config import BAR0, COMMAND, COMMAND_MEMORY
from pyvmm.devices.virtio import pci as vpci
from pyvmm.errors import ConfigError


@pytest.fixture
def board(tmp_path):
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(4096))
    made = PcBoard(virtio=(VirtioSpec("blk", {"file": str(disk)}, "pci"),
                           VirtioSpec("rng", transport="mmio"),
                           VirtioSpec("rng", transport="pci")))
    yield made
    made.close()


def config(board, slot, offset, size, value=None):
    if value is None:
        return board.pci.read(0, slot, 0, offset, size)
    board.pci.write(0, slot, 0, offset, size, value)
    return None


def test_pci_functions_take_slots_in_order_and_mmio_the_windows(board):
    assert config(board, 2, 0, 4) == 0x1042 << 16 | 0x1AF4
    assert config(board, 3, 0, 4) == 0x1044 << 16 | 0x1AF4  # the second PCI device
    assert board.mmio.find(VIRTIO_MMIO_BASE) is not None  # the rng on virtio-mmio, slot 0
    assert board.virtio_cmdline() == "virtio_mmio.device=0x200@0xfeb00000:5"
    assert [name for name, _ in board.snapshot_devices()][-3:] == \
        ["virtio0", "virtio1", "virtio2"]


def test_the_bar_moves_on_the_mmio_bus_and_is_refused_over_ram(board):
    bar = BAR0 + 4 * vpci.BAR_INDEX
    config(board, 2, bar, 4, 0xE0000000)
    config(board, 2, COMMAND, 2, COMMAND_MEMORY)
    found = board.mmio.find(0xE0000000)
    assert found is not None and found.device is board.virtio0
    assert board.mmio.read(0xE0000000 + 0x12, 2) == 1  # num_queues
    config(board, 2, bar, 4, 0x00100000)  # over RAM: not decoded, counted
    assert board.mmio.find(0xE0000000) is None
    assert board.stats.get("pci", "BAR over RAM refused") == 1
    config(board, 3, BAR0 + 4 * vpci.BAR_INDEX, 4, VIRTIO_MMIO_BASE)  # over a device
    config(board, 3, COMMAND, 2, COMMAND_MEMORY)
    assert board.stats.get("pci", "range over another device refused") == 1


def test_intx_reaches_the_pirq_of_the_slot_and_msi_the_local_apic(board):
    function = board.virtio0
    gsi = pirq_gsi(pci_pirq(2, 0))
    function.isr = 1
    function.update_intx()
    assert board.ioapic.s.asserted >> gsi & 1
    function.mmio_read(vpci.LAYOUT[vpci.ISR_CFG][0], 1)
    assert not board.ioapic.s.asserted >> gsi & 1
    board.deliver_msi(0xFEE00000, 0x45)
    assert board.lapics[0].s.irr >> 0x45 & 1
    board.deliver_msi(0x1000, 0x46)  # not the APIC window: dropped, counted
    assert board.stats.get("pci", "MSI not accepted by any local APIC") == 1


def test_old_snapshot_specs_mean_mmio_and_bad_ones_are_refused():
    assert VirtioSpec.from_json({"kind": "blk", "options": {}}).transport == "mmio"
    spec = VirtioSpec("rng", transport="pci")
    assert VirtioSpec.from_json(spec.to_json()) == spec
    with pytest.raises(ConfigError):
        VirtioSpec.from_json({"kind": "rng", "transport": "isa"})


def test_board_state_round_trip(board, tmp_path):
    config(board, 2, BAR0 + 4 * vpci.BAR_INDEX, 4, 0xE0000000)
    config(board, 2, COMMAND, 2, COMMAND_MEMORY)
    state = board.get_state()
    other = PcBoard(virtio=board.virtio_specs)
    try:
        other.set_state(state)
        assert other.mmio.find(0xE0000000).device is other.virtio0
        assert other.get_state()["devices"] == state["devices"]
    finally:
        other.close()
