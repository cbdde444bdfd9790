"""The VCPU clock source: guest time is the host time the VM actually got.

pyvmm/machine/clock.py: CPU time of the vCPU thread while it runs, real time
while the guest is halted, nothing while the VM is paused or the host runs
something else.
"""

from __future__ import annotations

import time

from pyvmm.machine.clock import ClockSource, VirtualClock

MS = 1_000_000


def burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_frozen_until_the_vcpu_runs_and_after_it_stops():
    clock = VirtualClock(ClockSource.VCPU)
    start = clock.now_ns()
    time.sleep(0.02)
    assert clock.now_ns() == start
    clock.vcpu_started()
    burn(0.02)
    clock.vcpu_stopped()
    ran = clock.now_ns() - start
    assert 15 * MS <= ran < 200 * MS
    time.sleep(0.02)
    assert clock.now_ns() - start == ran  # paused: time stands still


def test_time_spent_blocked_does_not_pass_but_halted_time_does():
    clock = VirtualClock(ClockSource.VCPU)
    clock.vcpu_started()
    before = clock.now_ns()
    time.sleep(0.05)  # the thread is not running (as when the host runs others)
    assert clock.now_ns() - before < 10 * MS
    clock.idle_begin()  # the guest halted: the VMM sleeps for it
    time.sleep(0.05)
    clock.idle_end()
    assert clock.now_ns() - before >= 50 * MS
    clock.vcpu_stopped()


def test_timers_fire_on_vcpu_time():
    clock = VirtualClock(ClockSource.VCPU)
    fired = []
    clock.set_timer(5 * MS, lambda: fired.append(clock.now_ns()))
    clock.vcpu_started()
    time.sleep(0.02)
    assert clock.run_due() == 0  # blocked time is not guest time
    burn(0.01)
    assert clock.run_due() == 1 and fired[0] >= 5 * MS
    clock.vcpu_stopped()


def test_switching_sources_keeps_time_continuous():
    clock = VirtualClock(ClockSource.MANUAL)
    clock.advance(123 * MS)
    clock.set_source(ClockSource.VCPU)
    assert clock.now_ns() == 123 * MS
    clock.set_source(ClockSource.HOST)
    assert clock.now_ns() >= 123 * MS


def test_guest_time_is_zero_at_the_first_instruction_under_every_engine():
    import pytest

    from pyvmm.engines.registry import ENGINES, engine_availability
    from pyvmm.vm import ImageSpec, VirtualMachine

    ran = 0
    for engine in ENGINES:
        if not engine_availability(engine)[0]:
            continue
        vm = VirtualMachine(engine=engine)
        try:
            time.sleep(0.01)  # construction and loading take host time; the guest's clock waits
            vm.load(ImageSpec.bundled("hello"))
            assert vm.board.clock.now_ns() == 0, engine
            ran += 1
        finally:
            vm.close()
    if not ran:
        pytest.skip("no engine can run here")


def test_a_halt_ends_at_the_timer_however_late_the_host_wakes():
    """The timer is the event that ends a halt: a VMM the host wakes late (a loaded
    machine) does not give the guest the lateness, which would make the next tick
    arrive in the middle of work that fits between two ticks."""
    clock = VirtualClock(ClockSource.VCPU)
    fired = []
    clock.vcpu_started()
    cpu_start = time.thread_time_ns()
    deadline = clock.now_ns() + 10 * MS
    clock.set_timer(deadline, lambda: fired.append(clock.now_ns()))
    clock.idle_begin()
    time.sleep(0.05)  # woken 40 ms late
    clock.idle_end()
    assert clock.run_due() == 1
    cpu_used = time.thread_time_ns() - cpu_start
    assert deadline <= fired[0] <= deadline + cpu_used
    clock.vcpu_stopped()


def test_a_timer_armed_during_a_halt_ends_it_there():
    clock = VirtualClock(ClockSource.VCPU)
    clock.vcpu_started()
    cpu_start = time.thread_time_ns()
    start = clock.now_ns()
    clock.idle_begin()  # no timer yet: the halt could last indefinitely
    clock.set_timer(start + 5 * MS, lambda: None)  # e.g. armed by a host event
    time.sleep(0.03)
    clock.idle_end()
    assert clock.now_ns() - start <= 5 * MS + time.thread_time_ns() - cpu_start
    clock.vcpu_stopped()


def test_halted_time_reported_afterwards_passes_up_to_the_next_deadline():
    """idle_for: a halt measured by KVM (halt_wait_ns, --irqchip kernel) passes for the
    guest, capped at the timer that ends it; with no timer armed, in full."""
    clock = VirtualClock(ClockSource.VCPU)
    clock.idle_for(50 * MS)  # paused: time stands still
    assert clock.now_ns() == 0
    clock.vcpu_started()
    before = clock.now_ns()
    clock.idle_for(30 * MS)
    assert 30 * MS <= clock.now_ns() - before < 40 * MS
    clock.set_timer(clock.now_ns() + 20 * MS, lambda: None)
    deadline = clock.next_deadline()
    clock.idle_for(10**9)  # the host woke the vCPU late: the halt ended at the timer
    assert clock.now_ns() - deadline < 5 * MS and clock.now_ns() >= deadline
    assert clock.run_due() == 1
    clock.vcpu_stopped()
