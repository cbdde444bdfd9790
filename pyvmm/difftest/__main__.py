"""python -m pyvmm.difftest: compare an engine with the real CPU on random blocks."""

from __future__ import annotations

import argparse
import sys

from pyvmm.difftest.generator import FAMILIES, MODE_NAMES
from pyvmm.difftest.runner import (
    ENGINES,
    load_engine,
    make_engine_side,
    make_native_self_side,
    run_cases,
)
from pyvmm.oracle.build import BuildError
from pyvmm.oracle.native import NativeRunner, OracleError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pyvmm.difftest", description=__doc__)
    parser.add_argument("--mode", choices=(*MODE_NAMES, "all"), default="64",
                        help="32: the engine in legacy protected mode; compat: in IA-32e "
                             "compatibility mode (the native side runs both as compat)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--length", type=int, default=8, help="instruction groups per block")
    parser.add_argument("--index", type=int, default=None, help="run only this block index")
    parser.add_argument("--engine", choices=(*ENGINES, "native"), default="interp",
                        help="'native' runs every block natively twice (harness self-check)")
    parser.add_argument("--families", default="",
                        help="comma-separated instruction families to draw from "
                             f"(default all: {','.join(FAMILIES)})")
    parser.add_argument("--guard", action="store_true",
                        help="put some memory operands on the unmapped page after the data "
                             "area (32/64-bit): compares the #PF and its W/R bit")
    parser.add_argument("--wrap", action="store_true",
                        help="make address arithmetic wrap at the address size: an index "
                             "register of 2^32 - k (32-bit addressing, 67h in 64-bit mode), "
                             "16-bit offsets past 0xFFFF, disp8 at -0x80 and 0x7F")
    parser.add_argument("--max-reports", type=int, default=20)
    args = parser.parse_args(argv)

    try:
        runner = NativeRunner()
    except (BuildError, OracleError) as error:
        print(f"cannot start the native oracle: {error}", file=sys.stderr)
        return 2
    with runner:
        if args.engine == "native":
            other = make_native_self_side(runner)
        else:
            try:
                other = make_engine_side(load_engine(args.engine))
            except ImportError as error:
                print(f"engine {args.engine!r} is not available: {error}", file=sys.stderr)
                return 2
        modes = tuple(MODE_NAMES) if args.mode == "all" else (args.mode,)
        indices = [args.index] if args.index is not None else range(args.count)
        failed = False
        shown = 0
        for mode in modes:
            ok, reason = runner.supports(MODE_NAMES[mode][0])
            if not ok:
                print(f"mode {mode}: skipped: {reason}")
                continue
            families = tuple(f for f in args.families.split(",") if f) or None  # "x87": x87gen
            summary = run_cases(runner, other, mode, args.seed, indices, args.length, families,
                                args.guard, args.wrap)
            for disagreement in summary.disagreements:
                if shown < args.max_reports:
                    print(disagreement.report())
                    print()
                shown += 1
            for suspect, count in summary.suspects():
                print(f"  {count:5d}  {suspect}")
            print(summary.line())
            failed |= bool(summary.disagreements)
        if shown > args.max_reports:
            print(f"({shown - args.max_reports} more disagreements not shown)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
