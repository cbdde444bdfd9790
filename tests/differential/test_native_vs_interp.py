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


FAMILY_SEED = 20260101
NEW_FAMILIES = ("frame", "bcd", "cmpxchg8b", "dshift", "xlat", "call")


@pytest.mark.parametrize("mode", [64, 32, 16])
def test_frame_bcd_call_families_agree_with_the_cpu(native_runner, mode):
    """ENTER/LEAVE, PUSHF/POPF, PUSHA/POPA, BCD, CMPXCHG8B, SHLD/SHRD, XLAT, CALL/RET."""
    ok, reason = native_runner.supports(mode)
    if not ok:
        pytest.skip(reason)
    side = make_engine_side(_engine_or_skip())
    summary = run_cases(native_runner, side, mode, FAMILY_SEED, range(60), length=8,
                        families=NEW_FAMILIES)
    reports = "\n\n".join(d.report() for d in summary.disagreements[:10])
    assert not summary.disagreements, f"{summary.line()}\n\n{reports}"
    assert summary.total == 60


@pytest.mark.parametrize("mode", [64, 32])
def test_guard_page_faults_agree_with_the_cpu(native_runner, mode):
    """Memory operands on an unmapped page: same #PF, same W/R bit (read-modify-write
    instructions report a write)."""
    ok, reason = native_runner.supports(mode)
    if not ok:
        pytest.skip(reason)
    side = make_engine_side(_engine_or_skip())
    summary = run_cases(native_runner, side, mode, SEED, range(80), length=8, guard=True)
    reports = "\n\n".join(d.report() for d in summary.disagreements[:10])
    assert not summary.disagreements, f"{summary.line()}\n\n{reports}"
    assert summary.faulted >= 10  # the guard page was really hit
