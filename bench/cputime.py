"""`python -m bench.cputime`: guest MIPS of bundled guests by this process's CPU time.

For comparing two versions of an engine on a shared, busy machine: CPU time
(`time.process_time`) moves less with other processes' load than wall time.
MIPS = the instructions the guest prints for n iterations / (CPU time of the
n run - CPU time of an n=0 run), each run in this process.  Not a substitute
for `python -m bench` (wall time, beside the reference emulators).
"""

from __future__ import annotations

import argparse
import re
import time

from pyvmm.console import OutputCapture
from pyvmm.vm import ImageSpec, VirtualMachine

INSTRUCTIONS = re.compile(rb"instructions=(\d+)")


def cpu_seconds(engine: str, guest: str, n: int) -> tuple[float, int]:
    """(CPU seconds, instructions the guest printed) of one whole run."""
    capture = OutputCapture()
    vm = VirtualMachine(engine=engine, serial_output=capture, debugcon_output=capture)
    try:
        vm.load(ImageSpec.bundled(guest, f"n={n}"))
        started = time.process_time()
        vm.run(600)
        seconds = time.process_time() - started
    finally:
        vm.close()
    match = INSTRUCTIONS.search(bytes(capture.data))
    if match is None:
        raise SystemExit(f"bench.cputime: {guest} printed no instruction count")
    return seconds, int(match.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cputime", description=__doc__)
    parser.add_argument("--engine", default="jit")
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("guests", nargs="+", help="e.g. bench-kloop bench-int")
    args = parser.parse_args(argv)
    for guest in args.guests:
        base, base_count = cpu_seconds(args.engine, guest, 0)
        seconds, count = cpu_seconds(args.engine, guest, args.n)
        mips = (count - base_count) / max(seconds - base, 1e-9) / 1e6
        print(f"{guest} {args.engine} n={args.n}: {mips:.2f} MIPS (CPU time)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
