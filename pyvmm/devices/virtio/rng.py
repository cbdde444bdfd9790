"""virtio-rng, the entropy device (Virtio 1.2 §5.4): one request queue whose
device-writable buffers the device fills with random bytes from the host
(os.urandom: the kernel's CSPRNG).  At most MAX_PER_REQUEST bytes per
buffer chain, so a guest cannot make one request cost unbounded host work."""

from __future__ import annotations

import os

from pyvmm.devices.virtio.device import VirtioDevice
from pyvmm.devices.virtio.queue import SplitQueue
from pyvmm.devices.virtio.spec import DEVICE_ENTROPY

MAX_PER_REQUEST = 64 * 1024


class VirtioRng(VirtioDevice):
    device_id = DEVICE_ENTROPY
    name = "virtio-rng"
    queue_sizes = (64,)
    iothread_safe = True  # os.urandom and guest memory only

    def serve(self, index: int, queue: SplitQueue) -> None:
        while (chain := queue.pop()) is not None:
            want = min(chain.writable_length, MAX_PER_REQUEST)
            written = queue.write_chain(chain, os.urandom(want))
            self.stats.count("virtio-rng", "bytes", written)
            queue.push(chain, written)
