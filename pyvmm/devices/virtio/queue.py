"""The split virtqueue (Virtio 1.2 §2.7), as the device side sees it.

Three areas in guest memory, each little-endian:
- the descriptor table: `size` entries of {addr u64, len u32, flags u16,
  next u16} (§2.7.5);
- the driver ("available") ring: {flags u16, idx u16, ring[size] u16,
  used_event u16} (§2.7.6);
- the device ("used") ring: {flags u16, idx u16, ring[size] of {id u32,
  len u32}, avail_event u16} (§2.7.8).

The driver is not trusted (§2.7.5.1, §2.7.5.3.1).  A chain that loops or is
longer than the queue, a descriptor index out of range, an address outside
guest RAM, an indirect table that is empty, not a multiple of 16 bytes,
itself indirect or nested, a readable descriptor after a writable one, an
available index more than `size` ahead of the device's: each raises
QueueError, and the transport then sets DEVICE_NEEDS_RESET (§2.1.2) and
stops using the queue.  No length is ever trusted to allocate host memory
beyond the guest RAM it describes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyvmm.devices.virtio.spec import (
    AVAIL_F_NO_INTERRUPT,
    DESC_F_INDIRECT,
    DESC_F_NEXT,
    DESC_F_WRITE,
    MAX_QUEUE_SIZE,
)
from pyvmm.machine.memory import GuestMemory, GuestMemoryError

DESCRIPTOR_SIZE = 16
MAX_CHAIN_BYTES = 1 << 32  # a chain describes at most 4 GiB of buffers


class QueueError(Exception):
    """The driver broke the virtqueue rules; the message says which."""


@dataclass
class Buffer:
    """One guest buffer of a chain: guest-physical address, length, direction."""

    address: int
    length: int
    writable: bool


@dataclass
class Chain:
    """A descriptor chain popped from the available ring."""

    head: int
    readable: list[Buffer] = field(default_factory=list)
    writable: list[Buffer] = field(default_factory=list)

    @property
    def readable_length(self) -> int:
        return sum(b.length for b in self.readable)

    @property
    def writable_length(self) -> int:
        return sum(b.length for b in self.writable)


def vring_need_event(event_idx: int, new_idx: int, old_idx: int) -> bool:
    """§2.7.10: notify iff event_idx lies in [old_idx, new_idx) modulo 2^16."""
    return ((new_idx - event_idx - 1) & 0xFFFF) < ((new_idx - old_idx) & 0xFFFF)


class SplitQueue:
    """One virtqueue's device-side state; addresses set by the transport."""

    def __init__(self, memory: GuestMemory, max_size: int) -> None:
        self.memory = memory
        self.max_size = max_size
        self.reset()

    def reset(self) -> None:
        self.size = self.max_size
        self.ready = False
        self.desc = 0
        self.driver = 0
        self.device = 0
        self.last_avail = 0  # next available-ring slot the device reads
        self.used_idx = 0  # the device's used-ring index (what it wrote last)
        self.signalled_used = 0  # used_idx when the driver was last interrupted
        self.event_idx = False
        self.indirect = False
        self.broken = False

    # -- checks --------------------------------------------------------------
    def check_layout(self) -> None:
        """§2.7: size a power of 2 ≤ 32768; areas aligned 16/2/4 and in RAM."""
        size = self.size
        if not size or size & (size - 1) or size > MAX_QUEUE_SIZE or size > self.max_size:
            raise QueueError(f"queue size {size} is not a power of 2 up to {self.max_size}")
        extra = 2 if self.event_idx else 0
        for name, address, length, align in (
                ("descriptor table", self.desc, DESCRIPTOR_SIZE * size, 16),
                ("driver area", self.driver, 4 + 2 * size + extra, 2),
                ("device area", self.device, 4 + 8 * size + extra, 4)):
            if address % align:
                raise QueueError(f"{name} at {address:#x} is not {align}-byte aligned")
            if not self.memory.is_mapped(address, length) or self.memory.region_at(
                    address, length).readonly:
                raise QueueError(f"{name} at {address:#x}+{length:#x} is not in guest RAM")

    # -- guest memory ----------------------------------------------------------
    def _u16(self, address: int) -> int:
        try:
            return self.memory.read_u16(address)
        except GuestMemoryError:
            raise QueueError(f"ring read at {address:#x} outside guest RAM") from None

    def _put(self, address: int, size: int, value: int) -> None:
        try:
            self.memory.write_int(address, size, value)
        except GuestMemoryError:
            raise QueueError(f"ring write at {address:#x} outside guest RAM") from None

    def _descriptor(self, table: int, index: int) -> tuple[int, int, int, int]:
        try:
            raw = self.memory.read(table + DESCRIPTOR_SIZE * index, DESCRIPTOR_SIZE)
        except GuestMemoryError:
            raise QueueError(f"descriptor {index} at {table:#x} outside guest RAM") from None
        return (int.from_bytes(raw[0:8], "little"), int.from_bytes(raw[8:12], "little"),
                int.from_bytes(raw[12:14], "little"), int.from_bytes(raw[14:16], "little"))

    # -- the device's side of the rings -------------------------------------------
    def available(self) -> int:
        """How many chains the driver has made available and the device not taken."""
        pending = (self._u16(self.driver + 2) - self.last_avail) & 0xFFFF
        if pending > self.size:
            raise QueueError(f"available index runs {pending} ahead of the device, "
                             f"more than the queue size {self.size}")
        return pending

    def pop(self) -> Chain | None:
        """The next available chain, validated, or None when there is none."""
        if not self.ready or self.broken or not self.available():
            return None
        slot = self.last_avail % self.size
        head = self._u16(self.driver + 4 + 2 * slot)
        self.last_avail = (self.last_avail + 1) & 0xFFFF
        return self._walk(head)

    def _walk(self, head: int) -> Chain:
        if head >= self.size:
            raise QueueError(f"chain head {head} is outside the queue (size {self.size})")
        chain = Chain(head)
        table, limit, index = self.desc, self.size, head
        in_indirect = False
        seen = 0
        total = 0
        while True:
            seen += 1
            if seen > limit:
                raise QueueError(f"descriptor chain from {head} loops or is longer than "
                                 f"its table ({limit} entries)")
            address, length, flags, next_index = self._descriptor(table, index)
            if flags & DESC_F_INDIRECT:
                if in_indirect:
                    raise QueueError("an indirect table holds an indirect descriptor")
                if not self.indirect:
                    raise QueueError("indirect descriptor without VIRTIO_F_INDIRECT_DESC")
                if flags & DESC_F_NEXT:
                    raise QueueError("descriptor has both INDIRECT and NEXT")
                if not length or length % DESCRIPTOR_SIZE:
                    raise QueueError(f"indirect table length {length} is not a positive "
                                     "multiple of 16")
                count = length // DESCRIPTOR_SIZE
                if count > MAX_QUEUE_SIZE:
                    raise QueueError(f"indirect table of {count} descriptors")
                if not self.memory.is_mapped(address, length):
                    raise QueueError(f"indirect table at {address:#x} outside guest RAM")
                table, limit, index, in_indirect, seen = address, count, 0, True, 0
                continue
            total += length
            if total > MAX_CHAIN_BYTES:
                raise QueueError("descriptor chain describes more than 4 GiB")
            if length and not self.memory.is_mapped(address, length):
                raise QueueError(f"buffer at {address:#x}+{length:#x} outside guest RAM")
            writable = bool(flags & DESC_F_WRITE)
            if not writable and chain.writable:
                raise QueueError("a device-readable descriptor follows a writable one")
            (chain.writable if writable else chain.readable).append(
                Buffer(address, length, writable))
            if not flags & DESC_F_NEXT:
                return chain
            index = next_index
            if index >= limit:
                raise QueueError(f"next descriptor {index} outside a table of {limit}")

    def push(self, chain: Chain, written: int) -> None:
        """Put a finished chain on the used ring with the bytes the device wrote."""
        slot = self.used_idx % self.size
        entry = self.device + 4 + 8 * slot
        self._put(entry, 4, chain.head)
        self._put(entry + 4, 4, written)
        self.used_idx = (self.used_idx + 1) & 0xFFFF
        self._put(self.device + 2, 2, self.used_idx)  # after the entry (§2.7.8.2)

    def should_interrupt(self) -> bool:
        """After pushes: does the driver want an interrupt now (§2.7.7, §2.7.10)?"""
        old, new = self.signalled_used, self.used_idx
        if old == new:
            return False
        self.signalled_used = new
        if self.event_idx:
            used_event = self._u16(self.driver + 4 + 2 * self.size)
            return vring_need_event(used_event, new, old)
        return not self._u16(self.driver) & AVAIL_F_NO_INTERRUPT

    def publish_avail_event(self) -> None:
        """With EVENT_IDX: tell the driver which available index to notify at."""
        if self.event_idx:
            self._put(self.device + 4 + 8 * self.size, 2, self.last_avail)

    # -- reading and writing chain buffers --------------------------------------------
    def read_chain(self, chain: Chain, limit: int) -> bytes:
        """The readable part of a chain, at most `limit` bytes."""
        out = bytearray()
        for buffer in chain.readable:
            if len(out) >= limit:
                break
            take = min(buffer.length, limit - len(out))
            out += self.memory.read(buffer.address, take)
        return bytes(out)

    def write_chain(self, chain: Chain, data: bytes, offset: int = 0) -> int:
        """Write `data` into the writable buffers from byte `offset`; bytes written."""
        done = 0
        position = 0
        for buffer in chain.writable:
            if done >= len(data):
                break
            end = position + buffer.length
            if end > offset:
                start = max(offset - position, 0)
                take = min(buffer.length - start, len(data) - done)
                self.memory.write(buffer.address + start, data[done:done + take])
                done += take
            position = end
        return done

    # -- state ----------------------------------------------------------------------
    _FIELDS = ("size", "ready", "desc", "driver", "device", "last_avail", "used_idx",
               "signalled_used", "event_idx", "indirect", "broken")

    def get_state(self) -> dict:
        return {name: getattr(self, name) for name in self._FIELDS}

    def set_state(self, state: dict) -> None:
        for name in self._FIELDS:
            value = state[name]
            if isinstance(getattr(self, name), bool):
                if not isinstance(value, bool):
                    raise ValueError(f"virtqueue {name} must be true or false")
            elif not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"virtqueue {name} must be a non-negative integer")
            setattr(self, name, value)
        for name, bits in (("last_avail", 16), ("used_idx", 16), ("signalled_used", 16),
                           ("size", 32), ("desc", 64), ("driver", 64), ("device", 64)):
            if getattr(self, name) >> bits:
                raise ValueError(f"virtqueue {name} must fit in {bits} bits")
        if self.ready and not self.broken:
            try:  # a live queue must be one the device would have accepted
                self.check_layout()
            except QueueError as error:
                raise ValueError(f"virtqueue: {error}") from None
