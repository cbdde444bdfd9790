"""A minimal driver for the modern virtio-pci transport, as Linux's virtio_pci_modern
finds it: the vendor capabilities walked from configuration space (Virtio 1.2
§4.1.4), BAR 4 programmed, the common configuration used as §3.1.1 and
§4.1.5.1 say; the virtqueues are laid out by the shared test Driver."""

from __future__ import annotations

from pyvmm.devices.pci.config import BAR0, CAP_MSIX, COMMAND, COMMAND_MEMORY
from pyvmm.devices.virtio import pci as vpci
from pyvmm.devices.virtio.spec import (
    F_VERSION_1,
    STATUS_ACKNOWLEDGE,
    STATUS_DRIVER,
    STATUS_DRIVER_OK,
    STATUS_FEATURES_OK,
)
from pyvmm.machine.memory import GuestMemory
from tests.unit.devices.virtio.driver import Driver

BAR_ADDRESS = 0xE0000000
# common configuration offsets (§4.1.4.3)
DEVICE_FEATURE_SELECT, DEVICE_FEATURE = 0x00, 0x04
DRIVER_FEATURE_SELECT, DRIVER_FEATURE = 0x08, 0x0C
CONFIG_MSIX_VECTOR, NUM_QUEUES, DEVICE_STATUS, CONFIG_GENERATION = 0x10, 0x12, 0x14, 0x15
QUEUE_SELECT, QUEUE_SIZE, QUEUE_MSIX_VECTOR, QUEUE_ENABLE, QUEUE_NOTIFY_OFF = \
    0x16, 0x18, 0x1A, 0x1C, 0x1E
QUEUE_DESC, QUEUE_DRIVER, QUEUE_DEVICE = 0x20, 0x28, 0x30


def vendor_caps(function) -> dict[int, dict]:
    """cfg_type -> {bar, offset, length[, multiplier]} from the capability list."""
    found = {}
    for cap_id, at in function.capabilities():
        if cap_id != vpci.CAP_VENDOR_SPECIFIC:
            continue
        read = function.config_read
        cap = {"bar": read(at + 4, 1), "offset": read(at + 8, 4), "length": read(at + 12, 4),
               "cap_len": read(at + 2, 1), "at": at}
        if read(at + 3, 1) == vpci.NOTIFY_CFG:
            cap["multiplier"] = read(at + 16, 4)
        found.setdefault(read(at + 3, 1), cap)
    return found


def msix_cap(function) -> int:
    return next(at for cap_id, at in function.capabilities() if cap_id == CAP_MSIX)


class PciDriver(Driver):
    def __init__(self, function: vpci.VirtioPci, memory: GuestMemory) -> None:
        super().__init__(function, memory)
        self.f = function
        self.caps = vendor_caps(function)
        function.config_write(BAR0 + 4 * vpci.BAR_INDEX, 4, BAR_ADDRESS)
        function.config_write(COMMAND, 2, COMMAND_MEMORY)

    def _at(self, cfg_type: int, offset: int) -> int:
        return self.caps[cfg_type]["offset"] + offset

    def cr(self, offset: int, size: int) -> int:
        return self.f.mmio_read(self._at(vpci.COMMON_CFG, offset), size)

    def cw(self, offset: int, size: int, value: int) -> None:
        self.f.mmio_write(self._at(vpci.COMMON_CFG, offset), size, value)

    def isr(self) -> int:
        return self.f.mmio_read(self._at(vpci.ISR_CFG, 0), 1)

    def init(self, features: int = F_VERSION_1, queues: int = 1, size: int = 16) -> bool:
        self.cw(DEVICE_STATUS, 1, 0)
        self.cw(DEVICE_STATUS, 1, STATUS_ACKNOWLEDGE)
        self.cw(DEVICE_STATUS, 1, STATUS_ACKNOWLEDGE | STATUS_DRIVER)
        for half in (0, 1):
            self.cw(DRIVER_FEATURE_SELECT, 4, half)
            self.cw(DRIVER_FEATURE, 4, (features >> (32 * half)) & 0xFFFFFFFF)
        self.cw(DEVICE_STATUS, 1, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK)
        if not self.cr(DEVICE_STATUS, 1) & STATUS_FEATURES_OK:
            return False
        for index in range(queues):
            self.setup_queue(index, size)
        self.cw(DEVICE_STATUS, 1, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK
                | STATUS_DRIVER_OK)
        return True

    def setup_queue(self, index: int, size: int) -> None:
        self.cw(QUEUE_SELECT, 2, index)
        desc = self.alloc(16 * size, 16)
        avail = self.alloc(6 + 2 * size, 2)
        used = self.alloc(6 + 8 * size, 4)
        self.cw(QUEUE_SIZE, 2, size)
        for offset, value in ((QUEUE_DESC, desc), (QUEUE_DRIVER, avail), (QUEUE_DEVICE, used)):
            self.cw(offset, 4, value & 0xFFFFFFFF)
            self.cw(offset + 4, 4, value >> 32)
        self.notify_off = getattr(self, "notify_off", {})
        self.notify_off[index] = self.cr(QUEUE_NOTIFY_OFF, 2)
        self.cw(QUEUE_ENABLE, 2, 1)
        self.queues[index] = {"desc": desc, "avail": avail, "used": used, "size": size,
                              "avail_idx": 0, "next_desc": 0, "used_seen": 0}

    def notify(self, index: int) -> None:
        cap = self.caps[vpci.NOTIFY_CFG]
        self.f.mmio_write(cap["offset"] + self.notify_off[index] * cap["multiplier"], 2, index)
