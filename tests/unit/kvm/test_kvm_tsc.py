"""IA32_TSC_DEADLINE between KVM's guest TSC and the board LAPIC's 1 GHz virtual TSC
(pyvmm/engines/kvm/tsc.py; SDM Vol. 3A, "TSC-Deadline Mode")."""

from __future__ import annotations

from pyvmm.devices.lapic import MSR_IA32_TSC_DEADLINE, LocalApic
from pyvmm.engines.kvm.tsc import TscDeadlineMsr, convert
from pyvmm.machine.clock import ClockSource, VirtualClock

LVT_TIMER, SVR = 0x320, 0xF0
TSC_DEADLINE_MODE = 2 << 17
GUEST_KHZ = 2_500_000  # a 2.5 GHz host TSC


class GuestTsc:
    """A guest TSC at GUEST_KHZ with an arbitrary offset, driven by the board clock."""

    def __init__(self, clock: VirtualClock, offset: int) -> None:
        self.clock, self.offset = clock, offset

    def __call__(self) -> int:
        return self.offset + self.clock.now_ns() * GUEST_KHZ // 1_000_000


def deadline_apic() -> tuple[LocalApic, VirtualClock, TscDeadlineMsr]:
    clock = VirtualClock(ClockSource.MANUAL)
    apic = LocalApic(clock)
    apic.mmio_write(SVR, 4, 0x1FF)
    apic.mmio_write(LVT_TIMER, 4, TSC_DEADLINE_MODE | 0x40)
    return apic, clock, TscDeadlineMsr(apic, GuestTsc(clock, 123_456_789), GUEST_KHZ)


def run(clock: VirtualClock, ns: int) -> None:
    clock.advance(ns)
    clock.run_due()


def test_convert_rounds_up_so_a_deadline_never_fires_early() -> None:
    assert convert(2_500, GUEST_KHZ, 1_000_000) == 1_000
    assert convert(2_501, GUEST_KHZ, 1_000_000) == 1_001
    assert convert(1_000, 1_000_000, GUEST_KHZ) == 2_500


def test_a_guest_deadline_fires_after_its_distance_in_board_time() -> None:
    apic, clock, msr = deadline_apic()
    run(clock, 10_000)
    guest_now = msr.guest_tsc()
    assert msr.wrmsr(MSR_IA32_TSC_DEADLINE, guest_now + 125_000)  # 50 us at 2.5 GHz
    assert msr.rdmsr(MSR_IA32_TSC_DEADLINE) == guest_now + 125_000  # reads back as written
    run(clock, 49_999)
    assert not apic.interrupt_pending()
    run(clock, 1)
    assert apic.interrupt_pending() and apic.acknowledge() == 0x40
    assert msr.rdmsr(MSR_IA32_TSC_DEADLINE) == 0  # 0 once it has fired


def test_a_deadline_in_the_past_fires_at_once_and_zero_disarms() -> None:
    apic, clock, msr = deadline_apic()
    run(clock, 1_000)
    msr.wrmsr(MSR_IA32_TSC_DEADLINE, 5)
    run(clock, 0)
    assert apic.interrupt_pending()
    apic.acknowledge()
    msr.wrmsr(MSR_IA32_TSC_DEADLINE, msr.guest_tsc() + 1_000)
    msr.wrmsr(MSR_IA32_TSC_DEADLINE, 0)
    run(clock, 10_000)
    assert not apic.interrupt_pending() and msr.rdmsr(MSR_IA32_TSC_DEADLINE) == 0


def test_a_deadline_armed_on_the_board_reads_in_guest_units() -> None:
    """Restored from a snapshot (board units, no guest value remembered)."""
    apic, clock, msr = deadline_apic()
    apic.wrmsr(MSR_IA32_TSC_DEADLINE, clock.now_ns() + 4_000)
    assert msr.rdmsr(MSR_IA32_TSC_DEADLINE) == msr.guest_tsc() + 10_000


def test_outside_tsc_deadline_mode_the_msr_is_inert() -> None:
    apic, clock, msr = deadline_apic()
    apic.mmio_write(LVT_TIMER, 4, 0x40)  # one-shot mode
    assert msr.wrmsr(MSR_IA32_TSC_DEADLINE, msr.guest_tsc() + 10)
    run(clock, 1_000_000)
    assert not apic.interrupt_pending() and msr.rdmsr(MSR_IA32_TSC_DEADLINE) == 0
