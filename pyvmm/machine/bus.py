"""Port I/O and MMIO buses: address range -> device.

A device claims a range and is called with the offset into that range.
Unclaimed port reads return all ones (the ISA bus floats high), writes are
dropped, and both are counted under the device name "unclaimed".
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pyvmm.machine.hooks import HookKind, HookSet
from pyvmm.stats import Stats

UNCLAIMED = "unclaimed"


class PortDevice(Protocol):
    def io_read(self, offset: int, size: int) -> int: ...
    def io_write(self, offset: int, size: int, value: int) -> None: ...


class MmioDevice(Protocol):
    def mmio_read(self, offset: int, size: int) -> int: ...
    def mmio_write(self, offset: int, size: int, value: int) -> None: ...


@dataclass
class BusRange:
    base: int
    length: int
    device: object
    name: str

    @property
    def end(self) -> int:
        return self.base + self.length


class _Bus:
    """Shared range bookkeeping for both buses."""

    stats_category = "bus"

    def __init__(self, stats: Stats | None = None) -> None:
        self.stats = stats if stats is not None else Stats()
        self._ranges: list[BusRange] = []
        self._bases: list[int] = []
        # Set only while hooks of this bus's kind exist (see attach_hooks).
        self.hooks: HookSet | None = None

    hook_kind = HookKind.PORT

    def attach_hooks(self, hooks: HookSet) -> None:
        """Report accesses to `hooks` from now on, only while it holds hooks of our kind."""
        def update() -> None:
            self.hooks = hooks if hooks.active(self.hook_kind) else None
        hooks.listeners.append(update)
        update()

    def register(self, base: int, length: int, device: object, name: str) -> None:
        if length <= 0:
            raise ValueError("length must be positive")
        for existing in self._ranges:
            if base < existing.end and existing.base < base + length:
                raise ValueError(f"{name} at {base:#x}+{length} overlaps {existing.name}")
        index = bisect.bisect(self._bases, base)
        self._ranges.insert(index, BusRange(base, length, device, name))
        self._bases.insert(index, base)

    def unregister(self, base: int, device: object) -> None:
        """Remove `device`'s range starting at `base` (a PCI BAR being moved)."""
        for index, entry in enumerate(self._ranges):
            if entry.base == base and entry.device is device:
                del self._ranges[index]
                del self._bases[index]
                return
        raise ValueError(f"no range at {base:#x} for that device")

    def find(self, address: int) -> BusRange | None:
        index = bisect.bisect(self._bases, address) - 1
        if index >= 0:
            entry = self._ranges[index]
            if address < entry.end:
                return entry
        return None

    @property
    def ranges(self) -> list[BusRange]:
        return list(self._ranges)


class PortBus(_Bus):
    """The 64 KiB x86 I/O port space."""

    stats_category = "ports"

    def read(self, port: int, size: int) -> int:
        entry = self.find(port)
        if entry is None:
            self.stats.count("ports", UNCLAIMED)
            value = (1 << (8 * size)) - 1
        else:
            self.stats.count("ports", entry.name)
            value = entry.device.io_read(port - entry.base, size) & ((1 << (8 * size)) - 1)
        if self.hooks is not None:
            self.hooks.access(HookKind.PORT, port, size, value, False)
        return value

    def write(self, port: int, size: int, value: int) -> None:
        value &= (1 << (8 * size)) - 1
        if self.hooks is not None:
            self.hooks.access(HookKind.PORT, port, size, value, True)
        entry = self.find(port)
        if entry is None:
            self.stats.count("ports", UNCLAIMED)
            return
        self.stats.count("ports", entry.name)
        entry.device.io_write(port - entry.base, size, value)


class MmioBus(_Bus):
    """Guest-physical ranges not backed by RAM/ROM.

    An access that no device claims reads as all ones (open bus) and is
    counted; `on_unclaimed(address, size, is_write)`, when set, is told about
    it (the board uses that to stop a VM that pokes at unmapped memory).
    """

    stats_category = "mmio"
    hook_kind = HookKind.MMIO

    def __init__(self, stats: Stats | None = None) -> None:
        super().__init__(stats)
        self.on_unclaimed: Callable[[int, int, bool], None] | None = None

    def read(self, address: int, size: int) -> int:
        entry = self.find(address)
        if entry is None:
            self.stats.count("mmio", UNCLAIMED)
            if self.on_unclaimed is not None:
                self.on_unclaimed(address, size, False)
            value = (1 << (8 * size)) - 1
        else:
            self.stats.count("mmio", entry.name)
            value = entry.device.mmio_read(address - entry.base, size) & ((1 << (8 * size)) - 1)
        if self.hooks is not None:
            self.hooks.access(HookKind.MMIO, address, size, value, False)
        return value

    def write(self, address: int, size: int, value: int) -> None:
        value &= (1 << (8 * size)) - 1
        if self.hooks is not None:
            self.hooks.access(HookKind.MMIO, address, size, value, True)
        entry = self.find(address)
        if entry is None:
            self.stats.count("mmio", UNCLAIMED)
            if self.on_unclaimed is not None:
                self.on_unclaimed(address, size, True)
            return
        self.stats.count("mmio", entry.name)
        entry.device.mmio_write(address - entry.base, size, value)
