"""`python -m bench.soak --vms N --minutes M`: many VMs in one process, for a long time.

The soak runs rounds until M minutes have passed.  Each round is one
`Hypervisor` holding N VMs at once, a mix of bundled guests and engines (the
engines this host can run, round-robin over `MIX`); every VM runs to its
debug-exit.  Throughout, a sampler thread records the process's resident set
size (VmRSS, /proc/self/status) every `--interval` seconds.

It reports:
- RSS over time and its least-squares slope (KiB per minute), over the whole
  run, after the first round and over the second half of the run (warm-up:
  code caches, imports and the allocator's arenas fill over the first tens of
  seconds, so only the late slope says whether memory keeps growing);
- host-timer wake-ups per VM (HostTimerService expiries delivered to it), in
  total and per second of the VM's run;
- guest console lines expected vs received, per VM: the expected count is the
  guest's documented output (guests/README.md; the demo's from
  tests/guests/demo_model.py), so a lost or invented line is a failure;
- every VM's stop reason (all must be the guest's debug-exit, status 33);
- with --plot, a PNG of RSS and wake-ups per second over time.

The exit status is 0 when no line was lost and every VM stopped as expected.
Run it at low priority on a shared machine: `nice -n 19 python -m bench.soak ...`.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from dataclasses import asdict, dataclass, field

from pyvmm.engines.registry import ENGINES, engine_availability
from pyvmm.hypervisor import Hypervisor, VmConfig
from pyvmm.vm import ImageSpec

# (guest, engine, command line): one VM each, cycled to fill N.
MIX: tuple[tuple[str, str, str], ...] = (
    ("demo", "kvm", "work=20"),
    ("demo", "interp", "work=2"),
    ("hello", "kvm", ""),
    ("demo", "jit", "work=5"),
    ("demo", "kvm", "work=20 pv"),
    ("hello", "interp", ""),
    ("hello", "jit", ""),
)
DEBUG_EXIT_OK = 33  # every bundled guest's success status (guests/README.md)


def expected_lines(guest: str, cmdline: str) -> int:
    """The number of COM1 lines the guest prints (guests/README.md)."""
    if guest == "hello":
        return 1  # "Hello from a pyvmm boot sector!"
    from tests.guests.demo_model import expected_demo_output

    work = int(dict(part.split("=") for part in cmdline.split() if "=" in part)["work"])
    return expected_demo_output(work).count("\n")


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class LineCounter:
    """The hypervisor's stdout: counts complete `[name] ...` lines per VM."""

    def __init__(self) -> None:
        self.lines: dict[str, int] = {}
        self._rest = b""
        self._lock = threading.Lock()

    def write(self, data: bytes) -> int:
        with self._lock:
            *lines, self._rest = (self._rest + bytes(data)).split(b"\n")
            for line in lines:
                if line.startswith(b"[") and b"] " in line:
                    name = line[1:line.index(b"] ")].decode()
                    self.lines[name] = self.lines.get(name, 0) + 1
        return len(data)

    def flush(self) -> None:
        pass


@dataclass
class VmRecord:
    round: int
    name: str
    guest: str
    engine: str
    cmdline: str
    status: int
    reason: str
    wall_seconds: float
    host_wakeups: int
    lines_expected: int
    lines_received: int


@dataclass
class SoakResult:
    vms: int
    minutes: float
    rounds: int = 0
    elapsed_seconds: float = 0.0
    samples: list[tuple[float, int]] = field(default_factory=list)  # (seconds, RSS KiB)
    wakeups: list[tuple[float, float]] = field(default_factory=list)  # (seconds, per s)
    records: list[VmRecord] = field(default_factory=list)

    @property
    def lost_lines(self) -> int:
        return sum(max(0, r.lines_expected - r.lines_received) for r in self.records)

    @property
    def extra_lines(self) -> int:
        return sum(max(0, r.lines_received - r.lines_expected) for r in self.records)

    @property
    def bad_stops(self) -> list[VmRecord]:
        return [r for r in self.records if r.status != DEBUG_EXIT_OK]


def slope_kib_per_minute(samples: list[tuple[float, int]]) -> float | None:
    """Least-squares slope of RSS against time."""
    if len(samples) < 2:
        return None
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_r = sum(r for _, r in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    if var == 0:
        return None
    cov = sum((t - mean_t) * (r - mean_r) for t, r in samples)
    return cov / var * 60.0


def the_mix(vms: int) -> list[tuple[str, str, str]]:
    usable = [entry for entry in MIX if engine_availability(entry[1])[0]]
    if not usable:
        raise SystemExit("bench.soak: no engine of the mix can run here")
    return [usable[i % len(usable)] for i in range(vms)]


def run_round(index: int, mix: list[tuple[str, str, str]], timeout: float) -> list[VmRecord]:
    counter = LineCounter()
    with Hypervisor(stdout=counter) as hypervisor:  # type: ignore[arg-type]
        for i, (guest, engine, cmdline) in enumerate(mix, 1):
            hypervisor.add(VmConfig(name=f"vm{i}", image=ImageSpec.bundled(guest, cmdline),
                                    engine=engine, ram_size=16 << 20, timeout=timeout))
        results = hypervisor.run()
    return [VmRecord(index, result.name, guest, result.engine, cmdline, result.exit_status,
                     result.reason.describe(), result.wall_seconds, result.host_wakeups,
                     expected_lines(guest, cmdline), counter.lines.get(result.name, 0))
            for result, (guest, _engine, cmdline) in zip(results, mix, strict=True)]


def soak(vms: int, minutes: float, interval: float = 1.0, vm_timeout: float = 300.0,
         progress=None) -> SoakResult:  # noqa: ANN001
    result = SoakResult(vms, minutes)
    mix = the_mix(vms)
    start = time.monotonic()
    stop = threading.Event()

    def sample() -> None:
        while True:
            result.samples.append((time.monotonic() - start, rss_kib()))
            if stop.wait(interval):
                return

    sampler = threading.Thread(target=sample, name="soak-rss", daemon=True)
    sampler.start()
    try:
        while result.rounds == 0 or time.monotonic() - start < minutes * 60:
            round_start = time.monotonic()
            records = run_round(result.rounds, mix, vm_timeout)
            result.records.extend(records)
            seconds = max(time.monotonic() - round_start, 1e-9)
            result.wakeups.append((time.monotonic() - start,
                                   sum(r.host_wakeups for r in records) / seconds))
            result.rounds += 1
            if progress:
                lost = sum(max(0, r.lines_expected - r.lines_received) for r in records)
                progress(f"soak: round {result.rounds} ({seconds:.1f} s): "
                         f"RSS {result.samples[-1][1] / 1024:.1f} MiB, lost lines {lost}")
    finally:
        stop.set()
        sampler.join()
    result.samples.append((time.monotonic() - start, rss_kib()))
    result.elapsed_seconds = time.monotonic() - start
    return result


def report(result: SoakResult) -> str:
    rss = [r for _, r in result.samples]
    first_round_end = result.wakeups[0][0] if result.wakeups else 0.0
    warm = [(t, r) for t, r in result.samples if t >= first_round_end]
    late = [(t, r) for t, r in result.samples if t >= result.elapsed_seconds / 2]
    whole, after = slope_kib_per_minute(result.samples), slope_kib_per_minute(warm)
    second_half = slope_kib_per_minute(late)
    lines = [
        f"soak: {result.vms} VMs per round, {result.rounds} rounds, "
        f"{result.elapsed_seconds / 60:.2f} min ({len(result.records)} VM runs)",
        f"RSS: start {rss[0] / 1024:.1f} MiB, peak {max(rss) / 1024:.1f} MiB, "
        f"end {rss[-1] / 1024:.1f} MiB; slope "
        f"{'n/a' if whole is None else f'{whole:+.1f}'} KiB/min overall, "
        f"{'n/a' if after is None else f'{after:+.1f}'} KiB/min after round 1, "
        f"{'n/a' if second_half is None else f'{second_half:+.1f}'} KiB/min over the "
        "second half",
        f"console lines: expected {sum(r.lines_expected for r in result.records)}, "
        f"received {sum(r.lines_received for r in result.records)}, lost "
        f"{result.lost_lines}, extra {result.extra_lines}",
    ]
    by_kind: dict[tuple[str, str], list[VmRecord]] = {}
    for record in result.records:
        by_kind.setdefault((record.guest + " " + record.cmdline, record.engine), []).append(record)
    lines.append(f"{'guest':<18} {'engine':<7} {'runs':>5} {'wake-ups/VM':>12} "
                 f"{'wake-ups/s':>11} {'stops (status: count)'}")
    for (guest, engine), records in sorted(by_kind.items()):
        wake = sum(r.host_wakeups for r in records) / len(records)
        per_s = sum(r.host_wakeups for r in records) / max(
            sum(r.wall_seconds for r in records), 1e-9)
        stops: dict[int, int] = {}
        for r in records:
            stops[r.status] = stops.get(r.status, 0) + 1
        lines.append(f"{guest.strip():<18} {engine:<7} {len(records):>5} {wake:>12.1f} "
                     f"{per_s:>11.1f} " + ", ".join(f"{s}: {c}" for s, c in sorted(stops.items())))
    for record in result.bad_stops[:10]:
        lines.append(f"  round {record.round} {record.name} ({record.engine}): {record.reason}")
    return "\n".join(lines)


def plot(result: SoakResult, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    top.plot([t / 60 for t, _ in result.samples], [r / 1024 for _, r in result.samples])
    top.set_ylabel("RSS (MiB)")
    top.set_title(f"pyvmm soak: {result.vms} VMs per round, {result.rounds} rounds")
    bottom.plot([t / 60 for t, _ in result.wakeups], [w for _, w in result.wakeups], ".-")
    bottom.set_ylabel("host-timer wake-ups / s")
    bottom.set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vms", type=int, default=10, help="VMs per round (default 10)")
    parser.add_argument("--minutes", type=float, default=5.0,
                        help="keep starting rounds until this much time has passed")
    parser.add_argument("--interval", type=float, default=1.0, help="RSS sample period (s)")
    parser.add_argument("--plot", metavar="FILE.png", help="draw RSS and wake-ups over time")
    parser.add_argument("--json", metavar="FILE", help="write every sample and VM record")
    args = parser.parse_args(argv)
    if args.vms < 1 or not args.minutes > 0 or not args.interval > 0:
        parser.error("--vms, --minutes and --interval must be positive")
    print(f"soak: engines {', '.join(e for e in ENGINES if engine_availability(e)[0])}",
          file=sys.stderr)
    result = soak(args.vms, args.minutes, args.interval,
                  progress=lambda text: print(text, file=sys.stderr, flush=True))
    print(report(result))
    if args.plot:
        plot(result, args.plot)
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"vms": result.vms, "minutes": result.minutes, "rounds": result.rounds,
                       "elapsed_seconds": result.elapsed_seconds, "samples": result.samples,
                       "wakeups_per_second": result.wakeups,
                       "lost_lines": result.lost_lines, "extra_lines": result.extra_lines,
                       "records": [asdict(r) for r in result.records]}, out, indent=1)
    return 0 if result.lost_lines == 0 and result.extra_lines == 0 and not result.bad_stops \
        else 1


if __name__ == "__main__":
    sys.exit(main())
