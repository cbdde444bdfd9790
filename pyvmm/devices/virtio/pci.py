"""The virtio-pci transport, modern interface (Virtio 1.2 §4.1).

A PCI function (PCI 3.0 type-0 header) with:
- vendor 0x1AF4, device 0x1040 + the virtio device ID, revision 1: a
  non-transitional device (§4.1.2.1); subsystem 0x1AF4:0x1100 (QEMU's);
- one 32-bit memory BAR (BAR 4) holding every register block, each named by
  a vendor-specific capability (ID 0x09, struct virtio_pci_cap, §4.1.4):
  common configuration (§4.1.4.3), notifications (§4.1.4.4, with
  notify_off_multiplier 4: queue n is notified by a write at 4 * n), the ISR
  status byte (§4.1.4.5) and the device-specific configuration (§4.1.4.6),
  plus the PCI configuration access capability (§4.1.4.9), a window in
  configuration space onto the BAR;
- MSI-X (PCI 3.0 §6.8.2) with one vector per queue and one for
  configuration changes, its table and PBA in the same BAR;
- INTx on INTA# (interrupt pin 1) while MSI-X is disabled: asserted while
  the ISR status is not 0; a read of the ISR clears it and deasserts the
  line (§4.1.4.5.1), and the command register's Interrupt Disable bit
  holds it low (PCI 3.0 §6.2.2), the status register's Interrupt Status
  bit showing the pending state (§6.2.3).

Common configuration fields are accessed at their natural width, 64-bit
fields as two 32-bit halves or one 64-bit access (§4.1.3.1); any other
access is ignored (reads give 0) and counted, as are writes to read-only
fields.  A vector number the device has no table entry for reads back as
NO_VECTOR (§4.1.5.1.2).  Interrupts (§4.1.5.3, §4.1.5.4): with MSI-X
enabled, the queue's or the configuration vector is signalled (nothing for
NO_VECTOR) and the ISR is not set; with it disabled, the ISR bit is set and
INTx asserted.

Every register access holds the device's lock (an I/O thread may be serving
a queue).  The ISR changes at once; INTA# follows through `post_line` and an
MSI-X message is sent through `post_msi`, which an engine serving the device
on an I/O thread points at the vCPU thread, or leaves direct where its
message delivery is thread-safe (KVM_SIGNAL_MSI).  `on_notify_moved` is
called when BAR 4 moves, so that an engine can move its notification
listeners (KVM_IOEVENTFD) with it.
"""

from __future__ import annotations

from collections.abc import Callable

from pyvmm.devices.pci.config import (
    COMMAND,
    COMMAND_INTX_DISABLE,
    STATUS,
    SUBSYSTEM_ID,
    SUBSYSTEM_VENDOR_ID,
    Bar,
    MsiSink,
    MsixCapability,
    PciFunction,
)
from pyvmm.devices.virtio.device import VirtioDevice
from pyvmm.devices.virtio.mmio import run_now
from pyvmm.devices.virtio.spec import (
    DEVICE_BLOCK,
    DEVICE_CONSOLE,
    DEVICE_ENTROPY,
    DEVICE_NET,
    INTERRUPT_CONFIG_CHANGE,
    INTERRUPT_USED_BUFFER,
    STATUS_FEATURES_OK,
)
from pyvmm.machine.interrupts import IrqLine
from pyvmm.schema import U16, U32, Bits, ListOf, Object, Record, StateError

VENDOR = 0x1AF4
DEVICE_ID_BASE = 0x1040  # §4.1.2.1: 0x1040 + virtio device ID
REVISION = 1  # §4.1.2.1: a non-transitional device has revision 1 or more
SUBSYSTEM_VENDOR = 0x1AF4
SUBSYSTEM = 0x1100
CAP_VENDOR_SPECIFIC = 0x09
INTERRUPT_PIN_INTA = 1
STATUS_INTERRUPT = 1 << 3  # PCI 3.0 §6.2.3: the function's INTx is pending
NO_VECTOR = 0xFFFF

# The PCI class code of each device type (Virtio leaves it open: QEMU's values,
# so that guests list the devices as they would there).
PCI_CLASS: dict[int, int] = {
    DEVICE_NET: 0x020000,  # network controller, Ethernet
    DEVICE_BLOCK: 0x010000,  # mass storage, SCSI
    DEVICE_CONSOLE: 0x078000,  # communication controller, other
    DEVICE_ENTROPY: 0x00FF00,  # unclassified
}

# cfg_type of struct virtio_pci_cap (§4.1.4).
COMMON_CFG, NOTIFY_CFG, ISR_CFG, DEVICE_CFG, PCI_CFG = 1, 2, 3, 4, 5

BAR_INDEX = 4
BAR_SIZE = 0x8000
NOTIFY_OFF_MULTIPLIER = 4
# Where each block lives in the BAR: cfg_type -> (offset, length).
LAYOUT: dict[int, tuple[int, int]] = {
    COMMON_CFG: (0x0000, 0x38),
    ISR_CFG: (0x1000, 0x4),
    DEVICE_CFG: (0x2000, 0x1000),
    NOTIFY_CFG: (0x3000, 0x1000),
}
MSIX_TABLE_OFFSET = 0x4000
MSIX_PBA_OFFSET = 0x5000
MSIX_BLOCK = 0x1000  # the table's and the PBA's share of the BAR

# Common configuration (§4.1.4.3): offset -> (width, field).
COMMON_FIELDS: dict[int, tuple[int, str]] = {
    0x00: (4, "device_feature_select"),
    0x04: (4, "device_feature"),
    0x08: (4, "driver_feature_select"),
    0x0C: (4, "driver_feature"),
    0x10: (2, "config_msix_vector"),
    0x12: (2, "num_queues"),
    0x14: (1, "device_status"),
    0x15: (1, "config_generation"),
    0x16: (2, "queue_select"),
    0x18: (2, "queue_size"),
    0x1A: (2, "queue_msix_vector"),
    0x1C: (2, "queue_enable"),
    0x1E: (2, "queue_notify_off"),
    0x20: (4, "queue_desc_lo"), 0x24: (4, "queue_desc_hi"),
    0x28: (4, "queue_driver_lo"), 0x2C: (4, "queue_driver_hi"),
    0x30: (4, "queue_device_lo"), 0x34: (4, "queue_device_hi"),
}
QWORD_FIELDS = (0x20, 0x28, 0x30)
# The 64-bit queue address fields: field prefix -> SplitQueue attribute.
_QUEUE_ADDRESS = {"queue_desc": "desc", "queue_driver": "driver", "queue_device": "device"}

CAP_LENGTH = 16  # struct virtio_pci_cap
PCI_CFG_DATA = 16  # offset of pci_cfg_data in struct virtio_pci_cfg_cap


def _cap_body(cfg_type: int, offset: int, length: int, extra: bytes = b"") -> bytes:
    """struct virtio_pci_cap after cap_vndr and cap_next (§4.1.4)."""
    return bytes([CAP_LENGTH + len(extra), cfg_type, BAR_INDEX, 0, 0, 0]) + \
        offset.to_bytes(4, "little") + length.to_bytes(4, "little") + extra


class VirtioPci(PciFunction):
    """A virtio device behind the modern virtio-pci interface."""

    def __init__(self, device: VirtioDevice, intx: IrqLine, deliver_msi: MsiSink) -> None:
        super().__init__(VENDOR, DEVICE_ID_BASE + device.device_id,
                         PCI_CLASS.get(device.device_id, 0xFF0000), revision=REVISION,
                         interrupt_pin=INTERRUPT_PIN_INTA)
        self.name = f"{device.name}-pci"
        self.device = device
        self.intx = intx
        self.stats = device.stats
        self._set(SUBSYSTEM_VENDOR_ID, 2, SUBSYSTEM_VENDOR)
        self._set(SUBSYSTEM_ID, 2, SUBSYSTEM)
        self.add_bar(Bar(BAR_INDEX, BAR_SIZE, io=False))
        for cfg_type, (offset, length) in LAYOUT.items():
            extra = NOTIFY_OFF_MULTIPLIER.to_bytes(4, "little") if cfg_type == NOTIFY_CFG \
                else b""
            self.add_capability(CAP_VENDOR_SPECIFIC, _cap_body(cfg_type, offset, length, extra))
        # §4.1.4.9: bar, offset, length and pci_cfg_data are the driver's to write.
        self.pci_cfg = self.add_capability(
            CAP_VENDOR_SPECIFIC, _cap_body(PCI_CFG, 0, 0, bytes(4)),
            bytes([0, 0, 0xFF, 0, 0, 0]) + b"\xff" * 12)
        self.vectors = len(device.queues) + 1
        self.msix = MsixCapability(self, self.vectors, BAR_INDEX, MSIX_TABLE_OFFSET,
                                   MSIX_PBA_OFFSET, deliver_msi, self._count)
        # BAR offset -> (length, read, write) of each block, looked up in order.
        self._blocks: tuple[tuple[int, int, Callable[[int, int], int],
                                  Callable[[int, int, int], None]], ...] = (
            (*LAYOUT[COMMON_CFG], self._common_read, self._common_write),
            (*LAYOUT[ISR_CFG], self._isr_read, self._isr_write),
            (*LAYOUT[DEVICE_CFG], device.config_read, device.config_write),
            (*LAYOUT[NOTIFY_CFG], self._notify_read, self._notify_write),
            (MSIX_TABLE_OFFSET, MSIX_BLOCK, self.msix.table_read, self.msix.table_write),
            (MSIX_PBA_OFFSET, MSIX_BLOCK, self.msix.pba_read, self.msix.pba_write),
        )
        self.post_line: Callable[[Callable[[], None]], None] = run_now
        self.post_msi: Callable[[Callable[[], None]], None] = run_now
        self.on_notify_moved: Callable[[], None] | None = None
        device.interrupt = self._raise
        self.reset_transport()

    def _count(self, what: str) -> None:
        self.stats.count("virtio", f"pci {what}")

    def reset_transport(self) -> None:
        """A device reset (0 written to device_status): the transport's own fields."""
        self.device_feature_select = 0
        self.driver_feature_select = 0
        self.queue_select = 0
        self.config_vector = NO_VECTOR
        self.queue_vectors = [NO_VECTOR] * len(self.device.queues)
        self.isr = 0
        self.update_intx()

    # -- interrupts ---------------------------------------------------------------------
    def _raise(self, bits: int, queue: int | None) -> None:
        if self.msix.enabled:
            vector = self.config_vector if queue is None else self.queue_vectors[queue]
            if vector != NO_VECTOR:
                self.post_msi(lambda: self.msix.signal(vector))
            return
        was = self.isr
        self.isr |= bits & (INTERRUPT_USED_BUFFER | INTERRUPT_CONFIG_CHANGE)
        if not was:  # else INTA# is asserted already, or about to be by the last post
            self.post_line(self.update_intx)

    def notify_points(self) -> list[tuple[int, int, int | None, int]]:
        """(address, width, value the write must carry or None, queue) of each
        queue's notification while BAR 4 is decoded: queue n at notify offset
        n * NOTIFY_OFF_MULTIPLIER, a 16-bit write of its index (§4.1.4.4,
        §4.1.5.2); nothing while the BAR is not decoded."""
        base = self.bar_address(BAR_INDEX)
        if base is None:
            return []
        start = base + LAYOUT[NOTIFY_CFG][0]
        return [(start + NOTIFY_OFF_MULTIPLIER * index, 2, None, index)
                for index in range(len(self.device.queues))]

    def update_bars(self) -> None:
        before = self.decoded_bars().get(BAR_INDEX)
        super().update_bars()
        if self.decoded_bars().get(BAR_INDEX) != before and self.on_notify_moved is not None:
            self.on_notify_moved()

    def update_intx(self) -> None:
        """INTA# follows the ISR unless MSI-X is on or Interrupt Disable is set."""
        pending = bool(self.isr) and not self.msix.enabled
        status = self._get(STATUS, 2)
        self._set(STATUS, 2, status | STATUS_INTERRUPT if pending else
                  status & ~STATUS_INTERRUPT)
        self.intx.set(pending and not self._get(COMMAND, 2) & COMMAND_INTX_DISABLE)

    # -- configuration space --------------------------------------------------------------
    def config_read(self, offset: int, size: int) -> int:
        with self.device.lock:
            data = self.pci_cfg + PCI_CFG_DATA
            if offset < data + 4 and data < offset + size:
                self._pci_cfg_access(write=False)
            return super().config_read(offset, size)

    def config_write(self, offset: int, size: int, value: int) -> None:
        with self.device.lock:
            super().config_write(offset, size, value)

    def config_written(self, offset: int, size: int) -> None:
        end = offset + size
        data = self.pci_cfg + PCI_CFG_DATA
        if offset < data + 4 and data < end:
            self._pci_cfg_access(write=True)
        if offset < self.msix.offset + 4 and self.msix.offset + 2 < end:
            self.msix.control_written()
        self.update_intx()

    def _pci_cfg_access(self, write: bool) -> None:
        """§4.1.4.9.1: an access to pci_cfg_data is one of cap.length bytes at
        cap.offset in BAR cap.bar."""
        bar = self.config[self.pci_cfg + 4]
        offset = self._get(self.pci_cfg + 8, 4)
        length = self._get(self.pci_cfg + 12, 4)
        data = self.pci_cfg + PCI_CFG_DATA
        if bar != BAR_INDEX or length not in (1, 2, 4) or offset % length:
            self._count("PCI configuration access capability misprogrammed")
            return
        if write:
            self.mmio_write(offset, length, self._get(data, length))
        else:
            self._set(data, length, self.mmio_read(offset, length))

    # -- the BAR ----------------------------------------------------------------------------
    def _block(self, offset: int, size: int) -> tuple | None:
        for start, length, read, write in self._blocks:
            if start <= offset and offset + size <= start + length:
                return offset - start, read, write
        self._count("access outside every register block")
        return None

    def mmio_read(self, offset: int, size: int) -> int:
        with self.device.lock:
            found = self._block(offset, size)
            if found is None:
                return 0
            relative, read, _ = found
            return read(relative, size)

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        with self.device.lock:
            found = self._block(offset, size)
            if found is not None:
                relative, _, write = found
                write(relative, size, value & ((1 << (8 * size)) - 1))

    def _isr_read(self, offset: int, size: int) -> int:
        value = self.isr if offset == 0 else 0
        self.isr = 0  # §4.1.4.5.1: a read clears the ISR and deasserts INTx
        self.update_intx()
        return value

    def _isr_write(self, offset: int, size: int, value: int) -> None:
        self._count("write to the ISR status (read only)")

    def _notify_read(self, offset: int, size: int) -> int:
        self._count("read of the notification area")
        return 0

    def _notify_write(self, offset: int, size: int, value: int) -> None:
        if offset % NOTIFY_OFF_MULTIPLIER or size not in (2, 4):
            self._count("notification not a 16/32-bit write at a queue's address")
            return
        self.device.queue_notify(offset // NOTIFY_OFF_MULTIPLIER)

    # -- common configuration --------------------------------------------------------------
    def _field(self, offset: int, size: int) -> str | None:
        field = COMMON_FIELDS.get(offset)
        if field is None or field[0] != size:
            self._count("common configuration access not a field at its width")
            return None
        return field[1]

    def _common_read(self, offset: int, size: int) -> int:
        if size == 8 and offset in QWORD_FIELDS:
            return self._common_read(offset, 4) | self._common_read(offset + 4, 4) << 32
        name = self._field(offset, size)
        if name is None:
            return 0
        prefix, _, half = name.rpartition("_")
        if prefix in _QUEUE_ADDRESS:
            return self._address_half(prefix, half == "hi")
        return getattr(self, f"_get_{name}")()

    def _common_write(self, offset: int, size: int, value: int) -> None:
        if size == 8 and offset in QWORD_FIELDS:
            self._common_write(offset, 4, value & 0xFFFFFFFF)
            self._common_write(offset + 4, 4, value >> 32)
            return
        name = self._field(offset, size)
        if name is None:
            return
        prefix, _, half = name.rpartition("_")
        if prefix in _QUEUE_ADDRESS:
            self._set_address_half(prefix, half == "hi", value)
            return
        setter = getattr(self, f"_set_{name}", None)
        if setter is None:
            self._count(f"write to {name} (read only)")
            return
        setter(value)

    def _queue(self):  # noqa: ANN202 - SplitQueue | None
        queues = self.device.queues
        return queues[self.queue_select] if self.queue_select < len(queues) else None

    def _get_device_feature_select(self) -> int:
        return self.device_feature_select

    def _set_device_feature_select(self, value: int) -> None:
        self.device_feature_select = value

    def _get_device_feature(self) -> int:
        select = self.device_feature_select
        return (self.device.offered >> (32 * select)) & 0xFFFFFFFF if select < 2 else 0

    def _get_driver_feature_select(self) -> int:
        return self.driver_feature_select

    def _set_driver_feature_select(self, value: int) -> None:
        self.driver_feature_select = value

    def _get_driver_feature(self) -> int:
        select = self.driver_feature_select
        return (self.device.driver_features >> (32 * select)) & 0xFFFFFFFF if select < 2 else 0

    def _set_driver_feature(self, value: int) -> None:
        device = self.device
        if self.driver_feature_select >= 2 or device.status & STATUS_FEATURES_OK:
            self._count("driver_feature write ignored (select >= 2 or after FEATURES_OK)")
            return
        shift = 32 * self.driver_feature_select
        device.driver_features = (device.driver_features & ~(0xFFFFFFFF << shift)) | (
            value << shift)

    def _vector(self, value: int) -> int:
        return value if value < self.vectors else NO_VECTOR

    def _get_config_msix_vector(self) -> int:
        return self.config_vector

    def _set_config_msix_vector(self, value: int) -> None:
        self.config_vector = self._vector(value)

    def _get_num_queues(self) -> int:
        return len(self.device.queues)

    def _get_device_status(self) -> int:
        return self.device.status

    def _set_device_status(self, value: int) -> None:
        self.device.write_status(value)
        if value == 0:
            self.reset_transport()

    def _get_config_generation(self) -> int:
        return self.device.config_generation & 0xFF

    def _get_queue_select(self) -> int:
        return self.queue_select

    def _set_queue_select(self, value: int) -> None:
        self.queue_select = value

    def _get_queue_size(self) -> int:
        queue = self._queue()
        return 0 if queue is None else queue.size  # §4.1.4.3.1: 0 for no such queue

    def _set_queue_size(self, value: int) -> None:
        queue = self._queue()
        if queue is None or queue.ready:
            self._count("queue_size write to no queue or an enabled one")
            return
        queue.size = value  # checked (a power of 2, at most the maximum) on enable

    def _get_queue_msix_vector(self) -> int:
        return NO_VECTOR if self._queue() is None else self.queue_vectors[self.queue_select]

    def _set_queue_msix_vector(self, value: int) -> None:
        if self._queue() is not None:
            self.queue_vectors[self.queue_select] = self._vector(value)

    def _get_queue_enable(self) -> int:
        queue = self._queue()
        return int(queue is not None and queue.ready)

    def _set_queue_enable(self, value: int) -> None:
        queue = self._queue()
        if queue is None or value != 1:  # §4.1.4.3.2: the driver never writes 0
            self._count("queue_enable write other than 1 to an existing queue")
            return
        if not queue.ready:
            self.device.enable_queue(self.queue_select)

    def _get_queue_notify_off(self) -> int:
        return self.queue_select if self._queue() is not None else 0

    def _address_half(self, name: str, high: bool) -> int:
        queue = self._queue()
        if queue is None:
            return 0
        address = getattr(queue, _QUEUE_ADDRESS[name])
        return address >> 32 if high else address & 0xFFFFFFFF

    def _set_address_half(self, name: str, high: bool, value: int) -> None:
        queue = self._queue()
        if queue is None or queue.ready:
            self._count(f"{name} write to no queue or an enabled one")
            return
        attribute = _QUEUE_ADDRESS[name]
        old = getattr(queue, attribute)
        setattr(queue, attribute, (old & 0xFFFFFFFF) | (value << 32) if high
                else (old & ~0xFFFFFFFF) | value)

    # -- snapshot -----------------------------------------------------------------------------
    def get_state(self) -> dict:
        return {"pci": super().get_state(), "device": self.device.get_state(),
                "msix": self.msix.get_state(),
                "device_feature_select": self.device_feature_select,
                "driver_feature_select": self.driver_feature_select,
                "queue_select": self.queue_select, "config_vector": self.config_vector,
                "queue_vectors": list(self.queue_vectors), "isr": self.isr}

    def set_state(self, state: dict) -> None:
        Record({"pci": Object(), "device": Object(), "msix": Object(),
                "device_feature_select": U32, "driver_feature_select": U32,
                "queue_select": U16, "config_vector": U16,
                "queue_vectors": ListOf(U16, len(self.queue_vectors), len(self.queue_vectors)),
                "isr": Bits(2)}).check(state)
        try:
            self.device.set_state(state["device"])
        except ValueError as error:
            raise StateError("device", str(error)) from None
        self.msix.set_state(state["msix"])
        super().set_state(state["pci"])
        self.device_feature_select = state["device_feature_select"]
        self.driver_feature_select = state["driver_feature_select"]
        self.queue_select = state["queue_select"]
        self.config_vector = self._vector(state["config_vector"])
        self.queue_vectors = [self._vector(v) for v in state["queue_vectors"]]
        self.isr = state["isr"]
        self.update_intx()
