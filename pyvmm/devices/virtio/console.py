"""virtio-console (Virtio 1.2 §5.3) without multiport: hvc0 in Linux.

Queue 0 (receiveq) carries host input to the guest in buffers the driver
posts in advance; queue 1 (transmitq) carries guest output, written to the
host writer as it comes.  Host input waits in a bounded backlog
(MAX_BACKLOG bytes; more is dropped and counted) until the driver posts
receive buffers.
"""

from __future__ import annotations

from typing import BinaryIO

from pyvmm.devices.virtio.device import VirtioDevice
from pyvmm.devices.virtio.queue import SplitQueue
from pyvmm.devices.virtio.spec import DEVICE_CONSOLE
from pyvmm.machine.memory import GuestMemory
from pyvmm.stats import Stats

RECEIVE, TRANSMIT = 0, 1
MAX_BACKLOG = 65536
MAX_WRITE = 64 * 1024  # guest bytes taken from one transmit chain


class VirtioConsole(VirtioDevice):
    device_id = DEVICE_CONSOLE
    name = "virtio-console"
    queue_sizes = (64, 64)

    def __init__(self, memory: GuestMemory, output: BinaryIO,
                 stats: Stats | None = None) -> None:
        self.output = output
        self.backlog = bytearray()
        super().__init__(memory, stats)

    def config_bytes(self) -> bytes:
        """struct virtio_console_config (§5.3.4): cols, rows, max_nr_ports, emerg_wr."""
        return bytes(12)

    def serve(self, index: int, queue: SplitQueue) -> None:
        if index == TRANSMIT:
            while (chain := queue.pop()) is not None:
                data = queue.read_chain(chain, MAX_WRITE)
                self.stats.count("virtio-console", "bytes out", len(data))
                try:
                    self.output.write(data)
                    self.output.flush()
                except OSError:
                    self.stats.count("virtio-console", "host write failed")
                queue.push(chain, 0)
        else:
            self._deliver(queue)

    def _deliver(self, queue: SplitQueue) -> None:
        while self.backlog:
            chain = queue.pop()
            if chain is None:
                return
            written = queue.write_chain(chain, bytes(self.backlog[:chain.writable_length]))
            del self.backlog[:written]
            queue.push(chain, written)

    def enqueue_input(self, data: bytes) -> None:
        """Host input (on the vCPU thread, from HostEvents)."""
        room = MAX_BACKLOG - len(self.backlog)
        if len(data) > room:
            self.stats.count("virtio-console", "input bytes dropped", len(data) - room)
        self.backlog += data[:max(room, 0)]
        if self.running and self.queues[RECEIVE].ready:
            self.notify(RECEIVE)

    def get_state(self) -> dict:
        return {**super().get_state(), "backlog": bytes(self.backlog).hex()}

    def set_state(self, state: dict) -> None:
        backlog = bytes.fromhex(state["backlog"])
        if len(backlog) > MAX_BACKLOG:
            raise ValueError("virtio-console backlog longer than its bound")
        super().set_state(state)
        self.backlog = bytearray(backlog)
