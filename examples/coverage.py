"""Which basic blocks a guest executed, and how often: a table, or a PNG.

    python examples/coverage.py [--guest demo] [--engine interp|jit] [--png FILE]

A block hook counts each block start (linear address).  The JIT reports its
translation blocks with their size in bytes; the interpreter starts a block
wherever execution does not fall through (docs/HOOKS.md).
"""

from __future__ import annotations

import argparse
import collections
import io
import sys

from pyvmm.vm import ImageSpec, VirtualMachine


def collect(guest: str, engine: str, cmdline: str = "") -> tuple[collections.Counter, str]:
    vm = VirtualMachine(engine=engine, serial_output=io.BytesIO())
    vm.load(ImageSpec.bundled(guest, cmdline))
    counts: collections.Counter = collections.Counter()

    def on_block(vm: VirtualMachine, address: int, size: int) -> None:
        counts[address] += 1

    vm.hook_block(on_block)
    reason = vm.run(timeout=300)
    vm.close()
    return counts, reason.describe()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--guest", default="demo", help="a bundled guest (pyvmm guests)")
    parser.add_argument("--cmdline", default="work=2", help="the guest's command line")
    parser.add_argument("--engine", default="interp", choices=("interp", "jit"))
    parser.add_argument("--top", type=int, default=20, help="rows in the table")
    parser.add_argument("--png", help="also plot executions per block to this PNG file")
    args = parser.parse_args()
    counts, stopped = collect(args.guest, args.engine, args.cmdline)
    print(f"{len(counts)} blocks, {sum(counts.values())} block executions; {stopped}")
    print(f"{'address':>18}  {'executions':>10}")
    for address, n in counts.most_common(args.top):
        print(f"{address:#18x}  {n:>10}")
    if args.png:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        addresses = sorted(counts)
        fig, ax = plt.subplots(figsize=(10, 4))
        ax.bar(range(len(addresses)), [counts[a] for a in addresses])
        ax.set_yscale("log")
        ax.set_xlabel("block (by address)")
        ax.set_ylabel("executions")
        ax.set_title(f"{args.guest} under {args.engine}: {len(counts)} blocks")
        fig.tight_layout()
        fig.savefig(args.png)
        print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
