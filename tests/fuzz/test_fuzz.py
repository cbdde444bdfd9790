"""CI's bounded run of every fuzz target (a fixed seed, so a failure reproduces);
`python -m tests.fuzz --cases N` runs as many as you like."""

from __future__ import annotations

import pytest

from tests.fuzz.targets import COUNTS, TARGETS

# Cases per target in CI: together about a minute on an idle 2-core machine.
CI_CASES = {"devices": 40, "roundtrip": 40, "hypercalls": 40, "loaders": 60,
            "snapshot-flips": 60, "snapshot-edits": 60, "gdb-packets": 60}


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_fuzz_target(target):
    before = sum(COUNTS.values())
    TARGETS[target](CI_CASES[target], 12)
    assert sum(COUNTS.values()) > before  # the target really ran cases


def test_every_target_has_a_ci_budget():
    assert set(CI_CASES) == set(TARGETS)
