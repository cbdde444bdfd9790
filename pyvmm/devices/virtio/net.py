"""virtio-net (Virtio 1.2 §5.1): queue 0 receives, queue 1 transmits.

Every buffer starts with the 12-byte struct virtio_net_hdr (§5.1.6; with
VIRTIO_F_VERSION_1 it always has num_buffers).  Offered: MAC (the address
in config space), STATUS (link up/down) and MRG_RXBUF (a received frame
may span several receive chains, num_buffers says how many).  No checksum
or segmentation offloads: frames go out and come in whole.

Received frames wait in a bounded backlog (RX_BACKLOG frames) until the
driver has posted receive buffers; past that, and for frames the posted
buffers cannot hold, they are dropped and counted — a bounded queue at
every hop.  Transmitted frames go to the backend (`send(frame)`), which
must not block.

A backend from pyvmm/net (`attach`) also hands frames in: it calls its
`notify` from any thread, the NIC posts one drain to the VM's own thread
(`post`, the board's HostEvents), and the drain takes frames with
`receive()` while the driver has receive buffers posted; the rest wait in
the backend's own bounded queue, which drops and counts when full.

Snapshots: the state is plain data (the virtqueues, the link, the backlog
as hex).  Frames in flight outside the device -- in a switch port's or a
TAP's queue, or in the host's network stack -- are not saved and are lost
on a restore, as a real network may lose them; TCP resends them.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Protocol

from pyvmm.devices.virtio.device import VirtioDevice
from pyvmm.devices.virtio.queue import QueueError, SplitQueue
from pyvmm.devices.virtio.spec import DEVICE_NET, INTERRUPT_CONFIG_CHANGE
from pyvmm.machine.memory import GuestMemory, GuestMemoryError
from pyvmm.stats import Stats

RECEIVE, TRANSMIT = 0, 1
HEADER = 12
MAX_FRAME = 65535 + 14
RX_BACKLOG = 256

F_MAC = 1 << 5
F_MRG_RXBUF = 1 << 15
F_STATUS = 1 << 16
S_LINK_UP = 1


class NetBackend(Protocol):
    def send(self, frame: bytes) -> None: ...


class NullBackend:
    """No network: frames the guest sends are counted and dropped."""

    def send(self, frame: bytes) -> None:
        return None

    def receive(self) -> bytes | None:
        return None

    def close(self) -> None:
        return None


class VirtioNet(VirtioDevice):
    device_id = DEVICE_NET
    name = "virtio-net"
    queue_sizes = (256, 256)
    device_features = F_MAC | F_MRG_RXBUF | F_STATUS

    def __init__(self, memory: GuestMemory, mac: bytes, backend: NetBackend | None = None,
                 stats: Stats | None = None) -> None:
        if len(mac) != 6 or mac[0] & 1:
            raise ValueError("a MAC address is 6 bytes and not a multicast address")
        self.mac = mac
        self.backend = backend if backend is not None else NullBackend()
        self.link_up = True
        self.backlog: collections.deque[bytes] = collections.deque()
        self._post: Callable[[Callable[[], None]], None] | None = None
        self._drain_lock = threading.Lock()
        self._drain_posted = False
        super().__init__(memory, stats)

    # -- the backend ------------------------------------------------------------------
    def attach(self, backend: NetBackend, post: Callable[[Callable[[], None]], None]) -> None:
        """Plug in a pyvmm/net backend; `post` runs a callable on the VM's thread."""
        self.backend = backend
        self._post = post
        backend.notify = self._arrived  # type: ignore[attr-defined]
        self._arrived()  # frames queued before we were listening

    def detach(self) -> None:
        backend, self.backend, self._post = self.backend, NullBackend(), None
        close = getattr(backend, "close", None)
        if close is not None:
            close()

    def _arrived(self) -> None:
        """Any thread: the backend has frames; one drain at a time is posted."""
        post = self._post
        with self._drain_lock:
            if self._drain_posted or post is None:
                return
            self._drain_posted = True
        post(self._drain)

    def _drain(self) -> None:
        """The VM's thread: fill the posted receive buffers from the backend.
        Frames that find no buffer wait in the backend's bounded queue."""
        with self._drain_lock:
            self._drain_posted = False
        with self.lock:
            if not self.running or not self.queues[RECEIVE].ready:
                return
            queue = self.queues[RECEIVE]
            try:
                self._fill(queue)
                queue.publish_avail_event()  # §2.7.10: buffers were taken, as after a notify
            except (QueueError, GuestMemoryError) as error:
                queue.broken = True
                self.fail(f"queue {RECEIVE}: {error}")
                return
            self.complete_later(RECEIVE)

    def config_bytes(self) -> bytes:
        """struct virtio_net_config (§5.1.4): mac, status, max_virtqueue_pairs, mtu."""
        return self.mac + int(self.link_up).to_bytes(2, "little") + (1).to_bytes(2, "little") \
            + (1500).to_bytes(2, "little")

    def set_link(self, up: bool) -> None:
        if up != self.link_up:
            self.link_up = up
            self.config_generation += 1
            if self.running:
                self.interrupt(INTERRUPT_CONFIG_CHANGE, None)

    # -- transmit ------------------------------------------------------------------
    def serve(self, index: int, queue: SplitQueue) -> None:
        if index == TRANSMIT:
            while (chain := queue.pop()) is not None:
                data = queue.read_chain(chain, HEADER + MAX_FRAME)
                frame = data[HEADER:]
                if self.link_up and frame:
                    self.stats.count("virtio-net", "frames sent")
                    self.backend.send(frame)
                else:
                    self.stats.count("virtio-net", "frames dropped (link down)")
                queue.push(chain, 0)
        elif index == RECEIVE:
            self._fill(queue)

    # -- receive ----------------------------------------------------------------------
    def receive(self, frame: bytes) -> None:
        """A frame for the guest (on the vCPU thread)."""
        if not self.link_up or len(frame) > MAX_FRAME:
            self.stats.count("virtio-net", "frames dropped (link down or too big)")
            return
        if len(self.backlog) >= RX_BACKLOG:
            self.stats.count("virtio-net", "frames dropped (receive backlog full)")
            return
        self.backlog.append(frame)
        if self.running and self.queues[RECEIVE].ready:
            self.notify(RECEIVE)

    def _fill(self, queue: SplitQueue) -> None:
        merge = bool(self.driver_features & F_MRG_RXBUF)
        receive = getattr(self.backend, "receive", None)
        while True:
            if not self.backlog:  # then the backend's queue, one frame at a time
                frame = receive() if receive is not None else None
                if frame is None:
                    return
                if not self.link_up or len(frame) > MAX_FRAME:
                    self.stats.count("virtio-net", "frames dropped (link down or too big)")
                    continue
                self.backlog.append(frame)
            packet = bytes(HEADER) + self.backlog[0]
            start = queue.last_avail
            chains = []
            room = 0
            while room < len(packet):
                chain = queue.pop()
                if chain is None:
                    queue.last_avail = start  # not enough buffers yet: wait for more
                    return
                chains.append(chain)
                room += chain.writable_length
                if not merge:
                    break
            self.backlog.popleft()
            if room < len(packet):  # one chain without MRG_RXBUF, and too small
                self.stats.count("virtio-net", "frames dropped (receive buffer too small)")
                queue.push(chains[0], 0)
                continue
            header = bytearray(HEADER)
            header[10:12] = len(chains).to_bytes(2, "little")  # num_buffers
            packet = bytes(header) + packet[HEADER:]
            offset = 0
            for chain in chains:
                written = queue.write_chain(chain, packet[offset:offset + chain.writable_length])
                offset += written
                queue.push(chain, written)
            self.stats.count("virtio-net", "frames received")

    def get_state(self) -> dict:
        return {**super().get_state(), "link_up": self.link_up,
                "backlog": [frame.hex() for frame in self.backlog]}

    def set_state(self, state: dict) -> None:
        if not isinstance(state["link_up"], bool):
            raise ValueError("virtio-net link_up must be true or false")
        backlog = [bytes.fromhex(frame) for frame in state["backlog"]]
        if len(backlog) > RX_BACKLOG or any(len(f) > MAX_FRAME for f in backlog):
            raise ValueError("virtio-net receive backlog out of bounds")
        super().set_state(state)
        self.link_up = state["link_up"]
        self.backlog = collections.deque(backlog)
