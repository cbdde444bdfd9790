"""Hardware-vector conformance of the interpreter (8086 and 80286, real mode).

Vectors: ../shared/x86-tests, a slice of SingleStepTests (MIT licence, Copyright (c)
2025 Daniel Balsom), recorded from real CPUs.  CI runs the first few tests of every
file; `python -m tests.conformance.x86_vectors --all` runs them all.  The test fails
on a failure not listed in expected_failures.txt *and* on a listed one that passes.
"""

from __future__ import annotations

import pytest

from tests.conformance import x86_vectors as xv

SAMPLE = 5

pytestmark = pytest.mark.skipif(not xv.available(),
                                reason=f"hardware vectors not found at {xv.VECTORS}")


@pytest.mark.parametrize("cpu_set", xv.SETS)
def test_vector_sample(cpu_set: str) -> None:
    files = xv.test_files(cpu_set)
    failures = xv.run_set(cpu_set, files, SAMPLE)
    count = int(failures.pop("_count")[0])
    assert count >= SAMPLE * len(files) * 0.99  # the whole sample really ran
    expected = {k for k in xv.expected_failures() if k.startswith(cpu_set + "/")}
    sampled = {k for k in expected if int(k.rsplit("#", 1)[1]) < SAMPLE}
    unexpected = {k: v for k, v in failures.items() if k not in expected}
    fixed = sampled - set(failures)
    assert not unexpected, "unexpected failures:\n" + "\n".join(
        f"{k} {v[-1]!r}: {'; '.join(v[:-1][:3])}" for k, v in sorted(unexpected.items())[:20])
    assert not fixed, ("listed in expected_failures.txt but now passing (remove them): "
                       + ", ".join(sorted(fixed)))
