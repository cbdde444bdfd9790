"""A minimal virtio driver for tests: lays out split virtqueues in guest RAM
and talks to a device through the virtio-mmio registers, as Linux's
virtio_mmio and virtio_ring drivers do (Virtio 1.2 §3.1.1, §2.7.13)."""

from __future__ import annotations

from pyvmm.devices.virtio import mmio as regs
from pyvmm.devices.virtio.spec import (
    DESC_F_NEXT,
    DESC_F_WRITE,
    F_VERSION_1,
    STATUS_ACKNOWLEDGE,
    STATUS_DRIVER,
    STATUS_DRIVER_OK,
    STATUS_FEATURES_OK,
)
from pyvmm.machine.memory import GuestMemory, allocate_backing

RAM = 4 << 20


class Sink:
    def __init__(self) -> None:
        self.levels: dict[int, bool] = {}

    def set_irq(self, irq: int, level: bool) -> None:
        self.levels[irq] = level


def make_memory() -> GuestMemory:
    memory = GuestMemory()
    memory.add_region("ram", 0, RAM, allocate_backing(RAM), 0)
    return memory


class Driver:
    def __init__(self, transport: regs.VirtioMmio, memory: GuestMemory) -> None:
        self.t = transport
        self.memory = memory
        self.next_free = 0x100000  # data buffers from here
        self.queues: dict[int, dict] = {}

    def r(self, offset: int) -> int:
        return self.t.mmio_read(offset, 4)

    def w(self, offset: int, value: int) -> None:
        self.t.mmio_write(offset, 4, value)

    def alloc(self, size: int, align: int = 16) -> int:
        self.next_free = (self.next_free + align - 1) & ~(align - 1)
        address = self.next_free
        self.next_free += size
        return address

    def init(self, features: int = F_VERSION_1, queues: int = 1, size: int = 16) -> bool:
        assert self.r(regs.MAGIC_VALUE) == regs.MAGIC
        assert self.r(regs.VERSION_REG) == 2
        self.w(regs.STATUS, 0)
        self.w(regs.STATUS, STATUS_ACKNOWLEDGE)
        self.w(regs.STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER)
        for half in (0, 1):
            self.w(regs.DRIVER_FEATURES_SEL, half)
            self.w(regs.DRIVER_FEATURES, (features >> (32 * half)) & 0xFFFFFFFF)
        self.w(regs.STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK)
        if not self.r(regs.STATUS) & STATUS_FEATURES_OK:
            return False
        for index in range(queues):
            self.setup_queue(index, size)
        self.w(regs.STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK
               | STATUS_DRIVER_OK)
        return True

    def setup_queue(self, index: int, size: int) -> None:
        self.w(regs.QUEUE_SEL, index)
        desc = self.alloc(16 * size, 16)
        avail = self.alloc(6 + 2 * size, 2)
        used = self.alloc(6 + 8 * size, 4)
        self.w(regs.QUEUE_NUM, size)
        for low, value in ((regs.QUEUE_DESC_LOW, desc), (regs.QUEUE_DRIVER_LOW, avail),
                           (regs.QUEUE_DEVICE_LOW, used)):
            self.w(low, value & 0xFFFFFFFF)
            self.w(low + 4, value >> 32)
        self.w(regs.QUEUE_READY, 1)
        self.queues[index] = {"desc": desc, "avail": avail, "used": used, "size": size,
                              "avail_idx": 0, "next_desc": 0, "used_seen": 0}

    def submit(self, index: int, buffers: list[tuple[bytes | int, bool]]) -> int:
        """buffers: (data to place, or a length for a writable buffer, writable?)."""
        q = self.queues[index]
        head = q["next_desc"]
        addresses = []
        for n, (content, writable) in enumerate(buffers):
            slot = (head + n) % q["size"]
            length = content if isinstance(content, int) else len(content)
            address = self.alloc(max(length, 1))
            if not isinstance(content, int):
                self.memory.write(address, content)
            addresses.append(address)
            flags = (DESC_F_WRITE if writable else 0) | (
                DESC_F_NEXT if n + 1 < len(buffers) else 0)
            entry = q["desc"] + 16 * slot
            self.memory.write_u64(entry, address)
            self.memory.write_u32(entry + 8, length)
            self.memory.write_u16(entry + 12, flags)
            self.memory.write_u16(entry + 14, (slot + 1) % q["size"])
        q["next_desc"] = (head + len(buffers)) % q["size"]
        ring_slot = q["avail_idx"] % q["size"]
        self.memory.write_u16(q["avail"] + 4 + 2 * ring_slot, head)
        q["avail_idx"] = (q["avail_idx"] + 1) & 0xFFFF
        self.memory.write_u16(q["avail"] + 2, q["avail_idx"])
        self.notify(index)
        self.last_addresses = addresses
        return head

    def notify(self, index: int) -> None:
        self.w(regs.QUEUE_NOTIFY, index)

    def used(self, index: int) -> list[tuple[int, int]]:
        q = self.queues[index]
        out = []
        while q["used_seen"] != self.memory.read_u16(q["used"] + 2):
            slot = q["used_seen"] % q["size"]
            entry = q["used"] + 4 + 8 * slot
            out.append((self.memory.read_u32(entry), self.memory.read_u32(entry + 4)))
            q["used_seen"] = (q["used_seen"] + 1) & 0xFFFF
        return out
