"""What every virtio device type shares (Virtio 1.2 §2, §3).

A device type says its ID, the features it offers, its configuration space
and how many queues of what size it has, and serves a queue when the driver
notifies it.  Feature negotiation (§3.1.1, §2.2): the driver may only accept
offered features; a FEATURES_OK write with anything else is refused by not
keeping FEATURES_OK set.  VIRTIO_F_VERSION_1 must be accepted (modern
transports only).  A driver error in a queue sets DEVICE_NEEDS_RESET
(§2.1.2) with a configuration-change interrupt, and the device does no more
work until it is reset.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from pyvmm.devices.virtio.queue import QueueError, SplitQueue
from pyvmm.devices.virtio.spec import (
    F_EVENT_IDX,
    F_INDIRECT_DESC,
    F_VERSION_1,
    INTERRUPT_CONFIG_CHANGE,
    INTERRUPT_USED_BUFFER,
    STATUS_DEVICE_NEEDS_RESET,
    STATUS_DRIVER_OK,
    STATUS_FEATURES_OK,
)
from pyvmm.machine.memory import GuestMemory, GuestMemoryError
from pyvmm.stats import Stats

COMMON_FEATURES = F_VERSION_1 | F_INDIRECT_DESC | F_EVENT_IDX


class VirtioDevice:
    """Base class: a device type overrides the class attributes and `serve`."""

    device_id = 0
    name = "virtio"
    queue_sizes: tuple[int, ...] = ()
    device_features = 0  # the type's own feature bits (COMMON_FEATURES are added)
    # Whether an engine may serve this type's queues on an I/O thread
    # (iothread.py): its `serve` touches only guest memory and its own backend.
    iothread_safe = False

    def __init__(self, memory: GuestMemory, stats: Stats | None = None) -> None:
        self.memory = memory
        self.stats = stats if stats is not None else Stats()
        self.queues = [SplitQueue(memory, size) for size in self.queue_sizes]
        self.offered = self.device_features | COMMON_FEATURES
        # Set by the transport: raise the interrupt with these status bits, for
        # this queue (None: a configuration change).
        self.interrupt: Callable[[int, int | None], None] = lambda bits, queue: None
        # Who serves a queue notification: `notify` inline (the default), or an
        # I/O thread's hand-off (iothread.IoThread).  Transports call `queue_notify`.
        self.notifier: Callable[[int], None] = self.notify
        # Held by the transport's register accesses and while a queue is served, so
        # that an I/O thread and the vCPU thread never see each other's half-done work.
        self.lock = threading.RLock()
        self.reset()

    # -- lifecycle ---------------------------------------------------------------
    def reset(self) -> None:
        """Writing 0 to the status (§2.1, §4.2.2): back to the initial state."""
        self.status = 0
        self.driver_features = 0
        self.config_generation = 0
        for queue in self.queues:
            queue.reset()

    def write_status(self, value: int) -> None:
        value &= 0xFF
        if value == 0:
            self.reset()
            return
        if value & STATUS_FEATURES_OK and not self.status & STATUS_FEATURES_OK:
            if self.driver_features & ~self.offered or not self.driver_features & F_VERSION_1:
                self.stats.count("virtio", f"{self.name} features refused")
                value &= ~STATUS_FEATURES_OK  # §3.1.1: the driver re-reads and gives up
            else:
                self._features_accepted()
        if value & STATUS_DRIVER_OK and not value & STATUS_FEATURES_OK:
            value &= ~STATUS_DRIVER_OK
        self.status = (value & ~STATUS_DEVICE_NEEDS_RESET) | (
            self.status & STATUS_DEVICE_NEEDS_RESET)

    def _features_accepted(self) -> None:
        for queue in self.queues:
            queue.event_idx = bool(self.driver_features & F_EVENT_IDX)
            queue.indirect = bool(self.driver_features & F_INDIRECT_DESC)

    @property
    def running(self) -> bool:
        return bool(self.status & STATUS_DRIVER_OK) and not \
            self.status & STATUS_DEVICE_NEEDS_RESET

    def fail(self, why: str) -> None:
        """A driver error: DEVICE_NEEDS_RESET and a config interrupt (§2.1.2)."""
        self.stats.count("virtio", f"{self.name} driver error")
        self.last_error = why
        if not self.status & STATUS_DEVICE_NEEDS_RESET:
            self.status |= STATUS_DEVICE_NEEDS_RESET
            self.config_generation += 1
            self.interrupt(INTERRUPT_CONFIG_CHANGE, None)

    # -- queues ----------------------------------------------------------------------
    def enable_queue(self, index: int) -> None:
        queue = self.queues[index]
        try:
            queue.check_layout()
        except QueueError as error:
            self.fail(f"queue {index}: {error}")
            return
        queue.ready = True

    def queue_notify(self, index: int) -> None:
        """The driver wrote queue `index`'s notification register (§4.1.4.4, §4.2.2)."""
        self.notifier(index)

    def notify(self, index: int) -> None:
        """Serve queue `index` now, on the calling thread (under `lock`)."""
        self.stats.count("virtio", f"{self.name} notifications")
        if not self.running or not 0 <= index < len(self.queues):
            return
        queue = self.queues[index]
        if not queue.ready:
            return
        try:
            self.serve(index, queue)
            queue.publish_avail_event()
            if queue.should_interrupt():
                self.interrupt(INTERRUPT_USED_BUFFER, index)
        except (QueueError, GuestMemoryError) as error:
            queue.broken = True
            self.fail(f"queue {index}: {error}")

    def serve(self, index: int, queue: SplitQueue) -> None:
        """Take every available chain of `queue` and complete it."""
        raise NotImplementedError

    def complete_later(self, queue_index: int) -> None:
        """After a host-side completion (an I/O thread, host input): interrupt if due."""
        if not self.running:
            return
        queue = self.queues[queue_index]
        try:
            if queue.should_interrupt():
                self.interrupt(INTERRUPT_USED_BUFFER, queue_index)
        except QueueError as error:
            queue.broken = True
            self.fail(f"queue {queue_index}: {error}")

    # -- configuration space --------------------------------------------------------------
    def config_bytes(self) -> bytes:
        return b""

    def config_read(self, offset: int, size: int) -> int:
        data = self.config_bytes()
        if offset < 0 or offset + size > len(data):
            self.stats.count("virtio", f"{self.name} config read out of range")
            return 0
        return int.from_bytes(data[offset:offset + size], "little")

    def config_write(self, offset: int, size: int, value: int) -> None:
        self.stats.count("virtio", f"{self.name} config write ignored")

    # -- state -------------------------------------------------------------------------------
    def get_state(self) -> dict:
        return {"status": self.status, "driver_features": self.driver_features,
                "config_generation": self.config_generation,
                "queues": [queue.get_state() for queue in self.queues]}

    def set_state(self, state: dict) -> None:
        for name, bits in (("status", 8), ("driver_features", 64), ("config_generation", 32)):
            value = state[name]
            if not isinstance(value, int) or isinstance(value, bool) or not \
                    0 <= value < 1 << bits:
                raise ValueError(f"virtio {self.name} {name} out of range")
        if len(state["queues"]) != len(self.queues):
            raise ValueError(f"virtio {self.name}: {len(self.queues)} queues expected")
        self.status = state["status"]
        self.driver_features = state["driver_features"]
        self.config_generation = state["config_generation"]
        for queue, queue_state in zip(self.queues, state["queues"], strict=True):
            queue.set_state(queue_state)
