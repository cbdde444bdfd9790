"""Generate, run on both sides, compare: the differential-testing loop."""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from iced_x86 import Formatter, FormatterSyntax

from pyvmm.difftest.compare import Difference, compare
from pyvmm.difftest.encode import EncodedCase, EncodeMismatch, encode_case
from pyvmm.difftest.generator import MODE_NAMES, generate_case
from pyvmm.difftest.native_side import run_native
from pyvmm.difftest.report import format_disagreement
from pyvmm.difftest.x87gen import generate_x87_case, unrecorded_pointers
from pyvmm.oracle.layout import DATA_BASE
from pyvmm.oracle.native import NativeRunner
from pyvmm.oracle.result import ExecResult

# Engines the tester knows by name: module path, class name.
ENGINES = {"interp": ("pyvmm.engines.interp.engine", "InterpreterEngine"),
           "jit": ("pyvmm.engines.jit.engine", "JitEngine")}

SideRunner = Callable[[EncodedCase], ExecResult]


def load_engine(name: str) -> type:
    """The engine class called `name`; raises ImportError if it is not there yet."""
    module_name, class_name = ENGINES[name]
    module = importlib.import_module(module_name)
    try:
        return getattr(module, class_name)
    except AttributeError as error:
        raise ImportError(f"{module_name} has no {class_name}") from error


@dataclass
class Disagreement:
    encoded: EncodedCase
    differences: list[Difference]
    native: ExecResult
    engine: ExecResult

    def report(self) -> str:
        return format_disagreement(self.encoded, self.differences)

    def suspect(self) -> str:
        """A one-line guess at the culprit, for the summary table.

        When the engine stopped with an exception the CPU did not raise (or at a
        different place), the instruction there; otherwise the kinds of state
        that differ.
        """
        formatter = Formatter(FormatterSyntax.INTEL)
        if self.engine.vector is not None and (self.engine.vector != self.native.vector
                                               or self.engine.rip != self.native.rip):
            for instr in self.encoded.decoded:
                if instr.ip == self.engine.rip:
                    name = formatter.format_mnemonic(instr)
                    return f"engine #{self.engine.vector} on {name}"
            return f"engine #{self.engine.vector} outside the block"
        kinds = sorted({d.what.split("[")[0] for d in self.differences})
        return "differs: " + ",".join(kinds)


@dataclass
class Summary:
    mode: str  # MODE_NAMES key
    total: int = 0
    agree: int = 0
    faulted: int = 0  # blocks that ended in an exception natively (and were compared)
    disagreements: list[Disagreement] = field(default_factory=list)

    def suspects(self) -> list[tuple[str, int]]:
        return Counter(d.suspect() for d in self.disagreements).most_common()

    def line(self) -> str:
        return (f"mode {self.mode}: {self.total} sequences, {self.agree} agree, "
                f"{len(self.disagreements)} disagree ({self.faulted} ended in an exception)")


def make_native_self_side(runner: NativeRunner) -> SideRunner:
    """A second native run: checks the harness is deterministic."""
    return lambda enc: run_native(runner, enc)


def make_engine_side(engine_class: type) -> SideRunner:
    from pyvmm.difftest.engine_side import EngineSide
    side = EngineSide(engine_class)
    return side.run


def run_cases(runner: NativeRunner, other: SideRunner, mode: int | str, seed: int,
              indices: Iterable[int], length: int,
              families: tuple[str, ...] | None = None, guard: bool = False,
              wrap: bool = False) -> Summary:
    """Blocks `indices` of `seed` in `mode` (bits, or a MODE_NAMES key) on both sides."""
    bits, compat = MODE_NAMES[str(mode)]
    summary = Summary(str(mode))
    blank = unrecorded_pointers(runner) if families == ("x87",) else ()
    for index in indices:
        if families == ("x87",):
            case = generate_x87_case(bits, seed, index, length, blank)  # 64-bit only: raises else
        else:
            case = generate_case(bits, seed, index, length, families, guard, wrap, compat)
        try:
            enc = encode_case(case, runner.info.exit_stub)
        except EncodeMismatch:
            continue  # cannot happen with short blocks; skip rather than test a different block
        native = run_native(runner, enc)
        engine = other(enc)
        summary.total += 1
        if native.vector is not None:
            summary.faulted += 1
        diffs = compare(enc, native, engine, DATA_BASE)
        if diffs:
            summary.disagreements.append(Disagreement(enc, diffs, native, engine))
        else:
            summary.agree += 1
    return summary
