"""The virtio-mmio transport, version 2 (Virtio 1.2 §4.2.2).

A 0x200-byte register window; registers are 32-bit and must be accessed
with 32-bit aligned accesses (§4.2.2.2), except the device-specific
configuration space from 0x100, which takes any width.  Other accesses are
ignored (reads give 0) and counted.  The interrupt is level-triggered:
high while InterruptStatus is not 0, lowered by InterruptACK.

Linux finds a virtio-mmio device from the kernel command line,
`virtio_mmio.device=<size>@<base>:<irq>` (`kernel_cmdline_fragment`).
"""

from __future__ import annotations

from collections.abc import Callable

from pyvmm.devices.virtio.device import VirtioDevice
from pyvmm.machine.interrupts import IrqLine

WINDOW = 0x200
MAGIC = 0x74726976  # "virt"
VERSION = 2
VENDOR = 0x554D4551  # "QEMU": Linux and SeaBIOS expect nothing in particular

MAGIC_VALUE = 0x000
VERSION_REG = 0x004
DEVICE_ID = 0x008
VENDOR_ID = 0x00C
DEVICE_FEATURES = 0x010
DEVICE_FEATURES_SEL = 0x014
DRIVER_FEATURES = 0x020
DRIVER_FEATURES_SEL = 0x024
QUEUE_SEL = 0x030
QUEUE_NUM_MAX = 0x034
QUEUE_NUM = 0x038
QUEUE_READY = 0x044
QUEUE_NOTIFY = 0x050
INTERRUPT_STATUS = 0x060
INTERRUPT_ACK = 0x064
STATUS = 0x070
QUEUE_DESC_LOW = 0x080
QUEUE_DESC_HIGH = 0x084
QUEUE_DRIVER_LOW = 0x090
QUEUE_DRIVER_HIGH = 0x094
QUEUE_DEVICE_LOW = 0x0A0
QUEUE_DEVICE_HIGH = 0x0A4
SHM_SEL = 0x0AC
SHM_LEN_LOW = 0x0B0
SHM_LEN_HIGH = 0x0B4
SHM_BASE_LOW = 0x0B8
SHM_BASE_HIGH = 0x0BC
CONFIG_GENERATION = 0x0FC
CONFIG = 0x100

# Queue address registers: (queue attribute, high half?).
_QUEUE_ADDRESS = {
    QUEUE_DESC_LOW: ("desc", False), QUEUE_DESC_HIGH: ("desc", True),
    QUEUE_DRIVER_LOW: ("driver", False), QUEUE_DRIVER_HIGH: ("driver", True),
    QUEUE_DEVICE_LOW: ("device", False), QUEUE_DEVICE_HIGH: ("device", True),
}


def kernel_cmdline_fragment(base: int, irq: int) -> str:
    """What Linux's virtio_mmio driver parses: `<size>@<base>:<irq>`."""
    return f"virtio_mmio.device={WINDOW:#x}@{base:#x}:{irq}"


def run_now(action: Callable[[], None]) -> None:
    """A transport's `post_line` while its device is served on the vCPU thread."""
    action()


class VirtioMmio:
    """A virtio device behind the virtio-mmio register window at `base`.

    Register accesses hold the device's lock (an I/O thread may be serving a
    queue).  InterruptStatus changes at once; the line follows through
    `post_line`, which an engine serving the device on an I/O thread points at
    the vCPU thread (the board's lines are that thread's).
    """

    def __init__(self, device: VirtioDevice, irq: IrqLine, base: int = 0) -> None:
        self.device = device
        self.irq = irq
        self.base = base
        self.stats = device.stats
        self.post_line: Callable[[Callable[[], None]], None] = run_now
        device.interrupt = self._raise
        self.reset_transport()

    def reset_transport(self) -> None:
        self.device_features_sel = 0
        self.driver_features_sel = 0
        self.queue_sel = 0
        self.interrupt_status = 0
        self.irq.set(False)

    def _raise(self, bits: int, queue: int | None = None) -> None:
        was = self.interrupt_status
        self.interrupt_status |= bits
        if not was:  # else the line is high already, or about to be by the last post
            self.post_line(self._drive_line)

    def _drive_line(self) -> None:
        """The level-triggered line: high while InterruptStatus is not 0."""
        self.irq.set(bool(self.interrupt_status))

    def notify_points(self) -> list[tuple[int, int, int | None, int]]:
        """(address, width, value the write must carry or None, queue) of each
        queue's notification: QueueNotify, 32-bit, the queue index (§4.2.2)."""
        return [(self.base + QUEUE_NOTIFY, 4, index, index)
                for index in range(len(self.device.queues))]

    def _queue(self):  # noqa: ANN202
        queues = self.device.queues
        return queues[self.queue_sel] if self.queue_sel < len(queues) else None

    # -- registers ---------------------------------------------------------------
    def mmio_read(self, offset: int, size: int) -> int:
        with self.device.lock:
            return self._read(offset, size)

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        with self.device.lock:
            self._write(offset, size, value)

    def _read(self, offset: int, size: int) -> int:
        device = self.device
        if offset >= CONFIG:
            return device.config_read(offset - CONFIG, size)
        if size != 4 or offset % 4:
            self.stats.count("virtio", "mmio bad access")
            return 0
        queue = self._queue()
        if offset == MAGIC_VALUE:
            return MAGIC
        if offset == VERSION_REG:
            return VERSION
        if offset == DEVICE_ID:
            return device.device_id
        if offset == VENDOR_ID:
            return VENDOR
        if offset == DEVICE_FEATURES:
            return (device.offered >> (32 * self.device_features_sel)) & 0xFFFFFFFF \
                if self.device_features_sel < 2 else 0
        if offset == QUEUE_NUM_MAX:
            return queue.max_size if queue is not None else 0
        if offset == QUEUE_READY:
            return int(queue is not None and queue.ready)
        if offset == INTERRUPT_STATUS:
            return self.interrupt_status
        if offset == STATUS:
            return device.status
        if offset == CONFIG_GENERATION:
            return device.config_generation
        if offset in (SHM_LEN_LOW, SHM_LEN_HIGH, SHM_BASE_LOW, SHM_BASE_HIGH):
            return 0xFFFFFFFF  # no shared memory regions (§4.2.2: all ones)
        self.stats.count("virtio", "mmio read of a write-only or reserved register")
        return 0

    def _write(self, offset: int, size: int, value: int) -> None:
        device = self.device
        if offset >= CONFIG:
            device.config_write(offset - CONFIG, size, value)
            return
        if size != 4 or offset % 4:
            self.stats.count("virtio", "mmio bad access")
            return
        value &= 0xFFFFFFFF
        queue = self._queue()
        if offset == DEVICE_FEATURES_SEL:
            self.device_features_sel = value
        elif offset == DRIVER_FEATURES:
            if self.driver_features_sel < 2 and not device.status & 8:  # before FEATURES_OK
                shift = 32 * self.driver_features_sel
                device.driver_features = (device.driver_features & ~(0xFFFFFFFF << shift)) | (
                    value << shift)
        elif offset == DRIVER_FEATURES_SEL:
            self.driver_features_sel = value
        elif offset == QUEUE_SEL:
            self.queue_sel = value
        elif offset == QUEUE_NUM:
            if queue is not None and not queue.ready:
                queue.size = value
        elif offset == QUEUE_READY:
            if queue is not None:
                if value & 1 and not queue.ready:
                    device.enable_queue(self.queue_sel)
                elif not value & 1:
                    queue.ready = False
        elif offset == QUEUE_NOTIFY:
            device.queue_notify(value & 0xFFFF)
        elif offset == INTERRUPT_ACK:
            self.interrupt_status &= ~value
            if not self.interrupt_status:
                self.irq.set(False)
        elif offset == STATUS:
            device.write_status(value)
            if value == 0:
                self.reset_transport()
        elif offset in _QUEUE_ADDRESS:
            if queue is not None and not queue.ready:
                name, high = _QUEUE_ADDRESS[offset]
                old = getattr(queue, name)
                setattr(queue, name, (old & 0xFFFFFFFF) | (value << 32) if high
                        else (old & ~0xFFFFFFFF) | value)
        elif offset == SHM_SEL:
            pass
        else:
            self.stats.count("virtio", "mmio write to a read-only or reserved register")

    # -- state -------------------------------------------------------------------------
    def get_state(self) -> dict:
        return {"device": self.device.get_state(),
                "device_features_sel": self.device_features_sel,
                "driver_features_sel": self.driver_features_sel,
                "queue_sel": self.queue_sel, "interrupt_status": self.interrupt_status}

    def set_state(self, state: dict) -> None:
        for name in ("device_features_sel", "driver_features_sel", "queue_sel",
                     "interrupt_status"):
            value = state[name]
            if not isinstance(value, int) or isinstance(value, bool) or not \
                    0 <= value <= 0xFFFFFFFF:
                raise ValueError(f"virtio-mmio {name} out of range")
        self.device.set_state(state["device"])
        self.device_features_sel = state["device_features_sel"]
        self.driver_features_sel = state["driver_features_sel"]
        self.queue_sel = state["queue_sel"]
        self.interrupt_status = state["interrupt_status"] & 3
        self.irq.set(bool(self.interrupt_status))
