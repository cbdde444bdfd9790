"""The shape of a board's device table: one row per device.

A row says everything the board needs to wire one device: how to build it,
which port and MMIO ranges it answers (and which part of it answers each),
which interrupt lines it drives, its PCI slot, and whether its state is
saved (rows are saved in table order: the restore order).  The board's
registration, the `--stats` range names and the snapshot membership all
come from its table, so adding a device is adding one row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Range:
    """A port or MMIO range: `length` units at `base`, named `name` in `--stats`.

    `part` picks what answers the range from the row's device (the i8259
    pair's master or slave, fw_cfg's DMA register); None: the device itself.
    """

    base: int
    length: int
    name: str
    part: Callable[[Any], object] | None = None


@dataclass(frozen=True)
class DeviceRow:
    """One device of a board.

    `build(board, lines)` returns the device; `lines` are new sources on the
    interrupt lines `irqs`, in that order.  `attr` is the board attribute
    that holds it; `name` its snapshot key.  `pci` is (device, function) on
    PCI bus 0 for a PCI function.  A machine reset returns every device to
    the state it was built in, except those that `survive_reset` (the
    battery-backed RTC/NVRAM).
    """

    name: str
    attr: str
    build: Callable[[Any, list[Any]], object]
    ports: tuple[Range, ...] = ()
    mmio: tuple[Range, ...] = ()
    irqs: tuple[int, ...] = ()
    pci: tuple[int, int] | None = None
    saved: bool = True
    survive_reset: bool = False
