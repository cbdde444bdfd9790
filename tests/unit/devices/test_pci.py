"""PCI configuration space and mechanism #1 (PCI Local Bus Spec. 3.0 §3.2.2.3.2,
ch. 6) and the i440FX PAM registers (82441FX datasheet §3.2.14), from the specs."""

from __future__ import annotations

import pytest

from pyvmm.devices.pci.bus import ConfigMechanism1, PciBus
from pyvmm.devices.pci.config import (
    BAR0,
    CAP_MSI,
    COMMAND,
    COMMAND_IO,
    COMMAND_MEMORY,
    INTERRUPT_LINE,
    Bar,
    MsiCapability,
    PciFunction,
)
from pyvmm.devices.pci.i440fx import I440fxHostBridge, PamMode
from pyvmm.devices.pci.piix import Piix3IsaBridge
from pyvmm.schema import StateError

ENABLE = 1 << 31


def address(device: int, function: int, register: int, bus: int = 0) -> int:
    """CONFIG_ADDRESS (§3.2.2.3.2, Figure 3-2)."""
    return ENABLE | bus << 16 | device << 11 | function << 8 | register


@pytest.fixture
def mech() -> ConfigMechanism1:
    bus = PciBus()
    bus.add(0, 0, I440fxHostBridge())
    bus.add(1, 0, Piix3IsaBridge())
    return ConfigMechanism1(bus)


def cfg_read(mech: ConfigMechanism1, device: int, function: int, register: int,
             size: int) -> int:
    mech.io_write(0, 4, address(device, function, register & ~3))
    return mech.io_read(4 + (register & 3), size)


def cfg_write(mech: ConfigMechanism1, device: int, function: int, register: int, size: int,
              value: int) -> None:
    mech.io_write(0, 4, address(device, function, register & ~3))
    mech.io_write(4 + (register & 3), size, value)


def test_config_address_keeps_only_defined_bits(mech):
    # Bits 30:24 are reserved and 1:0 read 0 (§3.2.2.3.2).
    mech.io_write(0, 4, 0xFFFFFFFF)
    assert mech.io_read(0, 4) == 0x80FFFFFC


def test_narrow_access_to_cf8_is_not_config_address(mech):
    mech.io_write(0, 4, address(0, 0, 0))
    mech.io_write(1, 1, 0x06)  # 0xCF9 is PIIX's reset control, not CONFIG_ADDRESS
    mech.io_write(0, 2, 0x1234)
    assert mech.io_read(0, 4) == address(0, 0, 0)


def test_byte_word_dword_reads_at_any_offset(mech):
    # i440FX: vendor 8086h, device 1237h (82441FX §3.2.1-3.2.2).
    assert cfg_read(mech, 0, 0, 0, 4) == 0x12378086
    assert cfg_read(mech, 0, 0, 2, 2) == 0x1237
    assert cfg_read(mech, 0, 0, 1, 1) == 0x80
    assert cfg_read(mech, 0, 0, 3, 1) == 0x12
    # Class code 060000h (host bridge) at 0x09-0x0B, revision at 0x08.
    assert cfg_read(mech, 0, 0, 8, 4) >> 8 == 0x060000


def test_absent_functions_and_disabled_cycles_read_all_ones(mech):
    for size, ones in ((1, 0xFF), (2, 0xFFFF), (4, 0xFFFFFFFF)):
        assert cfg_read(mech, 5, 0, 0, size) == ones
        assert cfg_read(mech, 0, 1, 0, size) == ones
        assert cfg_read(mech, 0, 0, 0, size) != ones  # present
    mech.io_write(0, 4, 0)  # enable bit clear: no configuration cycle
    assert mech.io_read(4, 4) == 0xFFFFFFFF
    mech.io_write(0, 4, address(0, 0, 0, bus=1))  # no bus 1
    assert mech.io_read(4, 2) == 0xFFFF


def test_read_only_registers_ignore_writes(mech):
    cfg_write(mech, 0, 0, 0, 4, 0)
    assert cfg_read(mech, 0, 0, 0, 4) == 0x12378086
    cfg_write(mech, 0, 0, INTERRUPT_LINE, 1, 0x0B)  # interrupt line is read/write
    assert cfg_read(mech, 0, 0, INTERRUPT_LINE, 1) == 0x0B


def test_piix3_is_multifunction(mech):
    # Header type bit 7: a multi-function device (§6.2.1), so firmware probes 1.1-1.7.
    assert cfg_read(mech, 1, 0, 0x0E, 1) & 0x80
    assert cfg_read(mech, 1, 0, 0, 4) == 0x70008086


class Device(PciFunction):
    name = "test-device"

    def __init__(self) -> None:
        super().__init__(0x1AF4, 0x1000, 0x020000, interrupt_pin=1)
        self.add_bar(Bar(0, 32, io=True))
        self.add_bar(Bar(1, 0x1000, io=False))
        self.add_bar(Bar(2, 0x4000, io=False, is_64=True, prefetchable=True))


def test_bar_sizing_reads_back_the_size_and_type_bits():
    # §6.2.5.1: write all ones, read back ~(size-1) | type bits.
    dev = Device()
    for index in range(4):
        dev.config_write(BAR0 + 4 * index, 4, 0xFFFFFFFF)
    assert dev.config_read(BAR0, 4) == 0xFFFFFFE1  # I/O, 32 bytes, bit 0 = 1
    assert dev.config_read(BAR0 + 4, 4) == 0xFFFFF000  # 32-bit memory, 4 KiB
    assert dev.config_read(BAR0 + 8, 4) == 0xFFFFC00C  # 64-bit prefetchable, 16 KiB
    assert dev.config_read(BAR0 + 12, 4) == 0xFFFFFFFF  # its upper half
    assert dev.config_read(BAR0 + 16, 4) == 0  # unimplemented BAR reads 0
    assert dev.decoded_bars() == {0: None, 1: None, 2: None}


def test_bar_decoding_follows_the_command_register():
    dev = Device()
    moves = []
    dev.on_bar_change = lambda f, i, old, new: moves.append((i, old, new))
    dev.config_write(BAR0, 4, 0xC040)
    dev.config_write(BAR0 + 4, 4, 0xFEBF1000)
    assert moves == []  # neither space enabled yet (§6.2.2)
    dev.config_write(COMMAND, 2, COMMAND_IO)
    assert moves == [(0, None, 0xC040)]
    dev.config_write(COMMAND, 2, COMMAND_IO | COMMAND_MEMORY)
    assert moves[-1] == (1, None, 0xFEBF1000)
    dev.config_write(BAR0, 4, 0xC080)  # reprogrammed: moved
    assert moves[-1] == (0, 0xC040, 0xC080)
    dev.config_write(COMMAND, 2, 0)
    assert set(moves[-2:]) == {(0, 0xC080, None), (1, 0xFEBF1000, None)}


def test_capability_list_and_msi():
    dev = Device()
    msi = MsiCapability(dev)
    assert dev.config_read(0x06, 2) & 0x10  # status: capability list present (§6.2.3)
    assert dev.config_read(0x34, 1) == msi.offset
    assert dev.capabilities() == [(CAP_MSI, msi.offset)]
    assert msi.message() is None  # disabled: the device uses INTx
    dev.config_write(msi.offset + 4, 4, 0xFEE00000)
    dev.config_write(msi.offset + 12, 2, 0x4041)
    dev.config_write(msi.offset + 2, 2, 1)
    assert msi.message() == (0xFEE00000, 0x4041)
    assert dev.config_read(msi.offset + 2, 2) & 0x80  # 64-bit address capable


def test_restore_keeps_hard_wired_bits():
    dev = Device()
    saved = bytearray.fromhex(dev.get_state()["config"])
    saved[0:4] = b"\xff\xff\xff\xff"  # a snapshot cannot change the identity
    saved[INTERRUPT_LINE] = 10
    dev.set_state({"config": saved.hex()})
    assert dev.config_read(0, 4) == 0x10001AF4
    assert dev.config_read(INTERRUPT_LINE, 1) == 10
    with pytest.raises(StateError):
        dev.set_state({"config": "00"})


def test_pam_registers_decode_each_segment():
    changes = []
    bridge = I440fxHostBridge(lambda base, size, mode: changes.append((base, size, mode)))
    # PAM0 (0x59) bits 5:4 cover 0xF0000-0xFFFFF; bits 3:0 are reserved.
    bridge.config_write(0x59, 1, 0x3F)
    assert bridge.config_read(0x59, 1) == 0x30
    assert changes == [(0xF0000, 0x10000, PamMode.READ_WRITE)]
    # PAM1 (0x5A): low nibble 0xC0000-0xC3FFF, high nibble 0xC4000-0xC7FFF.
    changes.clear()
    bridge.config_write(0x5A, 1, 0x12)
    assert changes == [(0xC0000, 0x4000, PamMode.WRITE_ONLY),
                       (0xC4000, 0x4000, PamMode.READ_ONLY)]
    # PAM6 (0x5F) high nibble: the last 16 KiB segment, 0xEC000-0xEFFFF.
    changes.clear()
    bridge.config_write(0x5C, 4, 0x30000000)
    assert changes == [(0xEC000, 0x4000, PamMode.READ_WRITE)]
    assert bridge.pam_mode(0xEFFFF) is PamMode.READ_WRITE
    assert bridge.pam_mode(0xE8000) is PamMode.DISABLED
    # Restore re-applies the modes.
    again = []
    other = I440fxHostBridge(lambda base, size, mode: again.append(base))
    other.set_state(bridge.get_state())
    assert sorted(again) == [0xC0000, 0xC4000, 0xEC000, 0xF0000]
