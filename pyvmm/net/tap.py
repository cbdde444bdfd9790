"""A host TAP device as a virtio-net backend (Linux Documentation/networking/tuntap.rst).

Opening /dev/net/tun and TUNSETIFF with IFF_TAP | IFF_NO_PI attaches this
process to the TAP interface NAME (created if absent, which needs
CAP_NET_ADMIN).  Frames are whole Ethernet frames without a packet-info
prefix.  A reader thread hands each received frame to `deliver`, which must
be thread-safe (the board posts it to the VM's own thread).  Writes never
block: with the interface's queue full, a frame is dropped and counted.
"""

from __future__ import annotations

import fcntl
import os
import select
import struct
import threading
from collections.abc import Callable

from pyvmm.errors import ConfigError

TUNSETIFF = 0x400454CA  # _IOW('T', 202, int), linux/if_tun.h
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
MAX_FRAME = 65535 + 14


class TapBackend:
    def __init__(self, ifname: str, deliver: Callable[[bytes], None]) -> None:
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
            raise ConfigError(f"netdev tap,ifname={ifname}: {error.strerror}") from None
        self.ifname = ifname
        self.deliver = deliver
        self.dropped = 0
        self._stop_read, self._stop_write = os.pipe()
        self._thread = threading.Thread(target=self._reader, daemon=True, name=f"tap-{ifname}")
        self._thread.start()

    def send(self, frame: bytes) -> None:
        try:
            os.write(self.fd, frame)
        except (BlockingIOError, OSError):
            self.dropped += 1

    def _reader(self) -> None:
        while True:
            ready, _, _ = select.select([self.fd, self._stop_read], [], [])
            if self._stop_read in ready:
                return
            try:
                frame = os.read(self.fd, MAX_FRAME)
            except BlockingIOError:
                continue
            except OSError:
                return
            self.deliver(frame)

    def close(self) -> None:
        os.write(self._stop_write, b"x")
        self._thread.join(timeout=2)
        for fd in (self.fd, self._stop_read, self._stop_write):
            os.close(fd)
