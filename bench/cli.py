"""`python -m bench`: every benchmark guest under every engine and reference runner."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.bochs import BochsRunner
from bench.results import RunnerInfo, Session, format_markdown, format_text, machine_info
from bench.results import update_doc as updated_doc_text
from bench.runners import PyvmmRunner, QemuRunner, Runner
from bench.suite import BENCHES, measure

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
DOC = REPO / "docs" / "PERFORMANCE.md"
REFERENCES = ("qemu-tcg", "qemu-kvm", "bochs")
TARGET_SECONDS = 2.0
QUICK_TARGET_SECONDS = 0.3
STARTUP_MULTIPLE = 3.0          # full runs: the loop lasts >= 3x the fixed cost (suite.measure)


def all_runner_names() -> list[str]:
    from pyvmm.engines.registry import ENGINES

    return [*ENGINES, *REFERENCES]


def make_runner(name: str) -> Runner:
    if name == "bochs":
        return BochsRunner()
    if name.startswith("qemu-"):
        return QemuRunner(name.removeprefix("qemu-"))
    return PyvmmRunner(name)


def split_list(text: str | None, allowed: list[str], what: str) -> list[str]:
    """A comma-separated filter, in the order given; every name must be known."""
    if not text:
        return list(allowed)
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in allowed]
    if unknown:
        raise SystemExit(f"bench: unknown {what} {', '.join(unknown)} "
                         f"(choose from {', '.join(allowed)})")
    return names


def _positive(kind: type):  # noqa: ANN202 - an argparse type factory
    def parse(text: str):  # noqa: ANN202
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
        if not value > 0 or value == float("inf"):
            raise argparse.ArgumentTypeError("must be a positive, finite number")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run pyvmm's benchmark guests (bench-int, bench-mem, bench-sys, "
                    "bench-io) under every pyvmm engine and, where installed, QEMU "
                    "(TCG and KVM, -cpu qemu64) and Bochs; print MIPS and ratios against "
                    "the fastest reference measured in the same run; write JSON.")
    parser.add_argument("--quick", action="store_true",
                        help=f"short smoke run (~{QUICK_TARGET_SECONDS} s per measurement); "
                             "writes bench/results/quick.json and leaves the docs alone")
    parser.add_argument("--only", metavar="LIST", help=f"benchmarks, e.g. int,io "
                        f"(default: {','.join(BENCHES)})")
    parser.add_argument("--engines", metavar="LIST",
                        help="runners: pyvmm engines and references, e.g. kvm,qemu-kvm "
                             "(default: all; see --list)")
    parser.add_argument("--target", type=_positive(float), metavar="SECONDS",
                        help=f"loop time to aim for per measurement (default {TARGET_SECONDS}, "
                             f"--quick {QUICK_TARGET_SECONDS})")
    parser.add_argument("--repeat", type=_positive(int), default=1, metavar="K",
                        help="time the final n K times and keep the fastest (default 1)")
    parser.add_argument("--timeout", type=_positive(float), default=300.0, metavar="SECONDS",
                        help="limit per run (default 300)")
    parser.add_argument("--json", type=Path, metavar="FILE",
                        help="where to write the results (default bench/results/latest.json, "
                             "--quick: bench/results/quick.json)")
    parser.add_argument("--doc", type=Path, metavar="FILE",
                        help="update this file's benchmark table (default for full runs: "
                             "docs/PERFORMANCE.md)")
    parser.add_argument("--no-doc", action="store_true", help="do not touch any document")
    parser.add_argument("--from-json", type=Path, metavar="FILE",
                        help="run nothing: print (and with --doc, write) the tables of "
                             "an earlier run's JSON")
    parser.add_argument("--list", action="store_true",
                        help="list the runners and whether each can run here, then exit")
    return parser


def write_doc(doc: Path, session: Session) -> None:
    try:
        old = doc.read_text() if doc.exists() else None
        doc.write_text(updated_doc_text(old, format_markdown(session)))
    except OSError as error:
        raise SystemExit(f"bench: cannot update {doc}: {error.strerror}") from None
    print(f"bench: table updated in {doc}", file=sys.stderr)


def render_only(args: argparse.Namespace) -> int:
    try:
        session = Session.from_json(json.loads(args.from_json.read_text()))
    except OSError as error:
        raise SystemExit(f"bench: cannot read {args.from_json}: {error.strerror}") from None
    except (ValueError, KeyError, TypeError) as error:
        raise SystemExit(f"bench: {args.from_json} is not a bench results file "
                         f"({type(error).__name__}: {error})") from None
    print(format_text(session))
    if args.doc is not None and not args.no_doc:
        write_doc(args.doc, session)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.from_json:
        return render_only(args)
    names = split_list(args.engines, all_runner_names(), "runner(s)")
    benches = split_list(args.only, list(BENCHES), "benchmark(s)")
    target = args.target or (QUICK_TARGET_SECONDS if args.quick else TARGET_SECONDS)
    runners = [make_runner(name) for name in names]
    infos = []
    for runner in runners:
        available, reason = runner.availability()
        infos.append(RunnerInfo(runner.name, runner.kind, available, reason,
                                runner.version() if available else ""))
    if args.list:
        for info in infos:
            state = "available" if info.available else f"skipped: {info.reason}"
            print(f"{info.name:<10} {info.kind:<10} {state}  {info.version}".rstrip())
        return 0

    from pyvmm.guests import guest_path

    session = Session(
        command=" ".join(["python -m bench", *argv]), machine=machine_info(),
        settings={"benchmarks": benches, "runners": names, "target_seconds": target,
                  "repeat": args.repeat, "quick": args.quick, "timeout": args.timeout},
        runners=infos)
    usable = [(runner, info) for runner, info in zip(runners, infos, strict=True)
              if info.available]
    for info in infos:
        if not info.available:
            print(f"bench: skipping {info.name}: {info.reason}", file=sys.stderr)
    try:
        for bench in benches:
            image = guest_path(f"bench-{bench}")
            for runner, _info in usable:
                print(f"bench: {bench} on {runner.name}...", file=sys.stderr, flush=True)
                session.measurements.append(measure(
                    runner, bench, image, target, args.timeout, args.repeat,
                    progress=lambda line: print(line, file=sys.stderr, flush=True),
                    startup_multiple=0.0 if args.quick else STARTUP_MULTIPLE))
    finally:
        for runner in runners:
            close = getattr(runner, "close", None)
            if close:
                close()
    session.finish()
    print(format_text(session))

    json_path = args.json or RESULTS / ("quick.json" if args.quick else "latest.json")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(session.to_json(), indent=2) + "\n")
    print(f"bench: results written to {json_path}", file=sys.stderr)
    doc = args.doc or (None if args.quick else DOC)
    if doc is not None and not args.no_doc:
        write_doc(doc, session)
    return 0 if all(m.ok for m in session.measurements) else 1
