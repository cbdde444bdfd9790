"""The PC's virtio devices: which a VM has, on which transport, where, on which IRQ.

Each configured device becomes one row of the board's device table, on one
of two transports (`VirtioSpec.transport`):
- "pci", the modern virtio-pci function (Virtio 1.2 §4.1,
  pyvmm/devices/virtio/pci.py) in PCI slot VIRTIO_PCI_FIRST_SLOT + n of
  bus 0: its BAR is placed by the firmware or the guest, its INTA# drives
  the PIIX3 PIRQ of its slot (board/irq_routing.pci_pirq), its MSI-X
  messages go to the board's `deliver_msi`;
- "mmio", a 0x200-byte virtio-mmio window (§4.2.2) at VIRTIO_MMIO_BASE +
  n * WINDOW and an ISA IRQ from VIRTIO_MMIO_IRQS, so that a guest still
  using the 8259 pair (no APIC) takes its interrupts too.  Linux finds them
  from `virtio_mmio.device=<size>@<base>:<irq>` on its command line, which
  the Linux loader appends (`cmdline_fragments`).

A device kind is one row of KINDS: how to build it from its spec; either
transport carries any kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyvmm.board.irq_routing import pci_pirq
from pyvmm.board.table import DeviceRow, Range
from pyvmm.devices.virtio.blk import RawImage, VirtioBlock
from pyvmm.devices.virtio.console import VirtioConsole
from pyvmm.devices.virtio.device import VirtioDevice
from pyvmm.devices.virtio.mmio import WINDOW, VirtioMmio, kernel_cmdline_fragment
from pyvmm.devices.virtio.net import VirtioNet
from pyvmm.devices.virtio.pci import VirtioPci
from pyvmm.devices.virtio.rng import VirtioRng
from pyvmm.errors import ConfigError
from pyvmm.net.netdev import Netdev, NicRequest, default_mac, parse_mac, resolve_nics

if TYPE_CHECKING:
    from pyvmm.board.pc import PcBoard

# Below the I/O APIC (0xFEC00000), in the hole between RAM and the BIOS ROM;
# QEMU's microvm puts its virtio-mmio windows at the same address.
VIRTIO_MMIO_BASE = 0xFEB00000
# ISA IRQs no PC device of this board uses (IRQ 9 is the ACPI SCI, 12 the
# PS/2 mouse, 14/15 the IDE channels).
VIRTIO_MMIO_IRQS = (5, 10, 11, 7, 6, 3)
# PCI bus 0 slots 0 and 1 are the i440FX and the PIIX3/PIIX4; QEMU's pc machine
# without a VGA card puts its first -device in slot 2 too.
VIRTIO_PCI_FIRST_SLOT = 2
VIRTIO_PCI_SLOTS = 30
TRANSPORTS = ("pci", "mmio")


@dataclass(frozen=True)
class VirtioSpec:
    """One virtio device of a VM, as the command line or a snapshot gives it."""

    kind: str  # a key of KINDS
    options: dict[str, str] = field(default_factory=dict)
    transport: str = "pci"  # one of TRANSPORTS

    def to_json(self) -> dict:
        return {"kind": self.kind, "options": dict(self.options), "transport": self.transport}

    @classmethod
    def from_json(cls, data: Any) -> VirtioSpec:  # noqa: ANN401 - checked here
        # Snapshots from before virtio-pci name no transport: theirs was MMIO.
        if not isinstance(data, dict) or data.get("kind") not in KINDS or \
                not isinstance(data.get("options", {}), dict) or \
                data.get("transport", "mmio") not in TRANSPORTS:
            raise ConfigError(f"not a virtio device description: {data!r}")
        return cls(data["kind"], {str(k): str(v) for k, v in data.get("options", {}).items()},
                   data.get("transport", "mmio"))


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


def _network(board: PcBoard, spec: VirtioSpec) -> VirtioDevice:
    """A NIC with no backend yet: the VM plugs in the one its options name
    (pyvmm/net/network.py); until then what it sends is dropped."""
    if "mac" not in spec.options:
        raise ConfigError("a virtio-net NIC needs its MAC (with_default_macs)")
    return VirtioNet(board.memory, parse_mac(spec.options["mac"]), stats=board.stats)


# kind -> how to build the device model (the transport is the same for all).
KINDS: dict[str, Callable[[PcBoard, VirtioSpec], VirtioDevice]] = {
    "blk": _block,
    "rng": _entropy,
    "console": _console,
    "net": _network,
}


def virtio_specs(drives: list[VirtioSpec], devices: list[VirtioSpec | NicRequest],
                 netdevs: list[Netdev], nics: list[NicRequest]) -> tuple[VirtioSpec, ...]:
    """A VM's virtio devices in command-line order (disks, --device, then --nic),
    each NIC's netdev looked up (pyvmm/net/netdev.py `resolve_nics`)."""
    requests = [d for d in devices if isinstance(d, NicRequest)] + list(nics)
    resolved = iter(resolve_nics(list(netdevs), requests))
    specs = list(drives)
    for device in devices:
        if isinstance(device, NicRequest):
            transport, options = next(resolved)
            specs.append(VirtioSpec("net", options, transport))
        else:
            specs.append(device)
    specs.extend(VirtioSpec("net", options, transport) for transport, options in resolved)
    return tuple(specs)


def with_default_macs(specs: tuple[VirtioSpec, ...], vm_id: int) -> tuple[VirtioSpec, ...]:
    """Every NIC without mac= gets the default for its VM and its place among
    the VM's NICs (pyvmm/net/netdev.py `default_mac`); a MAC given twice is refused."""
    out, macs = [], set()
    for spec in specs:
        if spec.kind == "net":
            if "mac" not in spec.options:
                nics = sum(s.kind == "net" for s in out)
                spec = VirtioSpec(spec.kind, {**spec.options, "mac": default_mac(vm_id, nics)},
                                  spec.transport)
            if spec.options["mac"] in macs:
                raise ConfigError(f"two NICs have mac={spec.options['mac']}")
            macs.add(spec.options["mac"])
        out.append(spec)
    return tuple(out)


def slot(index: int) -> tuple[int, int]:
    """(MMIO base, ISA IRQ) of virtio-mmio slot `index`."""
    if not 0 <= index < len(VIRTIO_MMIO_IRQS):
        raise ConfigError(f"at most {len(VIRTIO_MMIO_IRQS)} virtio-mmio devices, "
                          f"not {index + 1}")
    return VIRTIO_MMIO_BASE + index * WINDOW, VIRTIO_MMIO_IRQS[index]


def pci_slot(index: int) -> int:
    """The PCI bus 0 device number of the `index`th virtio-pci function."""
    if not 0 <= index < VIRTIO_PCI_SLOTS:
        raise ConfigError(f"at most {VIRTIO_PCI_SLOTS} virtio-pci devices, not {index + 1}")
    return VIRTIO_PCI_FIRST_SLOT + index


def _mmio_row(name: str, spec: VirtioSpec, index: int) -> DeviceRow:
    base, irq = slot(index)

    def build(board: PcBoard, lines: list) -> VirtioMmio:
        return VirtioMmio(KINDS[spec.kind](board, spec), *lines, base=base)

    return DeviceRow(name, name, build, mmio=(Range(base, WINDOW, f"virtio-{spec.kind}"),),
                     irqs=(irq,))


def _pci_row(name: str, spec: VirtioSpec, index: int) -> DeviceRow:
    device_number = pci_slot(index)

    def build(board: PcBoard, lines: list) -> VirtioPci:
        intx = board.wiring.pirq_line(pci_pirq(device_number, 0))  # INTA#
        return VirtioPci(KINDS[spec.kind](board, spec), intx, board.deliver_msi)

    return DeviceRow(name, name, build, pci=(device_number, 0))


# transport -> how its row is made.
_ROWS: dict[str, Callable[[str, VirtioSpec, int], DeviceRow]] = {
    "mmio": _mmio_row, "pci": _pci_row}


def virtio_rows(specs: tuple[VirtioSpec, ...]) -> tuple[DeviceRow, ...]:
    """One device-table row per configured device ("virtio<n>" in command-line
    order), each transport's slots taken in that order."""
    rows, taken = [], dict.fromkeys(TRANSPORTS, 0)
    for index, spec in enumerate(specs):
        rows.append(_ROWS[spec.transport](f"virtio{index}", spec, taken[spec.transport]))
        taken[spec.transport] += 1
    return tuple(rows)


def cmdline_fragments(specs: tuple[VirtioSpec, ...]) -> list[str]:
    """What a Linux kernel needs on its command line to find every virtio-mmio slot
    (virtio-pci functions are found by enumerating the bus)."""
    count = sum(spec.transport == "mmio" for spec in specs)
    return [kernel_cmdline_fragment(*slot(index)) for index in range(count)]
