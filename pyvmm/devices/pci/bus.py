"""PCI bus 0 and configuration mechanism #1 (PCI Local Bus Spec. 3.0 §3.2.2.3.2).

Software writes CONFIG_ADDRESS (a dword at 0xCF8: bit 31 enable, bus 23:16,
device 15:11, function 10:8, register 7:2) and then reads or writes
CONFIG_DATA (0xCFC-0xCFF) with a byte, word or dword access; the byte
offset within 0xCFC selects the byte within the dword register.  Only dword
accesses to 0xCF8 reach CONFIG_ADDRESS; narrower ones are ordinary I/O:
a byte at 0xCF9 goes to the PIIX3's reset control register (`reset_control`,
when the board has one), the rest are ignored here.

A read of a device or function that is not there returns all ones, which is
what a master abort looks like to the CPU; writes to one are dropped.  Both
are counted under "pci".
"""

from __future__ import annotations

from pyvmm.devices.pci.config import PciFunction
from pyvmm.machine.bus import PortDevice
from pyvmm.schema import U32, Record
from pyvmm.stats import Stats

PORT_CONFIG_ADDRESS = 0xCF8
CONFIG_PORTS = 8  # 0xCF8-0xCFF
RESET_CONTROL_OFFSET = 1  # 0xCF9
ADDRESS_ENABLE = 1 << 31
ADDRESS_MASK = 0x80FFFFFC  # bits 30:24 reserved, 1:0 hard-wired to 0
CONFIG_MECHANISM_STATE = Record({"address": U32})
MAX_DEVICES = 32
MAX_FUNCTIONS = 8


class PciBus:
    """Bus 0: (device, function) -> PciFunction."""

    def __init__(self, stats: Stats | None = None) -> None:
        self.stats = stats if stats is not None else Stats()
        self.functions: dict[tuple[int, int], PciFunction] = {}

    def add(self, device: int, function: int, model: PciFunction) -> None:
        if not (0 <= device < MAX_DEVICES and 0 <= function < MAX_FUNCTIONS):
            raise ValueError(f"no PCI slot {device:02x}.{function}")
        if (device, function) in self.functions:
            raise ValueError(f"PCI slot {device:02x}.{function} is taken")
        self.functions[(device, function)] = model

    def read(self, bus: int, device: int, function: int, offset: int, size: int) -> int:
        model = self.functions.get((device, function)) if bus == 0 else None
        if model is None:
            self.stats.count("pci", "absent function read")
            return (1 << (8 * size)) - 1
        return model.config_read(offset, size)

    def write(self, bus: int, device: int, function: int, offset: int, size: int,
              value: int) -> None:
        model = self.functions.get((device, function)) if bus == 0 else None
        if model is None:
            self.stats.count("pci", "absent function write")
            return
        model.config_write(offset, size, value)


class ConfigMechanism1:
    """The port device at 0xCF8-0xCFF."""

    def __init__(self, bus: PciBus, reset_control: PortDevice | None = None) -> None:
        self.bus = bus
        self.reset_control = reset_control  # the byte port 0xCF9
        self.address = 0

    def _target(self, offset: int, size: int) -> tuple[int, int, int, int] | None:
        if not self.address & ADDRESS_ENABLE:
            return None
        register = (self.address & 0xFC) + (offset - 4)
        if (offset - 4) + size > 4:  # an access straddling 0xCFF: not a config cycle
            return None
        return ((self.address >> 16) & 0xFF, (self.address >> 11) & 0x1F,
                (self.address >> 8) & 0x7, register)

    def io_read(self, offset: int, size: int) -> int:
        if offset == RESET_CONTROL_OFFSET and size == 1 and self.reset_control is not None:
            return self.reset_control.io_read(0, 1)
        if offset < 4:
            return self.address if offset == 0 and size == 4 else (1 << (8 * size)) - 1
        target = self._target(offset, size)
        if target is None:
            return (1 << (8 * size)) - 1
        return self.bus.read(*target, size)

    def io_write(self, offset: int, size: int, value: int) -> None:
        if offset == RESET_CONTROL_OFFSET and size == 1 and self.reset_control is not None:
            self.reset_control.io_write(0, 1, value)
            return
        if offset < 4:
            if offset == 0 and size == 4:
                self.address = value & ADDRESS_MASK
            return
        target = self._target(offset, size)
        if target is not None:
            self.bus.write(*target, size, value)

    def get_state(self) -> dict:
        return {"address": self.address}

    def set_state(self, state: dict) -> None:
        CONFIG_MECHANISM_STATE.check(state)
        self.address = state["address"] & ADDRESS_MASK
