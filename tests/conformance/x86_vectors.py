"""Runner for the hardware-recorded 8086 / 80286 single-instruction vectors.

Data: ../shared/x86-tests (SingleStepTests by Daniel Balsom, MIT licence),
recorded from real CPUs.  The rules followed here are those of that
folder's README: load registers and RAM, run one instruction (8086) or until
HLT (80286), compare registers and RAM, masking the flags metadata.json marks
undefined (also in a FLAGS word an exception pushed).

    python -m tests.conformance.x86_vectors --all                # every test, pass rates
    python -m tests.conformance.x86_vectors --set 8086 --files D0.4,D1.4 --show 5
    python -m tests.conformance.x86_vectors --sample 5           # what CI runs
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from pyvmm.cpu.state import CpuState, SegmentState
from pyvmm.engines.interp.engine import InterpreterEngine
from tests.conformance.machine import BareBoard

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT.parent / "shared" / "x86-tests"
EXPECTED = Path(__file__).with_name("expected_failures.txt")
SETS = ("8086", "80286")
REGS = ("ax", "bx", "cx", "dx", "cs", "ss", "ds", "es", "sp", "bp", "si", "di", "ip", "flags")
GPR_INDEX = {"ax": 0, "cx": 1, "dx": 2, "bx": 3, "sp": 4, "bp": 5, "si": 6, "di": 7}
SEG = {"es": "es", "cs": "cs", "ss": "ss", "ds": "ds"}
PREFIXES = {0x26, 0x2E, 0x36, 0x3E, 0xF0, 0xF1, 0xF2, 0xF3}
MAX_STEPS_286 = 64


def available() -> bool:
    return (VECTORS / "8086").is_dir() and (VECTORS / "80286").is_dir()


def test_files(cpu_set: str) -> list[str]:
    return sorted(p.name[:-len(".json.gz")] for p in (VECTORS / cpu_set).glob("*.json.gz"))


@cache
def metadata(cpu_set: str) -> dict:
    return json.loads((VECTORS / cpu_set / "metadata.json").read_text())["opcodes"]


def load(cpu_set: str, name: str) -> list[dict]:
    with gzip.open(VECTORS / cpu_set / f"{name}.json.gz", "rt") as handle:
        return json.load(handle)


def flags_mask(cpu_set: str, raw: list[int]) -> int:
    """Mask of the defined flags for this instruction (metadata.json `flags-mask`)."""
    i = 0
    while i < len(raw) and raw[i] in PREFIXES:
        i += 1
    if i >= len(raw):
        return 0xFFFF
    key = f"{raw[i]:02X}"
    entry = metadata(cpu_set).get(key, {})
    if "reg" in entry and i + 1 < len(raw):
        entry = entry["reg"].get(str((raw[i + 1] >> 3) & 7), entry)
    return entry.get("flags-mask", 0xFFFF)


class Runner:
    def __init__(self, cpu_set: str) -> None:
        self.cpu_set = cpu_set
        ram = 2 << 20 if cpu_set == "8086" else 17 << 20
        self.board = BareBoard(ram)
        self.engine = InterpreterEngine(self.board, "8086" if cpu_set == "8086" else "80286")
        self.ram = self.engine.cpu.ram

    def run(self, test: dict) -> list[str]:
        """Run one test; returns the list of mismatches (empty: pass)."""
        engine = self.engine
        cpu = engine.cpu
        init = test["initial"]
        regs = init["regs"]
        flags = regs["flags"]
        flags = flags | 0xF000 if self.cpu_set == "8086" else flags & 0x0FFF
        state = CpuState()
        for name, index in GPR_INDEX.items():
            state.gprs[index] = regs[name]
        for name in SEG:
            state.segments[name] = SegmentState.real_mode(regs[name], code=(name == "cs"))
        state.rip = regs["ip"]
        state.rflags = flags
        state.idtr.base, state.idtr.limit = 0, 0x3FF
        state.cr0 = 0x10
        engine.decoder.flush()
        engine.decoder.contexts.clear()
        cpu.code_pages.clear()
        for address, value in init["ram"]:
            self.ram[address] = value
        engine.set_state(state)
        error = None
        if self.cpu_set == "8086":
            stop = engine.step()
            if stop is not None:
                error = stop.describe()
        else:
            for _ in range(MAX_STEPS_286):
                stop = engine.step()
                if stop is not None:
                    error = stop.describe()
                    break
                if cpu.halted:
                    break
            else:
                error = "no HLT reached"
        return self.compare(test, error)

    def compare(self, test: dict, error: str | None) -> list[str]:
        cpu = self.engine.cpu
        out = [error] if error else []
        init = test["initial"]["regs"]
        final = test["final"]["regs"]
        mask = flags_mask(self.cpu_set, test["bytes"])
        mine = {name: cpu.regs[index] & 0xFFFF for name, index in GPR_INDEX.items()}
        mine.update({name: cpu.seg_sel[i] for i, name in enumerate(("es", "cs", "ss", "ds"))})
        mine["ip"] = cpu.rip & 0xFFFF
        got_flags = cpu.get_flags() & 0xFFFF
        mine["flags"] = got_flags
        for name in REGS:
            want = final.get(name, init[name])
            if self.cpu_set == "80286" and name == "flags" and name not in final:
                want &= 0x0FFF
            have = mine[name]
            if name == "flags":
                want &= mask
                have &= mask
            if want != have:
                out.append(f"{name}: want {want:#06x} got {have:#06x}")
        fault_frame = None
        if "exception" in test or (self.cpu_set == "8086" and final.get("cs", init["cs"]) == 0
                                   and final.get("ip", init["ip"]) == 0x400):
            ss = final.get("ss", init["ss"])
            sp = final.get("sp", init["sp"])
            wrap = 0xFFFFF if self.cpu_set == "8086" else 0xFFFFFF
            fault_frame = ((ss << 4) + ((sp + 4) & 0xFFFF)) & wrap
        ram = {address: value for address, value in test["final"]["ram"]}
        for address, value in ram.items():
            have = self.ram[address]
            if fault_frame is not None and address in (fault_frame, fault_frame + 1):
                byte_mask = (mask >> (8 * (address - fault_frame))) & 0xFF
                value &= byte_mask
                have &= byte_mask
            if have != value:
                out.append(f"ram[{address:#x}]: want {value:#04x} got {have:#04x}")
        return out


def test_id(cpu_set: str, name: str, index: int) -> str:
    return f"{cpu_set}/{name}#{index}"


def expected_failures() -> dict[str, str]:
    out: dict[str, str] = {}
    if EXPECTED.exists():
        for line in EXPECTED.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                key, _, reason = line.partition(" ")
                out[key] = reason.strip()
    return out


def iterate(cpu_set: str, files: list[str], first: int | None
            ) -> Iterator[tuple[str, int, dict]]:
    for name in files:
        tests = load(cpu_set, name)
        for index, test in enumerate(tests[:first] if first else tests):
            yield name, index, test


def run_set(cpu_set: str, files: list[str], first: int | None = None
            ) -> dict[str, list[str]]:
    """Run tests; returns {test id: mismatches} for the failing ones, plus key '_count'."""
    runner = Runner(cpu_set)
    failures: dict[str, list[str]] = {}
    count = 0
    for name, index, test in iterate(cpu_set, files, first):
        count += 1
        try:
            diff = runner.run(test)
        except Exception as error:  # noqa: BLE001 - report, keep going
            diff = [f"runner crashed: {type(error).__name__}: {error}"]
            runner = Runner(cpu_set)
        if diff:
            failures[test_id(cpu_set, name, index)] = diff + [test["name"]]
    failures["_count"] = [str(count)]
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=SETS, action="append")
    parser.add_argument("--files", help="comma-separated file names (opcodes), e.g. 00,F6.6")
    parser.add_argument("--all", action="store_true", help="every test of every file")
    parser.add_argument("--sample", type=int, help="only the first N tests of each file")
    parser.add_argument("--show", type=int, default=10, help="failures to print per set")
    parser.add_argument("--write-expected", action="store_true",
                        help="rewrite expected_failures.txt from this run")
    args = parser.parse_args(argv)
    if not available():
        print(f"vectors not found at {VECTORS}", file=sys.stderr)
        return 2
    first = None if args.all else (args.sample or None)
    expected = expected_failures()
    lines = []
    status = 0
    requested = [f for f in (args.files or "").split(",") if f]
    for cpu_set in args.set or SETS:
        names = test_files(cpu_set)
        unknown = [f for f in requested if f not in names]
        if unknown:
            near = [n for n in names if n.startswith(unknown[0])] or names[:3] + ["..."]
            print(f"--files: no file {', '.join(unknown)} in set {cpu_set}; names are "
                  f"opcodes, ModRM groups as OP.N (e.g. {', '.join(near)})", file=sys.stderr)
            return 2
    for cpu_set in args.set or SETS:
        files = requested or test_files(cpu_set)
        started = time.monotonic()
        failures = run_set(cpu_set, files, first)
        count = int(failures.pop("_count")[0])
        passed = count - len(failures)
        rate = 100.0 * passed / count if count else 0.0
        print(f"{cpu_set}: {passed}/{count} passed ({rate:.2f}%) in "
              f"{time.monotonic() - started:.1f} s")
        unexpected = [k for k in failures if k not in expected]
        print(f"  unexpected failures: {len(unexpected)}")
        for key in unexpected[:args.show]:
            print(f"  {key} {failures[key][-1]!r}: {'; '.join(failures[key][:-1][:4])}")
        if unexpected:
            status = 1
        for key, diff in failures.items():
            lines.append(f"{key} {diff[-1]}: {'; '.join(diff[:-1][:2])}")
    if args.write_expected:
        EXPECTED.write_text("# set/file#index reason (generated by --write-expected; edit "
                            "reasons freely)\n" + "\n".join(lines) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
