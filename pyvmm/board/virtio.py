"""The PC's virtio-mmio slots: which virtio devices a VM has, where, on which IRQ.

Each configured device becomes one row of the board's device table: a
0x200-byte virtio-mmio window (Virtio 1.2 §4.2.2) at VIRTIO_MMIO_BASE +
n * WINDOW and an ISA IRQ from VIRTIO_MMIO_IRQS, so that a guest still using
the 8259 pair (no APIC) takes its interrupts too.  Linux finds them from
`virtio_mmio.device=<size>@<base>:<irq>` on its command line, which the
Linux loader appends (`cmdline_fragments`).

A device kind is one row of KINDS: how to build it from its spec.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyvmm.board.table import DeviceRow, Range
from pyvmm.devices.virtio.blk import RawImage, VirtioBlock
from pyvmm.devices.virtio.console import VirtioConsole
from pyvmm.devices.virtio.device import VirtioDevice
from pyvmm.devices.virtio.mmio import WINDOW, VirtioMmio, kernel_cmdline_fragment
from pyvmm.devices.virtio.rng import VirtioRng
from pyvmm.errors import ConfigError

if TYPE_CHECKING:
    from pyvmm.board.pc import PcBoard

# Below the I/O APIC (0xFEC00000), in the hole between RAM and the BIOS ROM;
# QEMU's microvm puts its virtio-mmio windows at the same address.
VIRTIO_MMIO_BASE = 0xFEB00000
# ISA IRQs no PC device of this board uses (IRQ 9 is the ACPI SCI, 12 the
# PS/2 mouse, 14/15 the IDE channels).
VIRTIO_MMIO_IRQS = (5, 10, 11, 7, 6, 3)


@dataclass(frozen=True)
class VirtioSpec:
    """One virtio device of a VM, as the command line or a snapshot gives it."""

    kind: str  # a key of KINDS
    options: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"kind": self.kind, "options": dict(self.options)}

    @classmethod
    def from_json(cls, data: Any) -> VirtioSpec:  # noqa: ANN401 - checked here
        if not isinstance(data, dict) or data.get("kind") not in KINDS or \
                not isinstance(data.get("options", {}), dict):
            raise ConfigError(f"not a virtio device description: {data!r}")
        return cls(data["kind"], {str(k): str(v) for k, v in data.get("options", {}).items()})


def _block(board: PcBoard, spec: VirtioSpec) -> VirtioDevice:
    options = spec.options
    path = Path(options["file"])
    image = RawImage(path, readonly=options.get("readonly", "off") == "on",
                     cache=options.get("cache", "writeback"))
    return VirtioBlock(board.memory, image, serial=options.get("serial", path.name),
                       stats=board.stats)


def _entropy(board: PcBoard, spec: VirtioSpec) -> VirtioDevice:
    return VirtioRng(board.memory, board.stats)


def _console(board: PcBoard, spec: VirtioSpec) -> VirtioDevice:
    return VirtioConsole(board.memory, board.serial_output, board.stats)


# kind -> how to build the device model (the transport is the same for all).
KINDS: dict[str, Callable[[PcBoard, VirtioSpec], VirtioDevice]] = {
    "blk": _block,
    "rng": _entropy,
    "console": _console,
}


def slot(index: int) -> tuple[int, int]:
    """(MMIO base, ISA IRQ) of virtio-mmio slot `index`."""
    if not 0 <= index < len(VIRTIO_MMIO_IRQS):
        raise ConfigError(f"at most {len(VIRTIO_MMIO_IRQS)} virtio devices, not {index + 1}")
    return VIRTIO_MMIO_BASE + index * WINDOW, VIRTIO_MMIO_IRQS[index]


def virtio_rows(specs: tuple[VirtioSpec, ...]) -> tuple[DeviceRow, ...]:
    """One device-table row per configured device, in slot order."""
    rows = []
    for index, spec in enumerate(specs):
        base, irq = slot(index)
        name = f"virtio{index}"

        def build(board: PcBoard, lines: list, spec: VirtioSpec = spec) -> VirtioMmio:
            return VirtioMmio(KINDS[spec.kind](board, spec), *lines)

        rows.append(DeviceRow(name, name.replace("-", "_"), build,
                              mmio=(Range(base, WINDOW, f"virtio-{spec.kind}"),), irqs=(irq,)))
    return tuple(rows)


def cmdline_fragments(specs: tuple[VirtioSpec, ...]) -> list[str]:
    """What a Linux kernel needs on its command line to find every slot."""
    return [kernel_cmdline_fragment(*slot(index)) for index in range(len(specs))]
