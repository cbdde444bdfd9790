"""The virtual switch: datagrams between the VMs of one hypervisor.

Each attached VM has one bounded receive queue here.  `send` never blocks
and never runs the receiver's code: it appends under the switch's lock (or
drops and counts when the queue is full) and then calls the receiver's
`notify` callback, which must be thread-safe -- the hypercall device passes
one that posts to the receiving board's `HostEvents`, so everything that
touches that VM's devices runs on its own vCPU thread.  Receivers pull
datagrams with `receive`.
"""

from __future__ import annotations

import collections
import enum
import threading
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_QUEUE_LIMIT = 64  # datagrams waiting per VM before the switch drops
DEFAULT_MAX_PAYLOAD = 1500  # bytes per datagram (an Ethernet MTU)


class SendStatus(enum.Enum):
    QUEUED = "queued"
    DROPPED = "dropped"  # the receiver's queue was full
    UNREACHABLE = "unreachable"  # no VM with that id is attached
    TOO_BIG = "too big"


@dataclass(frozen=True)
class Datagram:
    source: int
    payload: bytes


@dataclass
class PortCounters:
    sent: int = 0  # datagrams this VM sent that were queued somewhere
    received: int = 0  # datagrams this VM took off its queue
    dropped: int = 0  # datagrams for this VM dropped because its queue was full
    unreachable: int = 0  # datagrams this VM sent to an unknown id


class _Port:
    __slots__ = ("queue", "notify", "counters")

    def __init__(self, notify: Callable[[], None] | None) -> None:
        self.queue: collections.deque[Datagram] = collections.deque()
        self.notify = notify
        self.counters = PortCounters()


class VirtualSwitch:
    """A learning-free switch: a datagram names its destination VM id."""

    def __init__(self, queue_limit: int = DEFAULT_QUEUE_LIMIT,
                 max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        if queue_limit <= 0 or max_payload <= 0:
            raise ValueError("queue_limit and max_payload must be positive")
        self.queue_limit = queue_limit
        self.max_payload = max_payload
        self._ports: dict[int, _Port] = {}
        self._lock = threading.Lock()

    # -- ports ----------------------------------------------------------------
    def attach(self, vm_id: int, notify: Callable[[], None] | None = None) -> None:
        """Plug VM `vm_id` in; `notify()` is called (from the sender's thread)
        after each datagram queued for it."""
        with self._lock:
            if vm_id in self._ports:
                raise ValueError(f"VM id {vm_id} is already attached to the switch")
            self._ports[vm_id] = _Port(notify)

    def detach(self, vm_id: int) -> None:
        with self._lock:
            self._ports.pop(vm_id, None)

    def is_attached(self, vm_id: int) -> bool:
        with self._lock:
            return vm_id in self._ports

    @property
    def vm_ids(self) -> list[int]:
        with self._lock:
            return sorted(self._ports)

    # -- traffic --------------------------------------------------------------
    def send(self, source: int, destination: int, payload: bytes) -> SendStatus:
        """Queue `payload` for `destination`; never blocks on the receiver."""
        if len(payload) > self.max_payload:
            return SendStatus.TOO_BIG
        with self._lock:
            sender = self._ports.get(source)
            port = self._ports.get(destination)
            if port is None:
                if sender is not None:
                    sender.counters.unreachable += 1
                return SendStatus.UNREACHABLE
            if len(port.queue) >= self.queue_limit:
                port.counters.dropped += 1
                return SendStatus.DROPPED
            port.queue.append(Datagram(source, bytes(payload)))
            if sender is not None:
                sender.counters.sent += 1
            notify = port.notify
        if notify is not None:
            notify()
        return SendStatus.QUEUED

    def receive(self, vm_id: int) -> Datagram | None:
        """Take the oldest datagram queued for `vm_id` (None when empty)."""
        with self._lock:
            port = self._ports.get(vm_id)
            if port is None or not port.queue:
                return None
            port.counters.received += 1
            return port.queue.popleft()

    def head_length(self, vm_id: int) -> int | None:
        """Payload length of the oldest datagram for `vm_id`, without taking it."""
        with self._lock:
            port = self._ports.get(vm_id)
            if port is None or not port.queue:
                return None
            return len(port.queue[0].payload)

    def pending(self, vm_id: int) -> int:
        with self._lock:
            port = self._ports.get(vm_id)
            return len(port.queue) if port is not None else 0

    def counters(self, vm_id: int) -> PortCounters:
        """A copy of one port's counters."""
        with self._lock:
            port = self._ports.get(vm_id)
            if port is None:
                return PortCounters()
            c = port.counters
            return PortCounters(c.sent, c.received, c.dropped, c.unreachable)
