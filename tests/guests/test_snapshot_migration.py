"""Moving a running guest between engines through a snapshot, via the real CLI.

The bundled guests are deterministic by design (the demo's tasks synchronise
to timer ticks), so a run that is snapshotted part-way and resumed under
another engine must print exactly the same serial output, and exit with the
same status, as an uninterrupted run: output before the snapshot + output
after the restore == the whole output.
"""

from __future__ import annotations

import functools

import pytest

from tests.conftest import kvm_skip_reason, requires_kvm, run_pyvmm

GUEST_SUCCESS = 33


@functools.cache
def uninterrupted(guest: str) -> tuple[bytes, int]:
    result = run_pyvmm("run", "--engine", "interp", guest, timeout=300)
    assert result.returncode == GUEST_SUCCESS, result.stderr
    return result.stdout, result.returncode


# Under KVM the demo's guest time is the time its vCPU got (ClockSource.VCPU),
# so host load does not change its output: every pair of engines gets exactly
# one run, whose output must equal the uninterrupted run's.


def _skip_unless_available(*engines: str) -> None:
    if "kvm" in engines and kvm_skip_reason() is not None:
        pytest.skip(str(kvm_skip_reason()))


def migrate(tmp_path, guest: str, first: str, second: str, *pause: str) -> tuple[bytes, int]:
    """Run `guest` under `first` to the pause point, save, resume under `second`."""
    path = tmp_path / f"{guest}.pvs"
    before = run_pyvmm("run", "--engine", first, guest, "--snapshot-to", str(path), *pause,
                       timeout=300)
    assert before.returncode == 0, before.stderr
    assert b"snapshot saved to" in before.stderr
    after = run_pyvmm("run", "--restore", str(path), "--engine", second, timeout=300)
    assert f"resuming under {second}".encode() in after.stderr, after.stderr
    return before.stdout + after.stdout, after.returncode


@pytest.mark.parametrize("second", ["kvm", "jit", "interp"])
@pytest.mark.parametrize("instructions", [30_000, 125_000])
def test_demo_interp_to_other_engine_after_n_instructions(tmp_path, second, instructions):
    _skip_unless_available(second)
    output, status = migrate(tmp_path, "demo", "interp", second,
                             "--snapshot-after-instructions", str(instructions))
    assert (output, status) == uninterrupted("demo")


@requires_kvm
@pytest.mark.parametrize("seconds", ["0.02", "0.12"])
def test_demo_kvm_to_interp_after_host_time(tmp_path, seconds):
    # KVM's clock is the host's, so the pause point differs run to run; the
    # demo's output must not.
    output, status = migrate(tmp_path, "demo", "kvm", "interp", "--snapshot-at", seconds)
    assert (output, status) == uninterrupted("demo")


@requires_kvm
@pytest.mark.parametrize("instructions", [60, 250])
def test_hello_interp_to_kvm(tmp_path, instructions):
    output, status = migrate(tmp_path, "hello", "interp", "kvm",
                             "--snapshot-after-instructions", str(instructions))
    assert (output, status) == uninterrupted("hello")


@requires_kvm
def test_switch_in_process_reports_where(tmp_path):
    result = run_pyvmm("run", "--engine", "interp", "demo", "--switch-to", "kvm",
                       "--switch-after-instructions", "70000", timeout=300)
    assert (result.stdout, result.returncode) == uninterrupted("demo")
    assert (b"switched interp -> kvm at guest time " in result.stderr
            and b"after 70000 guest instructions" in result.stderr), result.stderr


def test_switch_in_process_interp_to_jit_by_host_time():
    result = run_pyvmm("run", "--engine", "interp", "demo", "--switch-to", "jit",
                       "--switch-after", "0.05", timeout=300)
    assert (result.stdout, result.returncode) == uninterrupted("demo")
    assert b"switched interp -> jit at guest time" in result.stderr, result.stderr


def test_guest_that_ends_before_the_pause_point_writes_nothing(tmp_path):
    path = tmp_path / "late.pvs"
    result = run_pyvmm("run", "--engine", "interp", "hello", "--snapshot-to", str(path),
                       "--snapshot-after-instructions", "1000000", timeout=300)
    assert (result.stdout, result.returncode) == uninterrupted("hello")
    assert b"no snapshot written" in result.stderr
    assert not path.exists()
