"""The bundled `apic` guest: the local APIC timer (periodic, TSC-deadline), the
PIT and COM1 through the I/O APIC, a self-IPI; one summary line.

Its counts are deterministic by construction (each phase waits for exactly N
interrupts), so every engine prints the same line.
"""

from __future__ import annotations

import pytest

from tests.conftest import requires_kvm, run_pyvmm

EXPECTED = b"apic: periodic=8 tsc-deadline=8 pit-gsi2=8 gsi0=0 com1=8 self-ipi=1 spurious=0 ok"


def apic_run(engine: str, *options: str):
    return run_pyvmm("run", "--engine", engine, *options, "--timeout", "120", "apic",
                     timeout=300)


@pytest.fixture(scope="module")
def interp_run():
    return apic_run("interp")


def test_apic_guest_under_interp(interp_run):
    assert interp_run.returncode == 33, interp_run.stderr
    assert interp_run.stdout.splitlines() == [EXPECTED]
    assert b"Traceback" not in interp_run.stderr


def test_apic_guest_output_is_the_same_under_jit(interp_run):
    done = apic_run("jit")
    assert done.returncode == 33, done.stderr
    assert done.stdout == interp_run.stdout


@requires_kvm
def test_apic_guest_output_is_the_same_under_kvm_with_the_board_s_irqchip(interp_run):
    """--irqchip user: the board's LAPIC, I/O APIC and PIT through MMIO, port and MSR
    exits; IA32_TSC_DEADLINE in guest TSC units converted to the board's (kvm/tsc.py)."""
    done = apic_run("kvm", "--irqchip", "user", "--stats")
    assert done.returncode == 33, done.stderr
    assert done.stdout == interp_run.stdout
    assert b"wrmsr" in done.stderr  # the deadline writes came to the board's LAPIC


@requires_kvm
def test_apic_guest_output_is_the_same_under_kvm_s_in_kernel_irqchip(interp_run):
    """--irqchip kernel: KVM's LAPIC, I/O APIC and PIT.  KVM's LAPIC offers
    TSC-deadline mode only when the guest's CPUID.01H:ECX[24] says so."""
    done = apic_run("kvm", "--irqchip", "kernel", "--stats")
    assert done.returncode == 33, done.stderr
    assert done.stdout == interp_run.stdout
    assert b"wrmsr" not in done.stderr and b"  hlt " not in done.stderr  # all in KVM


# Where the guest is after N instructions (it runs ~11,000): 7,150 and 7,350 in
# the periodic phase (LAPIC count running), 7,628 with IA32_TSC_DEADLINE armed,
# 8,300 with the PIT routed to GSI 2, 9,500 with COM1 routed to GSI 4.
@pytest.mark.parametrize("first, second", [("interp", "jit"), ("jit", "interp")])
@pytest.mark.parametrize("instructions", [7_150, 7_350, 7_628, 8_300, 9_500])
def test_apic_guest_moves_between_engines_with_the_apic_timer_running(
        tmp_path, interp_run, first, second, instructions):
    """Snapshotted part-way (the LAPIC timer armed, I/O APIC routes set), resumed
    under the other engine: the output is that of the uninterrupted run."""
    path = tmp_path / "apic.pvs"
    before = run_pyvmm("run", "--engine", first, "apic", "--snapshot-to", str(path),
                       "--snapshot-after-instructions", str(instructions), timeout=300)
    assert before.returncode == 0, before.stderr
    after = run_pyvmm("run", "--restore", str(path), "--engine", second, timeout=300)
    assert after.returncode == 33, after.stderr
    assert before.stdout + after.stdout == interp_run.stdout
