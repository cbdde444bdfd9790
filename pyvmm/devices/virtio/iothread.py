"""Serving a virtio device's queues on a host thread of its own (an I/O thread).

Each queue has an eventfd(2): a notification is one write to it, made by
KVM itself when the engine registered it with KVM_IOEVENTFD (the vCPU never
leaves the guest), or by the transport on the vCPU thread otherwise
(`VirtioDevice.notifier`).  The thread waits on all of them, and for each
one that fired takes the device's lock and serves that queue: pops the
available ring, does the backend work (pread/pwrite, fsync on FLUSH), fills
the used ring and raises the interrupt.  The order is the one Virtio 1.2
§2.7.13 gives the device: the available index is read before the
descriptors it covers (SplitQueue.pop), each used element is written before
the used index (SplitQueue.push), and the interrupt comes after the used
index.  Python runs this thread's reads and writes of guest memory in
program order, and the x86 memory model keeps stores in order (SDM Vol. 3A
§9.2.2), so no fence is needed between them.

The interrupt itself is the transport's: its state changes at once, under
the lock; the line or message goes where the engine said (`post_line`,
`post_msi`), the vCPU thread unless delivery is thread-safe there.

`quiesce` serves whatever was notified and not yet served on the calling
thread and returns once no request is in flight, so that a stopped VM's
device and queue state is whole (snapshots, engine switches).
"""

from __future__ import annotations

import os
import selectors
import threading

from pyvmm.devices.virtio.device import VirtioDevice

_EFD_FLAGS = os.EFD_CLOEXEC | os.EFD_NONBLOCK


def _consume(fd: int) -> bool:
    """Read an eventfd's counter (resetting it); False if nothing was signalled."""
    try:
        os.eventfd_read(fd)
    except BlockingIOError:
        return False
    return True


class IoThread:
    """One device's I/O thread and the eventfds that wake it, one per queue."""

    def __init__(self, device: VirtioDevice, name: str) -> None:
        self.device = device
        self.eventfds = [os.eventfd(0, _EFD_FLAGS) for _ in device.queues]
        self._stop_fd = os.eventfd(0, _EFD_FLAGS)
        self._selector = selectors.DefaultSelector()
        for index, fd in enumerate(self.eventfds):
            self._selector.register(fd, selectors.EVENT_READ, index)
        self._selector.register(self._stop_fd, selectors.EVENT_READ, None)
        self._previous_notifier = device.notifier
        device.notifier = self.notify
        self._thread = threading.Thread(target=self._run, name=f"pyvmm-io-{name}", daemon=True)
        self._thread.start()

    def notify(self, index: int) -> None:
        """Thread-safe: queue `index` was notified (the transport's hand-off)."""
        if 0 <= index < len(self.eventfds):
            os.eventfd_write(self.eventfds[index], 1)
        else:  # no such queue: the device ignores it and counts it, on this thread
            self.device.notify(index)

    def _run(self) -> None:
        while True:
            for key, _ in self._selector.select():
                if key.data is None:
                    return
                with self.device.lock:  # taken and served in one step (`quiesce`)
                    if _consume(key.fd):
                        self.device.notify(key.data)

    def quiesce(self) -> None:
        """Serve every pending notification here and wait out the one in flight."""
        with self.device.lock:  # the thread holds it while it serves a queue
            for index, fd in enumerate(self.eventfds):
                if _consume(fd):
                    self.device.notify(index)

    def close(self) -> None:
        """Stop the thread (after serving what is pending) and close the eventfds."""
        if self._stop_fd < 0:
            return
        os.eventfd_write(self._stop_fd, 1)
        self._thread.join()
        self.quiesce()
        self.device.notifier = self._previous_notifier
        self._selector.close()
        for fd in (*self.eventfds, self._stop_fd):
            os.close(fd)
        self.eventfds = []
        self._stop_fd = -1
