"""The bundled guests, booted through the real CLI, under every engine.

Each test asserts the guest's exact serial output and its debug-exit status
(0x10 -> 33 means the guest checked itself and succeeded).  The demo's
expected output comes from tests/guests/demo_model.py (recomputed from the
demo's definition, the same model the QEMU oracle tests use).
"""

from __future__ import annotations

import re

import pytest

from tests.conftest import kvm_skip_reason, requires_kvm, run_pyvmm
from tests.guests.demo_model import (
    combined_checksum,
    expected_demo_output,
    task_checksum,
    tick_synchronous_counts,
)

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


def _engine_skip_reason(engine: str) -> str | None:
    if engine == "kvm":
        return kvm_skip_reason()
    from pyvmm.vm import engine_availability

    ok, reason = engine_availability(engine)
    return None if ok else reason


def _engine_param(engine: str):
    reason = _engine_skip_reason(engine)
    return pytest.param(engine, marks=pytest.mark.skipif(reason is not None, reason=str(reason)))


ALL_ENGINES = [_engine_param(engine) for engine in ("kvm", "interp", "jit")]
# Engines whose guest time is counted in instructions: a run is exactly reproducible.
INSTRUCTION_CLOCKED = [_engine_param(engine) for engine in ("interp", "jit")]


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
    # The stop line comes first, and the total closes the output.
    assert lines[0].startswith("pyvmm: vm0 stopped: "), lines[:2]
    assert lines[-1] == exit_lines[0], lines[-3:]
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


@pytest.mark.parametrize("engine", ALL_ENGINES)
@pytest.mark.parametrize("work", [0, 10])
def test_demo_output_is_exactly_the_model_under_every_engine(engine, work):
    """Byte for byte what demo_model computes: under kvm as well, because its
    clock counts the time the vCPU got, so every slice fits in its tick."""
    result = run_pyvmm("run", "--engine", engine, "--append", f"work={work}", "demo",
                       timeout=300)
    assert result.stdout == expected_demo_output(work).encode(), result.stderr
    assert result.returncode == GUEST_SUCCESS, result.stderr


def _summary(stdout: bytes) -> tuple[int, int, int, int, int]:
    match = DEMO_SUMMARY.search(stdout)
    assert match, stdout
    ticks, switches, syscalls, faults = (int(match.group(i)) for i in range(1, 5))
    return ticks, switches, syscalls, faults, int(match.group(5), 16)


# spin=3000: task A's slice is 3000 passes of 3,846 instructions (256 steps
# of 15), ~11.5 M instructions, a little more than one 10 ms tick of the
# instruction-counted clock (1 ns per instruction), so the tick after the one
# that started it preempts it once, and only once.
SPIN_INTERP = 3000


@pytest.mark.parametrize("engine", INSTRUCTION_CLOCKED)
def test_demo_spin_is_preempted_deterministically(engine):
    """work=1 spin=3000: the timer preempts task A in the middle of its slice.

    The schedule, tick by tick (round-robin starts after the last task run):
    tick 1 idle->A (A's slice starts); tick 2 preempts A: A->B, B prints
    `started`, runs its slice and waits: B->A; A ends its slice and waits:
    A->idle; tick 3 wakes both, B first (A ran last): idle->B, B prints `done`
    and exits: B->A, A prints `done` and exits: A->idle.  So 3 ticks and 7
    switches where the tick-synchronous run has 2 and 6, B's `done` line comes
    first, and the checksums and system calls are those of work=1.
    """
    result = run_pyvmm("run", "--engine", engine, "--append", f"work=1 spin={SPIN_INTERP}",
                       "demo", timeout=300)
    assert result.returncode == GUEST_SUCCESS, result.stderr
    sync_ticks, sync_switches, _ = tick_synchronous_counts(1)
    assert (sync_ticks, sync_switches) == (2, 6)
    assert result.stdout == expected_demo_output(1, ticks=3, switches=7,
                                                 b_done_first=True).encode()


@requires_kvm
def test_demo_spin_is_preempted_under_kvm():
    """Under kvm a slice of ~385 M native instructions outlasts any 10 ms
    tick, so the timer preempts running ring-3 code; how often depends on the
    host's speed, so only the direction of the counts is checked, and the
    results, which must not depend on it."""
    work = 2
    result = run_pyvmm("run", "--engine", "kvm", "--append", f"work={work} spin=100000",
                       "demo", timeout=120)
    assert result.returncode == GUEST_SUCCESS, result.stderr
    ticks, switches, syscalls, faults, checksum = _summary(result.stdout)
    sync_ticks, sync_switches, sync_syscalls = tick_synchronous_counts(work)
    assert ticks > sync_ticks and switches > sync_switches, (ticks, switches)
    assert (syscalls, faults) == (sync_syscalls, 1)
    assert checksum == combined_checksum(work)
    for task, name in enumerate("AB"):
        line = f"task {name}: done checksum={task_checksum(task, work):016x}\r\n"
        assert line.encode() in result.stdout
