"""Guest physical memory: RAM and ROM regions backed by anonymous mmaps.

KVM maps the very same host pages into the guest (KVM_SET_USER_MEMORY_REGION
takes a host virtual address), so every engine sees one copy of guest RAM.
Addresses that fall in no region are holes: the board routes them to the MMIO
bus.  Every access through this class is bounds-checked.
"""

from __future__ import annotations

import ctypes
import mmap
import struct
from collections.abc import Callable
from dataclasses import dataclass

from pyvmm.errors import GuestMemoryError

PAGE_SIZE = 4096


@dataclass
class MemoryRegion:
    """One contiguous guest-physical range backed by host memory."""

    name: str
    gpa: int
    size: int
    backing: mmap.mmap
    offset: int = 0
    readonly: bool = False

    @property
    def end(self) -> int:
        return self.gpa + self.size

    def contains(self, gpa: int, length: int = 1) -> bool:
        return self.gpa <= gpa and gpa + length <= self.gpa + self.size

    @property
    def host_address(self) -> int:
        """Host virtual address of this region's first byte (for KVM slots)."""
        base = ctypes.addressof(ctypes.c_char.from_buffer(self.backing))
        return base + self.offset


def allocate_backing(size: int) -> mmap.mmap:
    """An anonymous, private, zero-filled, page-aligned host mapping."""
    if size <= 0 or size % PAGE_SIZE:
        raise ValueError(f"backing size must be a positive multiple of {PAGE_SIZE}: {size}")
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                     prot=mmap.PROT_READ | mmap.PROT_WRITE)


class GuestMemory:
    """The set of RAM/ROM regions of one VM, with bounds-checked access.

    Guest writes to ROM are dropped (as on a real PC); loaders write ROM
    contents with `load_rom_bytes`.
    """

    def __init__(self) -> None:
        self.regions: list[MemoryRegion] = []
        self._backings: list[mmap.mmap] = []
        # Called as observer(gpa, length) after every write made through this
        # object (devices, hypercalls, loaders): an engine that caches decoded
        # guest code uses it to drop what such a write made stale.  Engines'
        # own CPU writes do not come through here.
        self.write_observers: list[Callable[[int, int], None]] = []
        # Bumped by every add_region/remove_region: KVM re-syncs its slots when
        # it changes (chipset remapping, e.g. the i440FX PAM registers).
        self.layout_version = 0

    # -- layout -------------------------------------------------------------
    def add_region(self, name: str, gpa: int, size: int, backing: mmap.mmap | None = None,
                   offset: int = 0, readonly: bool = False) -> MemoryRegion:
        if gpa % PAGE_SIZE or size % PAGE_SIZE or size <= 0:
            raise ValueError(f"region {name} must be page-aligned: gpa={gpa:#x} size={size:#x}")
        for other in self.regions:
            if gpa < other.end and other.gpa < gpa + size:
                raise ValueError(f"region {name} overlaps {other.name}")
        if backing is None:
            backing = allocate_backing(size)
            self._backings.append(backing)
            offset = 0
        if offset + size > len(backing):
            raise ValueError(f"region {name} exceeds its backing")
        region = MemoryRegion(name, gpa, size, backing, offset, readonly)
        self.regions.append(region)
        self.regions.sort(key=lambda r: r.gpa)
        self.layout_version += 1
        for observer in self.write_observers:
            observer(gpa, size)
        return region

    def remove_region(self, name: str) -> MemoryRegion:
        """Unmap region `name` (its backing stays allocated).  Both this and
        add_region tell the write observers that the range changed, since what
        the guest sees there did."""
        for region in self.regions:
            if region.name == name:
                self.regions.remove(region)
                self.layout_version += 1
                for observer in self.write_observers:
                    observer(region.gpa, region.size)
                return region
        raise KeyError(name)

    def region_at(self, gpa: int, length: int = 1) -> MemoryRegion | None:
        for region in self.regions:
            if region.contains(gpa, length):
                return region
        return None

    def is_mapped(self, gpa: int, length: int = 1) -> bool:
        return self.region_at(gpa, length) is not None

    @property
    def ram_size(self) -> int:
        return sum(r.size for r in self.regions if not r.readonly)

    # -- access -------------------------------------------------------------
    def _locate(self, gpa: int, length: int) -> MemoryRegion:
        region = self.region_at(gpa, length)
        if region is None:
            raise GuestMemoryError(gpa, length)
        return region

    def read(self, gpa: int, length: int) -> bytes:
        region = self._locate(gpa, length)
        start = region.offset + gpa - region.gpa
        return region.backing[start:start + length]

    def write(self, gpa: int, data: bytes) -> None:
        """A guest (or device DMA) write: dropped silently on ROM."""
        region = self._locate(gpa, len(data))
        if region.readonly:
            return
        start = region.offset + gpa - region.gpa
        region.backing[start:start + len(data)] = data
        for observer in self.write_observers:
            observer(gpa, len(data))

    def load_rom_bytes(self, gpa: int, data: bytes) -> None:
        """A loader's write, allowed into ROM as well as RAM."""
        region = self._locate(gpa, len(data))
        start = region.offset + gpa - region.gpa
        region.backing[start:start + len(data)] = data
        for observer in self.write_observers:
            observer(gpa, len(data))

    def read_int(self, gpa: int, size: int) -> int:
        return int.from_bytes(self.read(gpa, size), "little")

    def write_int(self, gpa: int, size: int, value: int) -> None:
        self.write(gpa, (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little"))

    def read_u8(self, gpa: int) -> int:
        return self.read(gpa, 1)[0]

    def read_u16(self, gpa: int) -> int:
        return struct.unpack("<H", self.read(gpa, 2))[0]

    def read_u32(self, gpa: int) -> int:
        return struct.unpack("<I", self.read(gpa, 4))[0]

    def read_u64(self, gpa: int) -> int:
        return struct.unpack("<Q", self.read(gpa, 8))[0]

    def write_u8(self, gpa: int, value: int) -> None:
        self.write(gpa, bytes((value & 0xFF,)))

    def write_u16(self, gpa: int, value: int) -> None:
        self.write(gpa, struct.pack("<H", value & 0xFFFF))

    def write_u32(self, gpa: int, value: int) -> None:
        self.write(gpa, struct.pack("<I", value & 0xFFFFFFFF))

    def write_u64(self, gpa: int, value: int) -> None:
        self.write(gpa, struct.pack("<Q", value & 0xFFFFFFFFFFFFFFFF))

    def close(self) -> None:
        self.regions.clear()
        for backing in self._backings:
            try:
                backing.close()
            except BufferError:
                pass  # a ctypes view (KVM slot) still points at it; freed with the process
        self._backings.clear()
