"""Log every device access a guest makes: MMIO and port I/O, with the device.

    python examples/mmio_log.py [--guest demo] [--engine interp|jit|kvm] [--limit N]

MMIO and port hooks sit on the board's buses, so they work under every
engine, kvm included (each access there is a VM exit).
"""

from __future__ import annotations

import argparse
import collections
import io
import sys

from pyvmm.vm import ImageSpec, VirtualMachine


def log(guest: str, engine: str, cmdline: str, limit: int, out=sys.stdout) -> collections.Counter:  # noqa: ANN001
    vm = VirtualMachine(engine=engine, serial_output=io.BytesIO())
    vm.load(ImageSpec.bundled(guest, cmdline))
    per_device: collections.Counter = collections.Counter()
    shown = 0

    def device(bus, address: int) -> str:  # noqa: ANN001
        entry = bus.find(address)
        return entry.name if entry is not None else "unclaimed"

    def report(space: str, bus, address: int, size: int, value: int, is_write: bool) -> None:  # noqa: ANN001
        nonlocal shown
        name = device(bus, address)
        per_device[(space, name, "write" if is_write else "read")] += 1
        if shown < limit:
            shown += 1
            arrow = "<-" if is_write else "->"
            print(f"{space} {address:#x}/{size} {arrow} {value:#x}  ({name})", file=out)

    vm.hook_mmio(lambda vm, a, s, v, w: report("mmio", vm.board.mmio, a, s, v, w))
    vm.hook_port(lambda vm, a, s, v, w: report("port", vm.board.ports, a, s, v, w),
                 range(0x10000))
    reason = vm.run(timeout=300)
    print(f"stopped: {reason.describe()}", file=out)
    for (space, name, kind), n in sorted(per_device.items()):
        print(f"{space:4} {name:24} {kind:5} {n:>8}", file=out)
    vm.close()
    return per_device


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--guest", default="demo", help="a bundled guest (pyvmm guests)")
    parser.add_argument("--cmdline", default="work=2", help="the guest's command line")
    parser.add_argument("--engine", default="interp")
    parser.add_argument("--limit", type=int, default=40, help="accesses printed one by one")
    args = parser.parse_args()
    log(args.guest, args.engine, args.cmdline, args.limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
