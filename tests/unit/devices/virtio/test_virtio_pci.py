"""The modern virtio-pci transport (Virtio 1.2 §4.1) with MSI-X (PCI 3.0 §6.8.2),
driven as Linux's virtio_pci_modern driver drives it."""

from __future__ import annotations

import pytest

from pyvmm.devices.lapic import ApicBus, LocalApic
from pyvmm.devices.pci.config import (
    BAR0,
    COMMAND,
    COMMAND_INTX_DISABLE,
    COMMAND_MEMORY,
    INTERRUPT_PIN,
    MSIX_CONTROL_ENABLE,
    MSIX_CONTROL_FUNCTION_MASK,
    STATUS,
)
from pyvmm.devices.virtio import pci as vpci
from pyvmm.devices.virtio.blk import S_OK, T_IN, RawImage, VirtioBlock
from pyvmm.devices.virtio.rng import VirtioRng
from pyvmm.devices.virtio.spec import (
    F_VERSION_1,
    STATUS_DEVICE_NEEDS_RESET,
    STATUS_FEATURES_OK,
)
from pyvmm.machine.clock import ClockSource, VirtualClock
from pyvmm.machine.interrupts import IrqLine
from tests.unit.devices.virtio import pci_driver as pd
from tests.unit.devices.virtio.driver import Sink, make_memory
from tests.unit.devices.virtio.test_virtio_blk import header

SECTORS = 16


class Msi:
    def __init__(self) -> None:
        self.messages: list[tuple[int, int]] = []

    def __call__(self, address: int, data: int) -> None:
        self.messages.append((address, data))


@pytest.fixture
def blk(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(range(256)) * (SECTORS * 2))
    memory = make_memory()
    sink, msi = Sink(), Msi()
    function = vpci.VirtioPci(VirtioBlock(memory, RawImage(path, False)), IrqLine(sink, 17), msi)
    driver = pd.PciDriver(function, memory)
    return driver, function, sink, msi, memory


def read_sector(driver, sector=1):
    driver.submit(0, [(header(T_IN, sector), False), (512, True), (1, True)])


def test_identity_and_capabilities_as_the_spec_fixes_them(blk):
    driver, function, *_ = blk
    read = function.config_read
    assert (read(0, 2), read(2, 2), read(8, 1)) == (0x1AF4, 0x1040 + 2, 1)  # §4.1.2.1
    assert (read(0x2C, 2), read(0x2E, 2)) == (0x1AF4, 0x1100)
    assert read(0x09, 3) == 0x010000 and read(INTERRUPT_PIN, 1) == 1
    caps = driver.caps
    assert set(caps) == {vpci.COMMON_CFG, vpci.NOTIFY_CFG, vpci.ISR_CFG, vpci.DEVICE_CFG,
                         vpci.PCI_CFG}
    for cfg_type in (vpci.COMMON_CFG, vpci.NOTIFY_CFG, vpci.ISR_CFG, vpci.DEVICE_CFG):
        cap = caps[cfg_type]
        assert cap["bar"] == vpci.BAR_INDEX
        assert cap["offset"] + cap["length"] <= vpci.BAR_SIZE
    assert caps[vpci.COMMON_CFG]["length"] >= 0x38
    assert caps[vpci.NOTIFY_CFG]["cap_len"] == 20 and caps[vpci.NOTIFY_CFG]["multiplier"] == 4
    assert caps[vpci.PCI_CFG]["cap_len"] == 20
    at = pd.msix_cap(function)
    assert read(at + 2, 2) & 0x7FF == 1  # table size N-1: one queue + the config vector
    assert read(at + 4, 4) & 7 == vpci.BAR_INDEX and read(at + 8, 4) & 7 == vpci.BAR_INDEX
    assert driver.cr(pd.NUM_QUEUES, 2) == 1


def test_bar_sizing_and_moving(blk):
    _, function, *_ = blk
    moves = []
    function.on_bar_change = lambda f, index, old, new: moves.append((index, old, new))
    bar = BAR0 + 4 * vpci.BAR_INDEX
    function.config_write(bar, 4, 0xFFFFFFFF)
    assert function.config_read(bar, 4) == (~(vpci.BAR_SIZE - 1)) & 0xFFFFFFFF  # §6.2.5.1
    function.config_write(bar, 4, 0xD0000000)
    function.config_write(COMMAND, 2, 0)
    function.config_write(COMMAND, 2, COMMAND_MEMORY)
    # the sizing pattern is not decoded (the range leaves the bus), then the new
    # base is; clearing Memory Space Enable undecodes it until it is set again
    assert moves == [(4, pd.BAR_ADDRESS, None), (4, None, 0xD0000000),
                     (4, 0xD0000000, None), (4, None, 0xD0000000)]


def test_a_read_with_intx_and_the_isr_read_that_clears_it(blk):
    driver, function, sink, msi, memory = blk
    assert driver.init()
    read_sector(driver)
    assert driver.used(0) == [(0, 513)]
    assert memory.read(driver.last_addresses[1], 512) == bytes(range(256)) * 2
    assert memory.read_u8(driver.last_addresses[2]) == S_OK
    assert sink.levels[17] and function.config_read(STATUS, 2) & vpci.STATUS_INTERRUPT
    assert driver.isr() == 1  # queue interrupt (§4.1.4.5)
    assert not sink.levels[17] and driver.isr() == 0
    assert not function.config_read(STATUS, 2) & vpci.STATUS_INTERRUPT
    # Interrupt Disable holds INTx low; the status bit still shows it pending.
    function.config_write(COMMAND, 2, COMMAND_MEMORY | COMMAND_INTX_DISABLE)
    read_sector(driver)
    assert not sink.levels[17] and function.config_read(STATUS, 2) & vpci.STATUS_INTERRUPT
    function.config_write(COMMAND, 2, COMMAND_MEMORY)
    assert sink.levels[17]
    assert not msi.messages


def enable_msix(driver, function, vectors: dict[int, tuple[int, int]]) -> int:
    at = pd.msix_cap(function)
    table = function.config_read(at + 4, 4) & ~7
    for vector, (address, data) in vectors.items():
        entry = table + 16 * vector
        function.mmio_write(entry, 4, address)
        function.mmio_write(entry + 4, 4, 0)
        function.mmio_write(entry + 8, 4, data)
        function.mmio_write(entry + 12, 4, 0)  # unmask
    function.config_write(at + 2, 2, MSIX_CONTROL_ENABLE)
    return at


def test_msix_queue_and_config_vectors(blk):
    driver, function, sink, msi, memory = blk
    enable_msix(driver, function, {0: (0xFEE00000, 0x51), 1: (0xFEE01000, 0x52)})
    driver.init()
    driver.cw(pd.CONFIG_MSIX_VECTOR, 2, 0)
    driver.cw(pd.QUEUE_SELECT, 2, 0)
    driver.cw(pd.QUEUE_MSIX_VECTOR, 2, 1)
    assert driver.cr(pd.CONFIG_MSIX_VECTOR, 2) == 0 and driver.cr(pd.QUEUE_MSIX_VECTOR, 2) == 1
    driver.cw(pd.QUEUE_MSIX_VECTOR, 2, 2)  # no such table entry: NO_VECTOR (§4.1.5.1.2)
    assert driver.cr(pd.QUEUE_MSIX_VECTOR, 2) == vpci.NO_VECTOR
    driver.cw(pd.QUEUE_MSIX_VECTOR, 2, 1)
    read_sector(driver)
    assert msi.messages == [(0xFEE01000, 0x52)]
    assert driver.isr() == 0 and not sink.levels.get(17)  # no INTx, no ISR with MSI-X
    function.device.fail("test")  # a configuration change: the config vector
    assert msi.messages[-1] == (0xFEE00000, 0x51)
    driver.cw(pd.QUEUE_MSIX_VECTOR, 2, vpci.NO_VECTOR)


def test_msix_masking_holds_the_message_pending(blk):
    driver, function, sink, msi, memory = blk
    at = enable_msix(driver, function, {1: (0xFEE00000, 0x61)})
    driver.init()
    driver.cw(pd.QUEUE_SELECT, 2, 0)
    driver.cw(pd.QUEUE_MSIX_VECTOR, 2, 1)
    table = function.config_read(at + 4, 4) & ~7
    pba = function.config_read(at + 8, 4) & ~7
    function.mmio_write(table + 16 + 12, 4, 1)  # mask vector 1 (§6.8.2.9)
    read_sector(driver)
    assert msi.messages == [] and function.mmio_read(pba, 8) == 0b10  # §6.8.2.10
    function.mmio_write(table + 16 + 12, 4, 0)
    assert msi.messages == [(0xFEE00000, 0x61)] and function.mmio_read(pba, 8) == 0
    # the function mask does the same for every vector
    function.config_write(at + 2, 2, MSIX_CONTROL_ENABLE | MSIX_CONTROL_FUNCTION_MASK)
    read_sector(driver)
    assert len(msi.messages) == 1 and function.mmio_read(pba, 4) == 0b10
    function.config_write(at + 2, 2, MSIX_CONTROL_ENABLE)
    assert len(msi.messages) == 2 and function.mmio_read(pba, 4) == 0
    # narrow and misaligned table accesses are ignored and counted; the PBA is read only
    function.mmio_write(table + 1, 2, 0xFFFF)
    function.mmio_write(pba, 4, 0xFFFFFFFF)
    assert function.mmio_read(table + 2, 2) == 0 and function.mmio_read(pba, 4) == 0
    stats = function.stats
    assert stats.get("virtio", "pci MSI-X table or PBA access not an aligned DWORD or QWORD") \
        == 2  # the write and the read
    assert stats.get("virtio", "pci MSI-X PBA write (read only)") == 1


def test_msi_messages_reach_the_local_apic():
    bus = ApicBus()
    lapic = LocalApic(VirtualClock(ClockSource.MANUAL), bus, apic_id=3)
    lapic.s.svr |= 0x100
    assert bus.deliver_msi(0xFEE03000, 0x0031)  # physical destination 3, fixed, edge
    assert lapic.s.irr >> 0x31 & 1 and not lapic.s.tmr >> 0x31 & 1
    assert bus.deliver_msi(0xFEE03000, 0xC032)  # level trigger sets TMR
    assert lapic.s.tmr >> 0x32 & 1
    assert not bus.deliver_msi(0xFEE05000, 0x0033)  # nobody has APIC ID 5
    assert not bus.deliver_msi(0xFED00000, 0x0034)  # not the interrupt window
    assert not lapic.s.irr >> 0x33 & 1 and not lapic.s.irr >> 0x34 & 1


def test_the_pci_configuration_access_capability_reaches_the_bar(blk):
    driver, function, *_ = blk
    at = driver.caps[vpci.PCI_CFG]["at"]
    function.config_write(at + 4, 1, vpci.BAR_INDEX)
    function.config_write(at + 8, 4, driver.caps[vpci.COMMON_CFG]["offset"] + pd.NUM_QUEUES)
    function.config_write(at + 12, 4, 2)
    assert function.config_read(at + 16, 2) == 1  # num_queues through configuration space
    function.config_write(at + 8, 4, driver.caps[vpci.COMMON_CFG]["offset"] + pd.DEVICE_STATUS)
    function.config_write(at + 12, 4, 1)
    function.config_write(at + 16, 1, 1)  # ACKNOWLEDGE written through the window
    assert function.device.status == 1


def test_untrusted_driver_queue_size_and_features(blk, tmp_path):
    driver, function, sink, msi, memory = blk
    stats = function.stats
    # features the device did not offer: FEATURES_OK is not kept (§3.1.1)
    assert not driver.init(features=F_VERSION_1 | (1 << 40))
    assert not function.device.status & STATUS_FEATURES_OK
    # a queue size that is not a power of two: DEVICE_NEEDS_RESET on enable (§2.7)
    assert not function.device.status & STATUS_DEVICE_NEEDS_RESET
    driver.cw(pd.DEVICE_STATUS, 1, 0)
    driver.cw(pd.DEVICE_STATUS, 1, 3)
    driver.cw(pd.DRIVER_FEATURE_SELECT, 4, 1)
    driver.cw(pd.DRIVER_FEATURE, 4, 1)
    driver.cw(pd.DEVICE_STATUS, 1, 11)
    driver.cw(pd.QUEUE_SELECT, 2, 0)
    driver.cw(pd.QUEUE_SIZE, 2, 12)
    driver.cw(pd.QUEUE_ENABLE, 2, 1)
    assert function.device.status & STATUS_DEVICE_NEEDS_RESET
    assert driver.cr(pd.QUEUE_ENABLE, 2) == 0
    assert stats.get("virtio", "virtio-blk driver error") == 1
    assert stats.get("virtio", "virtio-blk features refused") == 1
    # a queue that does not exist reads size 0; wrong widths are counted
    driver.cw(pd.QUEUE_SELECT, 2, 7)
    assert driver.cr(pd.QUEUE_SIZE, 2) == 0
    assert driver.cr(pd.QUEUE_SIZE, 4) == 0
    driver.cw(pd.NUM_QUEUES, 2, 9)
    assert driver.cr(pd.NUM_QUEUES, 2) == 1


def test_state_round_trip(blk, tmp_path):
    driver, function, sink, msi, memory = blk
    enable_msix(driver, function, {1: (0xFEE00000, 0x41)})
    driver.init()
    driver.cw(pd.QUEUE_MSIX_VECTOR, 2, 1)
    state = function.get_state()
    other_sink, other_msi = Sink(), Msi()
    path = tmp_path / "disk.img"
    other = vpci.VirtioPci(VirtioBlock(memory, RawImage(path, False)), IrqLine(other_sink, 17),
                           other_msi)
    other.set_state(state)
    assert other.get_state() == state
    driver.f = other
    read_sector(driver)
    assert other_msi.messages == [(0xFEE00000, 0x41)] and driver.used(0) == [(0, 513)]
    broken = dict(state, queue_vectors=[1, 2])
    with pytest.raises(ValueError):
        other.set_state(broken)


def test_rng_is_one_row_away(tmp_path):
    memory = make_memory()
    function = vpci.VirtioPci(VirtioRng(memory), IrqLine(Sink(), 16), Msi())
    assert function.config_read(2, 2) == 0x1044 and function.config_read(9, 3) == 0x00FF00
