"""What instrumentation hooks cost: `python -m bench.hooks [--n N] [--repeat K]`.

Runs the bench-int guest (integer and branch loop in ring 3, paging on) under
interp and jit with:

- no hook;
- a code hook and a memory-read hook on a range the guest never touches
  (the JIT still translates every block: only pages a hook covers lose the
  fast paths);
- a port hook on a port the guest never uses;
- a code hook over the whole address space (every instruction calls Python);

and prints guest MIPS (instructions / wall seconds of `VirtualMachine.run`,
best of K) with each configuration's ratio to the no-hook run of the same
engine, measured side by side in this process.
"""

from __future__ import annotations

import argparse
import io
import sys
import time

from pyvmm.vm import ImageSpec, VirtualMachine

UNUSED = (0x7FFF_0000_0000, 0x7FFF_0000_FFFF)  # linear range the guest never maps


def _nothing(*args: object) -> None:
    return None


CONFIGS = {
    "no hooks": lambda vm: None,
    "code+mem hooks elsewhere": lambda vm: (vm.hook_code(_nothing, *UNUSED),
                                            vm.hook_mem_read(_nothing, *UNUSED)),
    "port hook, unused port": lambda vm: vm.hook_port(_nothing, [0x2F8]),
    "code hook on everything": lambda vm: vm.hook_code(_nothing),
}


def measure(engine: str, config: str, n: int) -> tuple[float, int]:
    vm = VirtualMachine(engine=engine, serial_output=io.BytesIO())
    vm.load(ImageSpec.bundled("bench-int", f"n={n}"))
    CONFIGS[config](vm)
    start = time.perf_counter()
    reason = vm.run(timeout=600)
    wall = time.perf_counter() - start
    instructions = vm.stats.instructions or 0
    vm.close()
    if reason.exit_code != 1 and reason.guest_status is None:
        raise SystemExit(f"{engine}/{config}: {reason.describe()}")
    return wall, instructions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20000, help="bench-int iterations")
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell; the best counts")
    parser.add_argument("--engines", default="interp,jit")
    args = parser.parse_args(argv)
    print(f"bench-int n={args.n}, best of {args.repeat}")
    print(f"{'engine':8} {'configuration':28} {'instructions':>12} {'MIPS':>7} {'ratio':>6}")
    for engine in args.engines.split(","):
        base = None
        for config in CONFIGS:
            n = args.n if config != "code hook on everything" else max(1, args.n // 10)
            best = min((measure(engine, config, n) for _ in range(args.repeat)),
                       key=lambda r: r[0] / max(1, r[1]))
            mips = best[1] / best[0] / 1e6
            base = base or mips
            print(f"{engine:8} {config:28} {best[1]:>12} {mips:>7.3f} {mips / base:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
