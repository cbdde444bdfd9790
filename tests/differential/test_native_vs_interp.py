"""The interpreter against the real CPU on random blocks (fixed seeds).

Any disagreement fails the test and prints the full report: the block's
disassembly, its initial state and every differing register, flag, memory
range or exception.  Reproduce one with the `rerun:` command it prints.
"""

from __future__ import annotations

import pytest

from pyvmm.difftest.encode import encode_case
from pyvmm.difftest.generator import GUARD_PAGE, MODE_NAMES, generate_case
from pyvmm.difftest.native_side import run_native
from pyvmm.difftest.runner import load_engine, make_engine_side, run_cases
from pyvmm.oracle.layout import CODE_BASE
from pyvmm.oracle.vendor import GUARD_DIVERGENCES, vendor_skip_reason

GUARD_VENDOR = vendor_skip_reason(GUARD_DIVERGENCES)

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


@pytest.mark.skipif(GUARD_VENDOR is not None, reason=str(GUARD_VENDOR))
@pytest.mark.parametrize("mode", [64, 32, "compat", 16])
def test_guard_page_faults_agree_with_the_cpu(native_runner, mode):
    """Memory operands on an unmapped page: same #PF, same W/R bit (read-modify-write
    instructions report a write); 16-bit: accesses across the segment limit, #GP."""
    ok, reason = native_runner.supports(MODE_NAMES[str(mode)][0])
    if not ok:
        pytest.skip(reason)
    side = make_engine_side(_engine_or_skip())
    summary = run_cases(native_runner, side, mode, SEED, range(80), length=8, guard=True)
    reports = "\n\n".join(d.report() for d in summary.disagreements[:10])
    assert not summary.disagreements, f"{summary.line()}\n\n{reports}"
    assert summary.faulted >= 10  # the guard page was really hit


@pytest.mark.parametrize("mode", [64, 32, 16])
def test_guard_strings_fault_at_both_ends(native_runner, mode):
    """--guard string instructions fault part-way on the CPU forward (the page after the
    data area; 16-bit: across offset 0FFFFH) and backward, DF=1 (the page below the code
    area; 16-bit: wrapping to 0FFFFH)."""
    ok, reason = native_runner.supports(mode)
    if not ok:
        pytest.skip(reason)
    faults = {False: 0, True: 0}  # by DF at the fault
    for index in range(600):
        enc = encode_case(generate_case(mode, SEED, index, 8, guard=True),
                          native_runner.info.exit_stub)
        out = run_native(native_runner, enc)
        at = [i for i in enc.decoded if i.ip == out.rip]
        if out.vector in (13, 14) and at and at[0].is_string_instruction:
            if mode != 16:
                assert out.fault_address >= GUARD_PAGE if not out.rflags & 0x400 \
                    else out.fault_address < CODE_BASE
            faults[bool(out.rflags & 0x400)] += 1
    assert faults[False] >= 3 and faults[True] >= 3  # measured: 32/9, 20/7, 4/9 (64/32/16)
