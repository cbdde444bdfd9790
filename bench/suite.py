"""Running the suite: pick n per runner so each run takes about the target time.

Runners differ by about four orders of magnitude (the interpreter against
native ring 3 under KVM), so no single n suits them all.  For each benchmark
and runner: one run with n = 0 gives the fixed cost (start-up, boot, and the
measured part's constant C), then probes grow n until the loop takes long
enough to extrapolate, and the final run uses the n that should take the
target time.  `plan_next` is that decision, kept pure for the unit tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from bench.results import GuestResult, Measurement, parse_guest_output
from bench.runners import Runner, RunOutcome

BENCHES = ("int", "mem", "sys", "io", "kloop")
START_N = {"int": 1000, "mem": 1000, "sys": 20, "io": 100,
           "kloop": 1000}  # first probe: quick anywhere
N_MAX = 10**12                  # the guests clamp n here (guests/bench/bench.inc)
MAX_GROWTH = 100                # a probe grows n at most this much
MAX_PROBES = 8


def plan_next(n: int, loop_seconds: float, target: float) -> tuple[str, int]:
    """What to do after a run of n iterations whose loop took loop_seconds.

    ("accept", n): within a factor of two of the target, keep this run;
    ("final", m): long enough (>= target / 5) to extrapolate: m should take
    the target time;
    ("probe", m): too short to trust: try a larger m.
    The caller runs m and asks again, until a run is accepted.
    """
    if target / 2 <= loop_seconds <= target * 2:
        return "accept", n
    if loop_seconds >= target / 5:
        return "final", max(1, min(N_MAX, round(n * target / loop_seconds)))
    growth = MAX_GROWTH if loop_seconds <= 0 else min(MAX_GROWTH, target / loop_seconds)
    return "probe", min(N_MAX, max(n + 1, math.ceil(n * max(2.0, growth))))


def check_run(outcome: RunOutcome, n: int) -> tuple[GuestResult | None, str]:
    """The guest's result line when the run is good, else (None, why not)."""
    if outcome.error:
        return None, outcome.error
    result = parse_guest_output(outcome.output)
    if result is None:
        return None, "no result line in the guest's output: " + outcome.output[-200:].strip()
    if result.n != n:
        return None, f"the guest ran n={result.n}, asked for n={n}"
    return result, ""


def measure(runner: Runner, bench: str, image: Path, target: float, timeout: float,
            repeat: int = 1, progress: Callable[[str], None] | None = None,
            startup_multiple: float = 0.0) -> Measurement:
    """Calibrate n for this runner and benchmark, then time it (best of `repeat`).

    The fixed cost is the faster of two n=0 runs.  When it is large (QEMU
    with KVM on this nested host spends seconds in firmware) its noise
    would swamp a short loop, so the loop is made to last at least
    `startup_multiple` times the fixed cost.
    """
    say = progress or (lambda _line: None)

    def run(n: int) -> tuple[RunOutcome, GuestResult | None, str]:
        outcome = runner.run(image, f"n={n}", timeout)
        result, error = check_run(outcome, n)
        say(f"  {bench} on {runner.name}: n={n} {outcome.wall_seconds:.3f} s"
            + (f" FAILED: {error}" if error else ""))
        return outcome, result, error

    def failure(n: int, error: str) -> Measurement:
        return Measurement(bench, runner.name, ok=False, n=n, error=error)

    startup, base_result = math.inf, None
    for _ in range(2):
        base, result, error = run(0)
        if result is None:
            return failure(0, f"n=0 run: {error}")
        if base.wall_seconds < startup:
            startup, base_result = base.wall_seconds, result
    assert base_result is not None
    goal = max(target, startup_multiple * startup)
    n = START_N[bench]
    final: tuple[RunOutcome, GuestResult] | None = None
    for _ in range(MAX_PROBES):
        outcome, result, error = run(n)
        if result is None:
            return failure(n, error)
        final = outcome, result
        decision, next_n = plan_next(n, outcome.wall_seconds - startup, goal)
        if decision == "accept":
            break
        n = next_n
    assert final is not None
    n = final[1].n
    for _ in range(repeat - 1):
        outcome, result, error = run(n)
        if result is not None and outcome.wall_seconds < final[0].wall_seconds:
            final = outcome, result
    outcome, result = final
    return Measurement(
        bench=bench, runner=runner.name, ok=True, n=result.n,
        instructions=result.instructions, startup_instructions=base_result.instructions,
        wall_seconds=outcome.wall_seconds, startup_seconds=startup, exits=outcome.exits,
        engine_instructions=outcome.engine_instructions)
