"""The bundled guests, booted through the real CLI, under every engine.

Each test asserts the guest's exact serial output and its debug-exit status
(0x10 -> 33 means the guest checked itself and succeeded).
"""

from __future__ import annotations

import re

import pytest

from tests.conftest import kvm_skip_reason, requires_kvm, run_pyvmm

GUEST_SUCCESS = 33  # the guest wrote 0x10 to port 0xF4: (0x10 << 1) | 1
HELLO_OUTPUT = b"Hello from a pyvmm boot sector!\r\n"
DEMO_SUMMARY = re.compile(
    rb"^demo: ticks=(\d+) switches=(\d+) syscalls=(\d+) page_faults=(\d+) "
    rb"checksum=([0-9a-f]{16})\r?$", re.M)


def _interp_skip_reason() -> str | None:
    from pyvmm.vm import engine_availability

    ok, reason = engine_availability("interp")
    return None if ok else reason


requires_interp = pytest.mark.skipif(_interp_skip_reason() is not None,
                                     reason=str(_interp_skip_reason()))


@requires_kvm
def test_hello_under_kvm():
    result = run_pyvmm("run", "--engine", "kvm", "hello", timeout=60)
    assert result.stdout == HELLO_OUTPUT
    assert result.returncode == GUEST_SUCCESS, result.stderr


@requires_kvm
def test_demo_under_kvm():
    result = run_pyvmm("run", "--engine", "kvm", "--append", "work=10", "demo", timeout=120)
    assert result.returncode == GUEST_SUCCESS, result.stderr
    match = DEMO_SUMMARY.search(result.stdout)
    assert match, result.stdout
    ticks, switches, syscalls, page_faults = (int(match.group(i)) for i in range(1, 5))
    assert page_faults == 1
    assert ticks >= 10 and switches >= 20 and syscalls >= 20
    assert b"demo: cmdline work=10" in result.stdout


@requires_kvm
def test_demo_stats_ends_with_exit_total():
    result = run_pyvmm("run", "--engine", "kvm", "--append", "work=2", "demo", "--stats")
    assert result.returncode == GUEST_SUCCESS, result.stderr
    lines = result.stderr.decode().strip().splitlines()
    exit_lines = [line for line in lines if line.startswith("exits: ")]
    assert len(exit_lines) == 1
    # The total closes the stats: it is the last line before the stop line.
    assert lines[-1].startswith("pyvmm: vm0 stopped: "), lines[-2:]
    assert lines[-2] == exit_lines[0], lines[-3:]
    total = int(exit_lines[0].split()[1])
    # ...and it is the sum of the "exits:" category's counters above it.
    start = lines.index("exits:")
    counts: list[int] = []
    for line in lines[start + 1:]:
        if not line.startswith("  "):
            break
        counts.append(int(line.split()[-1]))
    assert counts and sum(counts) == total > 0, (counts, total)
    assert any("com1" in line for line in lines)


@requires_interp
def test_hello_under_interp():
    result = run_pyvmm("run", "--engine", "interp", "hello", timeout=120)
    assert result.stdout == HELLO_OUTPUT
    assert result.returncode == GUEST_SUCCESS, result.stderr


@requires_interp
@pytest.mark.skipif(kvm_skip_reason() is not None, reason=str(kvm_skip_reason()))
@pytest.mark.parametrize("guest, append", [("hello", None), ("demo", "work=3")])
def test_same_behaviour_under_interp_and_kvm(guest, append):
    extra = ["--append", append] if append else []
    kvm = run_pyvmm("run", "--engine", "kvm", *extra, guest, timeout=120)
    interp = run_pyvmm("run", "--engine", "interp", *extra, guest, timeout=600)
    assert kvm.returncode == GUEST_SUCCESS, kvm.stderr
    assert interp.stdout == kvm.stdout
    assert interp.returncode == kvm.returncode


@requires_interp
@pytest.mark.skipif(kvm_skip_reason() is not None, reason=str(kvm_skip_reason()))
def test_demo_under_kvm_stays_deterministic_on_a_loaded_host():
    """With other processes eating both host cores, the KVM demo still prints
    exactly what the interpreter prints: under kvm, guest time is the time the
    vCPU actually got (ClockSource.VCPU), so a slice that the host scheduler
    stretches does not overrun a timer tick."""
    import subprocess
    import sys

    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
               for _ in range(3)]
    try:
        reference = run_pyvmm("run", "--engine", "interp", "--append", "work=20", "demo")
        outputs = {run_pyvmm("run", "--engine", "kvm", "--append", "work=20", "demo",
                             timeout=120).stdout for _ in range(4)}
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    assert outputs == {reference.stdout}
