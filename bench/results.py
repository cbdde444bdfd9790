"""What a benchmark run measured, and how it is reported: metrics, ratios, JSON, tables.

No timing happens here (that is runners.py and suite.py), so everything in
this module is plain arithmetic on recorded numbers and is unit-tested.

Metrics of one measurement (one benchmark under one runner):

- `instructions`: what the guest says its measured part executed (exact by
  construction: guests/README.md, "Benchmark guests");
- `startup_seconds` and `startup_instructions`: the same runner's run with
  n=0 (process start, firmware, boot, and the measured part's fixed
  prologue C, which for bench-mem is sizeable), so that `loop_seconds` =
  wall - startup is the time of the n iterations alone;
- `mips` = (instructions - startup_instructions) / loop_seconds / 1e6, the
  figure ratios use, and `raw_mips` = instructions / wall / 1e6;
- `ratio` = mips / the mips of the fastest *reference* (QEMU, Bochs) on the
  same benchmark in the same session: ratios taken in one run on one machine
  are what we quote, because this machine is shared and noisy.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = "pyvmm-bench/1"
RESULT_LINE = re.compile(r"(bench-\w+): n=(\d+) instructions=(\d+) reps=(\d+)")
# Below this much loop time a measurement says more about noise than speed.
MIN_LOOP_SECONDS = 1e-3


@dataclass(frozen=True)
class GuestResult:
    """The line a bench guest prints at the end."""

    name: str
    n: int
    instructions: int
    reps: int


def parse_guest_output(text: str) -> GuestResult | None:
    """The guest's result line, or None when it did not print one."""
    match = RESULT_LINE.search(text)
    if match is None:
        return None
    return GuestResult(match.group(1), int(match.group(2)), int(match.group(3)),
                       int(match.group(4)))


@dataclass
class Measurement:
    """One benchmark under one runner (the final, timed run)."""

    bench: str
    runner: str
    ok: bool
    error: str = ""
    n: int = 0
    instructions: int | None = None
    startup_instructions: int = 0
    wall_seconds: float | None = None
    startup_seconds: float | None = None
    exits: int | None = None            # VM exits (pyvmm's kvm engine: Stats)
    engine_instructions: int | None = None  # Stats.instructions (interp), whole run
    ratio: float | None = None          # filled by assign_ratios

    @property
    def loop_seconds(self) -> float | None:
        if self.wall_seconds is None:
            return None
        startup = self.startup_seconds or 0.0
        return max(self.wall_seconds - startup, MIN_LOOP_SECONDS)

    @property
    def mips(self) -> float | None:
        if not self.ok or self.instructions is None or self.loop_seconds is None:
            return None
        return (self.instructions - self.startup_instructions) / self.loop_seconds / 1e6

    @property
    def raw_mips(self) -> float | None:
        if not self.ok or self.instructions is None or not self.wall_seconds:
            return None
        return self.instructions / self.wall_seconds / 1e6

    @property
    def iterations_per_second(self) -> float | None:
        if not self.ok or self.loop_seconds is None:
            return None
        return self.n / self.loop_seconds

    @property
    def exits_per_second(self) -> float | None:
        if not self.ok or self.exits is None or not self.wall_seconds:
            return None
        return self.exits / self.wall_seconds

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(loop_seconds=self.loop_seconds, mips=self.mips, raw_mips=self.raw_mips,
                    iterations_per_second=self.iterations_per_second,
                    exits_per_second=self.exits_per_second)
        return data


@dataclass
class RunnerInfo:
    """A runner of the session and whether it could run here."""

    name: str
    kind: str           # "pyvmm" (an engine of ours) or "reference" (QEMU, Bochs)
    available: bool
    reason: str = ""
    version: str = ""


def assign_ratios(measurements: list[Measurement],
                  kinds: dict[str, str]) -> dict[str, str | None]:
    """Set each measurement's ratio against the fastest reference on its benchmark.

    Returns bench -> the runner used as 1.0.  When no reference ran a
    benchmark, the fastest runner of any kind is the base (so ratios still
    compare the engines with each other); when nothing ran, None.
    """
    bases: dict[str, str | None] = {}
    for bench in dict.fromkeys(m.bench for m in measurements):
        rows = [m for m in measurements if m.bench == bench and m.mips is not None]
        references = [m for m in rows if kinds.get(m.runner) == "reference"]
        pool = references or rows
        base = max(pool, key=lambda m: m.mips or 0.0, default=None)
        bases[bench] = base.runner if base else None
        for m in measurements:
            if m.bench == bench:
                m.ratio = (m.mips / base.mips if base is not None and m.mips is not None
                           and base.mips else None)
    return bases


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = ""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/proc/loadavg") as handle:
            load = handle.read().split()[:3]
    except OSError:
        load = []
    return {
        "cpu_model": model or platform.processor() or "unknown",
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "kvm": os.path.exists("/dev/kvm"),
        "load_average": [float(x) for x in load],
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


@dataclass
class Session:
    """Everything one `python -m bench` run produced."""

    command: str
    machine: dict[str, Any]
    settings: dict[str, Any]
    runners: list[RunnerInfo]
    measurements: list[Measurement] = field(default_factory=list)
    ratio_base: dict[str, str | None] = field(default_factory=dict)

    def finish(self) -> None:
        kinds = {r.name: r.kind for r in self.runners}
        self.ratio_base = assign_ratios(self.measurements, kinds)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Session:
        """Read back what to_json wrote (to re-render tables without re-running)."""
        if data.get("schema") != SCHEMA:
            raise ValueError(f"not a {SCHEMA} document (schema {data.get('schema')!r})")
        fields = set(Measurement.__dataclass_fields__)
        session = cls(data["command"], data["machine"], data["settings"],
                      [RunnerInfo(**r) for r in data["runners"]],
                      [Measurement(**{k: v for k, v in m.items() if k in fields})
                       for m in data["results"]])
        session.finish()
        return session

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "command": self.command,
            "machine": self.machine,
            "settings": self.settings,
            "runners": [asdict(r) for r in self.runners],
            "ratio_base": self.ratio_base,
            "results": [m.to_json() for m in self.measurements],
        }


def _num(value: float | int | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def _ratio(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}x" if value < 100 else f"{value:,.0f}x"


TABLE_HEADER = ("benchmark", "runner", "n", "instructions", "wall s", "startup s",
                "MIPS", "vs fastest ref", "iterations/s", "exits/s")


def table_rows(session: Session) -> list[tuple[str, ...]]:
    """One row per measurement (failures show their error), grouped by benchmark."""
    rows = []
    for m in session.measurements:
        base = session.ratio_base.get(m.bench)
        if not m.ok:
            rows.append((m.bench, m.runner, "-", "-", "-", "-", "failed: " + m.error,
                         "-", "-", "-"))
            continue
        ratio = _ratio(m.ratio) + (" (base)" if base == m.runner else "")
        rows.append((m.bench, m.runner, _num(m.n), _num(m.instructions),
                     _num(m.wall_seconds), _num(m.startup_seconds), _num(m.mips), ratio,
                     _num(m.iterations_per_second), _num(m.exits_per_second)))
    return rows


def skipped_runners(session: Session) -> list[tuple[str, str]]:
    return [(r.name, r.reason) for r in session.runners if not r.available]


def format_text(session: Session) -> str:
    """The console table."""
    rows = [TABLE_HEADER, *table_rows(session)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_HEADER))]
    lines = ["  ".join(cell.rjust(w) if i >= 2 else cell.ljust(w)
                       for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for name, reason in skipped_runners(session):
        lines.append(f"skipped {name}: {reason}")
    bases = ", ".join(f"{b}: {r}" for b, r in session.ratio_base.items() if r)
    if bases:
        lines.append(f"ratios are against (1.0): {bases}")
    return "\n".join(lines)


def format_markdown(session: Session) -> str:
    """The same table for docs/PERFORMANCE.md, with the command and the machine."""
    machine = session.machine
    out = [
        f"Measured {machine.get('date', '?')} with:",
        "",
        "```sh",
        session.command,
        "```",
        "",
        f"Machine: {machine.get('cpu_model', '?')}, {machine.get('cores', '?')} cores, "
        f"Python {machine.get('python', '?')}, {machine.get('platform', '?')}, "
        f"load average at start {machine.get('load_average', [])}.",
        "",
        "| " + " | ".join(TABLE_HEADER) + " |",
        "|" + "|".join("---" if i < 2 else "--:" for i in range(len(TABLE_HEADER))) + "|",
    ]
    out += ["| " + " | ".join(row) + " |" for row in table_rows(session)]
    out.append("")
    for name, reason in skipped_runners(session):
        out.append(f"- skipped `{name}`: {reason}")
    versions = [f"`{r.name}`: {r.version}" for r in session.runners if r.version]
    if versions:
        out.append("- versions: " + "; ".join(versions))
    bases = ", ".join(f"{b}: `{r}`" for b, r in session.ratio_base.items() if r)
    if bases:
        out.append(f"- ratios are against (1.0): {bases}")
    return "\n".join(out) + "\n"


def replace_marked(path: Path, begin: str, end: str, block: str, heading: str) -> None:
    """Write `block` (which starts with `begin` and ends with `end`) into the file at
    `path` in place of the text between those markers, or append it under
    `## heading` when the file lacks them; the rest of the file is kept."""
    text = path.read_text() if path.exists() else ""
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + f"\n\n## {heading}\n\n" + block + "\n"
    path.write_text(text)


DOC_BEGIN = "<!-- bench:begin (written by `python -m bench`; edit outside these markers) -->"
DOC_END = "<!-- bench:end -->"


def update_doc(text: str | None, table: str) -> str:
    """docs/PERFORMANCE.md with the block between the markers replaced by `table`.

    Text outside the markers (other people's sections) is kept; a missing
    file or missing markers get the block appended.
    """
    block = f"{DOC_BEGIN}\n{table}{DOC_END}\n"
    if not text:
        return ("# Performance\n\n## Latest benchmark run\n\n" + block +
                "\n## Where the interpreter's time goes\n\n(Nothing measured here yet.)\n")
    start, end = text.find(DOC_BEGIN), text.find(DOC_END)
    if start == -1 or end == -1 or end < start:
        return text.rstrip("\n") + "\n\n" + block
    rest = text[end + len(DOC_END):]
    return text[:start] + block + (rest[1:] if rest.startswith("\n") else rest)
