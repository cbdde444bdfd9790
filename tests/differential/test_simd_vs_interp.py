"""MMX, SSE and SSE2 blocks: the interpreter against the real CPU (XMM, MM, MXCSR too).

Small counts here; the 10,000-sequence runs are `python -m pyvmm.difftest
--families mmx|sse|sse2 --mode all --count 10000`.
"""

from __future__ import annotations

import pytest

from pyvmm.difftest.runner import load_engine, make_engine_side, run_cases

SEED = 20261207
COUNT = 40


@pytest.mark.parametrize("family", ["mmx", "sse", "sse2"])
@pytest.mark.parametrize("mode", [64, 32, 16])
def test_simd_family_agrees_with_the_cpu(native_runner, mode, family):
    ok, reason = native_runner.supports(mode)
    if not ok:
        pytest.skip(reason)
    side = make_engine_side(load_engine("interp"))
    summary = run_cases(native_runner, side, mode, SEED, range(COUNT), length=8,
                        families=(family,))
    reports = "\n\n".join(d.report() for d in summary.disagreements[:5])
    assert not summary.disagreements, f"{summary.line()}\n\n{reports}"
    assert summary.total == COUNT


def test_simd_state_differences_are_reported():
    """The comparison sees a changed XMM register, MM register and MXCSR."""
    from pyvmm.difftest import simd
    base = simd.state_image(0x1F80, [0] * 8, [0] * 16)
    other = simd.state_image(0x1FA0, [0] * 7 + [5], [0] * 15 + [1 << 127])
    whats = {what for what, _, _ in simd.compare_state(64, base, other)}
    assert whats == {"mxcsr", "mm7", "xmm15"}
    assert {w for w, _, _ in simd.compare_state(32, base, other)} == {"mxcsr", "mm7"}
