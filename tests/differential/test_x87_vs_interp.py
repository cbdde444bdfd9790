"""x87 blocks (pyvmm/difftest/x87gen.py): interp and jit against the real CPU.

The whole x87 state is compared through an FNSAVE image: FCW, FSW (C0-C3, TOP, flags),
the full tag word, FIP, FOP/FDP (where the host CPU records them for every instruction,
x87gen.unrecorded_pointers) and ST(0)-ST(7), plus memory stores and EFLAGS.  A
bounded count here; the long run is `python -m pyvmm.difftest --mode 64 --families x87
--count 10000`.
"""

from __future__ import annotations

import pytest

from pyvmm.difftest.runner import load_engine, make_engine_side, run_cases

SEED = 20261207
COUNT = 60


@pytest.mark.parametrize("engine", ["interp", "jit"])
def test_x87_family_agrees_with_the_cpu(native_runner, engine):
    ok, reason = native_runner.supports(64)
    if not ok:
        pytest.skip(reason)
    side = make_engine_side(load_engine(engine))
    summary = run_cases(native_runner, side, 64, SEED, range(COUNT), length=8,
                        families=("x87",))
    reports = "\n\n".join(d.report() for d in summary.disagreements[:5])
    assert not summary.disagreements, f"{summary.line()}\n\n{reports}"
    assert summary.total == COUNT
