"""A host TAP device as a virtio-net backend (Linux Documentation/networking/tuntap.rst).

Opening /dev/net/tun and TUNSETIFF with IFF_TAP | IFF_NO_PI attaches this
process to the TAP interface NAME (created if absent, which needs
CAP_NET_ADMIN).  Frames are whole Ethernet frames without a packet-info
prefix.  A reader thread puts each received frame in a bounded queue
(QUEUE_LIMIT frames; past that it is dropped and counted) and calls
`notify`, which must be thread-safe (the NIC posts its drain to the VM's
own thread); the NIC takes frames with `receive`.  Writes never block: with
the interface's queue full, a frame is dropped and counted.

Opening an interface that does not exist creates it, and attaching to one
made by another user needs CAP_NET_ADMIN (tuntap.rst "Persistent TAP"); the
error says so in one line.
"""

from __future__ import annotations

import collections
import errno
import fcntl
import os
import select
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass

from pyvmm.errors import ConfigError

TUNSETIFF = 0x400454CA  # _IOW('T', 202, int), linux/if_tun.h
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
MAX_FRAME = 65535 + 14
QUEUE_LIMIT = 256  # frames from the host waiting for the NIC


@dataclass
class TapCounters:
    sent: int = 0  # frames written to the host
    send_dropped: int = 0  # the host's queue was full (or the interface down)
    received: int = 0  # frames read from the host and queued for the NIC
    dropped: int = 0  # frames from the host dropped: the NIC's queue here was full


class TapBackend:
    def __init__(self, ifname: str, notify: Callable[[], None] | None = None,
                 queue_limit: int = QUEUE_LIMIT) -> None:
        if not ifname or len(ifname.encode()) > 15:
            raise ConfigError(f"tap ifname {ifname!r}: 1 to 15 characters")
        try:
            self.fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as error:
            raise ConfigError(f"netdev tap: /dev/net/tun: {error.strerror}") from None
        try:
            fcntl.ioctl(self.fd, TUNSETIFF, struct.pack("16sH", ifname.encode(),
                                                        IFF_TAP | IFF_NO_PI))
        except OSError as error:
            os.close(self.fd)
            hint = (" (creating a TAP, or attaching to another user's, needs CAP_NET_ADMIN)"
                    if error.errno == errno.EPERM else "")
            raise ConfigError(f"netdev tap,ifname={ifname}: {error.strerror}{hint}") from None
        self.ifname = ifname
        self.notify = notify
        self.queue_limit = queue_limit
        self.queue: collections.deque[bytes] = collections.deque()
        self.lock = threading.Lock()
        self.counters = TapCounters()
        self._stop_read, self._stop_write = os.pipe()
        thread = threading.Thread(target=self._reader, daemon=True, name=f"tap-{ifname}")
        self._thread: threading.Thread | None = thread
        thread.start()

    def send(self, frame: bytes) -> None:
        try:
            os.write(self.fd, frame)
            self.counters.sent += 1
        except OSError:  # EAGAIN: the host's queue is full; EIO: the interface is down
            self.counters.send_dropped += 1

    def receive(self) -> bytes | None:
        with self.lock:
            return self.queue.popleft() if self.queue else None

    def _reader(self) -> None:
        while True:
            try:
                ready, _, _ = select.select([self.fd, self._stop_read], [], [])
            except (OSError, ValueError):  # closed under us
                return
            if self._stop_read in ready:
                return
            try:
                frame = os.read(self.fd, MAX_FRAME)
            except BlockingIOError:
                continue
            except OSError:
                return
            with self.lock:
                if len(self.queue) >= self.queue_limit:
                    self.counters.dropped += 1
                    continue
                self.queue.append(frame)
                self.counters.received += 1
            if self.notify is not None:
                self.notify()

    def counter_rows(self) -> dict[str, int]:
        """What --stats shows for this hop."""
        c = self.counters
        return {"frames sent to the host": c.sent,
                "frames dropped (host queue full)": c.send_dropped,
                "frames from the host": c.received,
                "frames dropped (queue to the NIC full)": c.dropped}

    def close(self) -> None:
        if self._thread is None:
            return
        os.write(self._stop_write, b"x")
        self._thread.join(timeout=2)
        self._thread = None
        for fd in (self.fd, self._stop_read, self._stop_write):
            os.close(fd)
