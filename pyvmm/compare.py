"""`pyvmm compare`: one guest, every engine, what each engine did side by side.

Each engine gets a fresh VM (its own board), boots the same image with the
same command line, and runs to the end.  The guest's console output (COM1
and the 0xE9 debug console, in order) is captured so that behaviour can be
checked identical across engines; the counters come from each VM's Stats.

Several command lines (`--append` more than once, e.g. the demo with and
without `pv`) make one column per (engine, command line) pair.  A column's
output is compared with the first column that has the SAME command line:
different command lines may legitimately print different things.
The JSON form is described by docs/compare-schema.json.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field, replace
from typing import Any

from pyvmm.console import OutputCapture
from pyvmm.engines.registry import ENGINES, engine_availability
from pyvmm.vm import ImageSpec, VirtualMachine

SCHEMA_VERSION = 2  # 2: several command lines; every engine entry has its cmdline




@dataclass
class EngineRun:
    engine: str
    available: bool
    reason: str = ""
    output: bytes = b""
    exit_status: int | None = None
    stop: str = ""
    wall_seconds: float = 0.0
    guest_seconds: float | None = None
    idle_seconds: float = 0.0
    instructions: int | None = None
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    cmdline: str = ""
    label: str = ""  # the column header: the engine, plus [cmdline] when there are several

    @property
    def column(self) -> str:
        return self.label or self.engine

    @property
    def mips(self) -> float | None:
        """Guest instructions per second of host time the guest was not halted."""
        busy = self.wall_seconds - self.idle_seconds
        if self.instructions is None or busy <= 0:
            return None
        return self.instructions / busy / 1e6

    def total(self, category: str) -> int:
        return sum(self.counters.get(category, {}).values())

    @property
    def vmm_seconds(self) -> float | None:
        """Host time neither in the guest nor idle: the VMM's own work (exits)."""
        if self.guest_seconds is None:
            return None
        return max(0.0, self.wall_seconds - self.guest_seconds - self.idle_seconds)


# A column: an engine, or an engine with options ("kvm" is kvm's default,
# --irqchip kernel with the board's PIT; "kvm:user" is --irqchip user, the
# board's interrupt controllers; "kvm:kvm-pit" is --kvm-pit, KVM's PIT too;
# ":no-ioeventfd" is --no-ioeventfd, every virtio notification a VM exit).
COLUMNS: dict[str, tuple[str, dict[str, Any]]] = {
    **{name: (name, {}) for name in ENGINES},
    "kvm:user": ("kvm", {"irqchip": "user"}),
    "kvm:kvm-pit": ("kvm", {"kvm_pit": True}),
    "kvm:no-ioeventfd": ("kvm", {"ioeventfd": False}),
    "kvm:user:no-ioeventfd": ("kvm", {"irqchip": "user", "ioeventfd": False}),
}


def run_engine(engine: str, spec: ImageSpec, ram_size: int, timeout: float | None,
               unmapped: str = "stop", virtio: tuple = ()) -> EngineRun:
    name, options = COLUMNS.get(engine, (engine, {}))
    available, reason = engine_availability(name)
    if not available:
        return EngineRun(engine, False, reason, cmdline=spec.cmdline)
    capture = OutputCapture()
    vm = VirtualMachine(engine=name, ram_size=ram_size, serial_output=capture,
                        debugcon_output=capture, name=engine, unmapped=unmapped,
                        virtio=virtio, **options)
    try:
        vm.load(spec)
        stop = vm.run(timeout)
        stats = vm.stats
        return EngineRun(
            engine=engine, available=True, output=bytes(capture.data),
            exit_status=stop.exit_code, stop=stop.describe(),
            wall_seconds=stats.wall_seconds, guest_seconds=stats.guest_seconds,
            idle_seconds=stats.idle_seconds, instructions=stats.instructions,
            counters={cat: dict(c) for cat, c in stats.counters.items() if c},
            cmdline=spec.cmdline)
    finally:
        vm.close()


def column_label(engine: str, cmdline: str, several: bool) -> str:
    """`kvm`, or `kvm [work=2 pv]` when the comparison has several command lines."""
    return f"{engine} [{cmdline}]" if several else engine


def compare(spec: ImageSpec, engines: list[str], ram_size: int, timeout: float | None,
            progress=None, unmapped: str = "stop",
            cmdlines: list[str] | None = None, virtio: tuple = ()) -> list[EngineRun]:
    """Run `spec` under each engine, once per command line (default: the
    spec's own); columns are engine-major, so one engine's runs sit together."""
    lines = cmdlines if cmdlines else [spec.cmdline]
    several = len(lines) > 1
    pairs = [(engine, line) for engine in engines for line in lines]
    runs = []
    for index, (engine, line) in enumerate(pairs, 1):
        label = column_label(engine, line, several)
        if progress:
            progress(f"compare: running {spec.label or spec.path} under {label} "
                     f"({index}/{len(pairs)})...")
        run = run_engine(engine, replace(spec, cmdline=line), ram_size, timeout, unmapped,
                         virtio)
        run.label = label
        if progress:  # the table's measurement, not a second clock around it
            verdict = (f"{run.wall_seconds:.2f} s, {run.stop}" if run.available
                       else f"unavailable: {run.reason}")
            progress(f"compare: {label}: {verdict}")
        runs.append(run)
    return runs


# Counter categories in the order the table shows them, and whether their
# counts add up to a meaningful total (each event counted under one key
# only); any other category an engine fills (e.g. "timer", "hypercalls")
# follows, by name, without a total.
CATEGORY_TITLES: tuple[tuple[str, str, bool], ...] = (
    ("exits", "VM exits", True),
    ("interrupts", "hardware interrupts delivered", True),
    ("software interrupts", "software interrupts (INT n)", True),
    ("exceptions", "guest exceptions", True),
    ("ports", "port accesses", True),
    ("mmio", "MMIO accesses", True),
    ("tlb", "TLB (data accesses)", False),
    ("paging", "paging", False),
    ("decode", "decode cache", False),
    ("jit", "binary translation", False),
)


def _reference(runs: list[EngineRun], cmdline: str | None = None) -> EngineRun | None:
    """The first available run (with `cmdline`, if given): what the others are checked against."""
    return next((run for run in runs if run.available
                 and (cmdline is None or run.cmdline == cmdline)), None)


def same_behaviour(runs: list[EngineRun]) -> bool:
    """Every available run printed and returned what the reference of its
    command line did."""
    for run in runs:
        reference = _reference(runs, run.cmdline)
        if run.available and reference is not None and (
                run.output != reference.output or run.exit_status != reference.exit_status):
            return False
    return True


def to_json(spec: ImageSpec, runs: list[EngineRun]) -> dict[str, Any]:
    reference = _reference(runs)
    engines = []
    for run in runs:
        entry: dict[str, Any] = {"engine": run.engine, "cmdline": run.cmdline,
                                 "column": run.column, "available": run.available}
        if not run.available:
            entry["reason"] = run.reason
        else:
            own = _reference(runs, run.cmdline)
            assert own is not None  # this run itself qualifies
            entry.update({
                "exit_status": run.exit_status,
                "stop": run.stop,
                "reference_column": own.column,
                "same_output": run.output == own.output,
                "same_exit_status": run.exit_status == own.exit_status,
                "output_bytes": len(run.output),
                "wall_seconds": run.wall_seconds,
                "guest_seconds": run.guest_seconds,
                "idle_seconds": run.idle_seconds,
                "instructions": run.instructions,
                "mips": run.mips,
                "counters": run.counters,
            })
        engines.append(entry)
    return {
        "schema_version": SCHEMA_VERSION,
        "guest": spec.label or str(spec.path),
        "cmdline": runs[0].cmdline if runs else spec.cmdline,
        "cmdlines": list(dict.fromkeys(run.cmdline for run in runs)) or [spec.cmdline],
        "reference_engine": reference.engine if reference else None,
        "engines": engines,
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if value < 1000 else f"{value:.0f}"
    return str(value)


def format_table(spec: ImageSpec, runs: list[EngineRun]) -> str:
    """One column per engine (per engine and command line), one row per fact."""
    reference = _reference(runs)
    cmdlines = list(dict.fromkeys(run.cmdline for run in runs))
    several = len(cmdlines) > 1
    rows: list[tuple[str, list[str]]] = []
    avail = [run for run in runs if run.available]

    def row(label: str, values: list[Any]) -> None:
        rows.append((label, [_fmt(v) for v in values]))

    row("available", ["yes" if r.available else "no: " + r.reason for r in runs])
    if reference is not None:
        # Each column against the first available column with its command line.
        against = "first column with its cmdline" if several else reference.engine
        own = [_reference(runs, r.cmdline) for r in runs]
        row("same output as " + against,
            ["yes" if r.available and r.output == o.output else
             ("no" if r.available else "-") for r, o in zip(runs, own, strict=True)])
        row("same exit status as " + against,
            ["yes" if r.available and r.exit_status == o.exit_status else
             ("no" if r.available else "-") for r, o in zip(runs, own, strict=True)])
        row("exit status", [r.exit_status if r.available else None for r in runs])
        row("stop", [r.stop if r.available else None for r in runs])
        row("wall time (s)", [r.wall_seconds if r.available else None for r in runs])
        row("guest instructions", [r.instructions for r in runs])
        row("guest MIPS (halted time left out)", [r.mips for r in runs])
        def share(seconds: float | None, run: EngineRun) -> float | None:
            if not run.available or seconds is None or not run.wall_seconds:
                return None
            return 100 * seconds / run.wall_seconds

        row("time in the guest (%)", [share(r.guest_seconds, r) for r in runs])
        row("time in pyvmm, exits (%)", [share(r.vmm_seconds, r) for r in runs])
        row("time idle, guest halted (%)",
            [share(r.idle_seconds, r) if r.available else None for r in runs])
        known = [category for category, _, _ in CATEGORY_TITLES]
        others = sorted({c for r in avail for c in r.counters} - set(known))
        for category, title, summable in [*CATEGORY_TITLES,
                                          *((c, c, False) for c in others)]:
            keys = sorted({k for r in avail for k in r.counters.get(category, {})})
            if not keys:
                continue
            # "-" where an engine has no such counters at all (the interpreter
            # has no VM exits; KVM cannot see the guest's TLB).
            counted = [r.available and bool(r.counters.get(category)) for r in runs]
            if summable:
                row(f"{title} (total)", [r.total(category) if has else None
                                         for r, has in zip(runs, counted, strict=True)])
            else:
                rows.append((f"{title}:", ["" for _ in runs]))
            for key in keys:
                row(f"  {key}", [r.counters[category].get(key, 0) if has else None
                                 for r, has in zip(runs, counted, strict=True)])
    label_width = max(len(label) for label, _ in rows)
    widths = [max(len(r.column), *(len(values[i]) for _, values in rows))
              for i, r in enumerate(runs)]
    header = " " * label_width + "  " + "  ".join(
        r.column.rjust(w) for r, w in zip(runs, widths, strict=True))
    if several:
        title = "  cmdlines: " + ", ".join(repr(line) for line in cmdlines)
    else:
        shown = cmdlines[0] if cmdlines else spec.cmdline
        title = f"  cmdline: {shown!r}" if shown else ""
    lines = [f"guest: {spec.label or spec.path}" + title, header]
    for label, values in rows:
        lines.append(label.ljust(label_width) + "  " + "  ".join(
            v.rjust(w) for v, w in zip(values, widths, strict=True)))
    return "\n".join(lines)


def _scale(axis, values: list[float]) -> None:  # noqa: ANN001 - a matplotlib Axes
    """Log scale only where the spread needs it (more than 10x)."""
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) > 10:
        axis.set_yscale("log")
    else:
        axis.set_ylim(bottom=0)


def plot(runs: list[EngineRun], path: str) -> None:
    """Wall time and VM exits per engine; log scales where the spread is wide."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from pyvmm.errors import ConfigError

        raise ConfigError("--plot needs matplotlib: pip install 'pyvmm[plot]'") from None
    avail = [r for r in runs if r.available]
    names = [r.column for r in avail]
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    times = [r.wall_seconds for r in avail]
    left.bar(names, times, color="tab:blue")
    _scale(left, times)
    left.set_title("wall time (s)")
    exits = [float(r.total("exits")) for r in avail]
    right.bar(names, exits, color="tab:orange")
    for index, run in enumerate(avail):
        if "exits" not in run.counters:  # the engine has no VM exits at all
            right.annotate("n/a", (index, 0), ha="center", va="bottom")
    _scale(right, exits)
    right.set_title("VM exits")
    figure.tight_layout()
    figure.savefig(path, dpi=100, format="png")
    plt.close(figure)


def default_engines() -> list[str]:
    # interp first: it is the reference whose every instruction is accounted for.
    order = ["interp", "kvm"]
    return order + [name for name in ENGINES if name not in order]


def write_json(spec: ImageSpec, runs: list[EngineRun], path: str) -> None:
    data = to_json(spec, runs)
    if path == "-":
        json.dump(data, sys.stdout, indent=2)
        print()
    else:
        with open(path, "w") as handle:
            json.dump(data, handle, indent=2)
