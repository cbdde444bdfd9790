"""--mode compat: 32-bit code in IA-32e compatibility mode, against the CPU.

SDM Vol. 3A §5.2.1 / §9.8.5: with IA32_EFER.LMA = 1, a code segment with L = 0 and
D = 1 runs 32-bit code under 4-level paging.  The native side runs every 32-bit block
so (a 32-bit code segment in a 64-bit Linux process); the tester's "compat" mode runs
the engine the same way, while "32" runs it in legacy protected mode.
"""

from __future__ import annotations

import pytest

from pyvmm.cpu.state import EFER_LMA
from pyvmm.difftest.encode import encode_case
from pyvmm.difftest.engine_side import initial_state
from pyvmm.difftest.generator import generate_case
from pyvmm.difftest.runner import load_engine, make_engine_side, run_cases
from pyvmm.oracle.vendor import GUARD_DIVERGENCES, vendor_skip_reason

GUARD_VENDOR = vendor_skip_reason(GUARD_DIVERGENCES)

SEED = 20261208


def test_compat_blocks_start_in_compatibility_mode() -> None:
    enc = encode_case(generate_case(32, SEED, 0, compat=True), exit_stub=0x30001000)
    state = initial_state(enc, cr3=0x1000)
    assert state.mode_name() == "compatibility"
    assert state.efer & EFER_LMA and state.cr3 == 0x1000
    legacy = initial_state(encode_case(generate_case(32, SEED, 0), exit_stub=0x30001000),
                           cr3=0x1000)
    assert legacy.mode_name() == "protected-32" and not legacy.efer & EFER_LMA


def test_compat_draws_its_own_blocks() -> None:
    same = sum(str(generate_case(32, SEED, i).body) ==
               str(generate_case(32, SEED, i, compat=True).body) for i in range(20))
    assert same == 0
    with pytest.raises(ValueError):
        generate_case(64, SEED, 0, compat=True)


@pytest.mark.parametrize("engine", ["interp", "jit"])
@pytest.mark.parametrize("guard", [False, True])
def test_compat_blocks_agree_with_the_cpu(native_runner, engine: str, guard: bool) -> None:
    if guard and GUARD_VENDOR is not None:
        pytest.skip(GUARD_VENDOR)
    side = make_engine_side(load_engine(engine))
    summary = run_cases(native_runner, side, "compat", SEED, range(100), length=8,
                        guard=guard)
    reports = "\n\n".join(d.report() for d in summary.disagreements[:10])
    assert not summary.disagreements, f"{summary.line()}\n\n{reports}"
    assert summary.total == 100
    assert summary.line().startswith("mode compat:")
    if guard:
        assert summary.faulted >= 10  # the unmapped page after the data area was hit
