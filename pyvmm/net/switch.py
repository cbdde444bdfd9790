"""A learning Ethernet switch between the VMs of one hypervisor.

IEEE 802.1D's forwarding rule, reduced to what a software switch needs: the
switch learns which port each source MAC address came from; a frame to a
learned unicast address goes to that port only, a frame to a broadcast,
multicast (I/G bit, the low bit of the first octet) or unknown address goes
to every other port.  Each port has a bounded queue; a frame for a full
queue is dropped and counted.  `send` never blocks and never runs the
receiver's code: it queues under the lock and calls the port's thread-safe
`notify`, which hands the work to the receiving VM's own thread.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from dataclasses import dataclass

QUEUE_LIMIT = 256
MAX_LEARNED = 4096  # MAC table entries; a guest spraying source addresses cannot grow it


@dataclass
class SwitchCounters:
    sent: int = 0  # frames this port sent into the switch
    delivered: int = 0  # frames the switch queued for this port
    received: int = 0  # frames the port's NIC took off its queue
    dropped: int = 0  # frames for this port dropped because its queue was full


class SwitchPort:
    """One VM's attachment: `send` frames in, `receive` them out."""

    def __init__(self, switch: EthernetSwitch, name: str,
                 notify: Callable[[], None] | None) -> None:
        self.switch = switch
        self.name = name
        self.notify = notify
        self.queue: collections.deque[bytes] = collections.deque()
        self.counters = SwitchCounters()

    def send(self, frame: bytes) -> None:
        self.switch.forward(self, frame)

    def receive(self) -> bytes | None:
        with self.switch.lock:
            if not self.queue:
                return None
            self.counters.received += 1
            return self.queue.popleft()

    def close(self) -> None:
        self.switch.detach(self)

    def counter_rows(self) -> dict[str, int]:
        """What --stats shows for this hop (the switch's view of this port)."""
        c = self.counters
        return {"frames sent into the switch": c.sent,
                "frames queued for this port": c.delivered,
                "frames taken by the NIC": c.received,
                "frames dropped (port queue full)": c.dropped}


class EthernetSwitch:
    def __init__(self, queue_limit: int = QUEUE_LIMIT) -> None:
        self.queue_limit = queue_limit
        self.lock = threading.Lock()
        self.ports: list[SwitchPort] = []
        self.table: collections.OrderedDict[bytes, SwitchPort] = collections.OrderedDict()

    def attach(self, name: str, notify: Callable[[], None] | None = None) -> SwitchPort:
        port = SwitchPort(self, name, notify)
        with self.lock:
            self.ports.append(port)
        return port

    def detach(self, port: SwitchPort) -> None:
        with self.lock:
            if port not in self.ports:
                return
            self.ports.remove(port)
            for mac in [m for m, p in self.table.items() if p is port]:
                del self.table[mac]

    def forward(self, source: SwitchPort, frame: bytes) -> None:
        if len(frame) < 14:
            return
        destination, origin = frame[0:6], frame[6:12]
        notify = []
        with self.lock:
            source.counters.sent += 1
            if not origin[0] & 1:
                self.table[origin] = source
                self.table.move_to_end(origin)
                while len(self.table) > MAX_LEARNED:
                    self.table.popitem(last=False)
            target = None if destination[0] & 1 else self.table.get(destination)
            targets = [target] if target is not None else [p for p in self.ports
                                                           if p is not source]
            for port in targets:
                if port is source:
                    continue
                if len(port.queue) >= self.queue_limit:
                    port.counters.dropped += 1
                    continue
                port.queue.append(frame)
                port.counters.delivered += 1
                notify.append(port)
        for port in notify:
            if port.notify is not None:
                port.notify()
