"""The interpreter against the real CPU on random blocks (fixed seeds).

Any disagreement fails the test and prints the full report: the block's
disassembly, its initial state and every differing register, flag, memory
range or exception.  Reproduce one with the `rerun:` command it prints.
"""

from __future__ import annotations

import pytest

from pyvmm.difftest.runner import load_engine, make_engine_side, run_cases

SEED = 20240611
COUNTS = {64: 60, 32: 60, 16: 60}  # keep the whole file well under a minute


def _engine_or_skip() -> type:
    try:
        return load_engine("interp")
    except ImportError as error:
        pytest.skip(f"the interpreter is not importable yet: {error}")


@pytest.mark.parametrize("mode", [64, 32, 16])
def test_interpreter_agrees_with_the_cpu(native_runner, mode):
    ok, reason = native_runner.supports(mode)
    if not ok:
        pytest.skip(reason)
    side = make_engine_side(_engine_or_skip())
    summary = run_cases(native_runner, side, mode, SEED, range(COUNTS[mode]), length=8)
    reports = "\n\n".join(d.report() for d in summary.disagreements[:10])
    assert not summary.disagreements, f"{summary.line()}\n\n{reports}"
    assert summary.total == COUNTS[mode]
