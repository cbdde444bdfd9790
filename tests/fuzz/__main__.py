"""`python -m tests.fuzz [--cases N] [--seed S] [--only TARGET ...]`: run the fuzz
targets and print what was tried; exit status 1 if any case failed."""

from __future__ import annotations

import argparse
import sys
import time
import traceback

from tests.fuzz.targets import COUNTS, TARGETS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    parser.add_argument("--cases", type=int, default=200, help="cases per target")
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: random)")
    parser.add_argument("--only", nargs="+", choices=sorted(TARGETS), help="targets to run")
    args = parser.parse_args(argv)
    failed = []
    for name in args.only or list(TARGETS):
        started = time.monotonic()
        try:
            TARGETS[name](args.cases, args.seed if args.seed is not None else int(time.time()))
            verdict = "ok"
        except Exception:  # noqa: BLE001 - report every target, then fail
            traceback.print_exc()
            failed.append(name)
            verdict = "FAILED"
        print(f"{name:<16} {args.cases} cases  {time.monotonic() - started:7.1f} s  {verdict}",
              flush=True)
    for key, value in sorted(COUNTS.items()):
        print(f"  {key:<24} {value}")
    print(f"failures: {len(failed)}" + (f" ({', '.join(failed)})" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
