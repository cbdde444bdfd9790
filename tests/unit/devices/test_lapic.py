"""Local APIC facts from Intel SDM Vol. 3A, "Advanced Programmable Interrupt Controller"."""

from __future__ import annotations

from pyvmm.devices.lapic import (
    APIC_VERSION,
    DEFAULT_BASE,
    MSR_IA32_APIC_BASE,
    MSR_IA32_TSC_DEADLINE,
    ApicBus,
    LocalApic,
)
from pyvmm.machine.clock import ClockSource, VirtualClock
from pyvmm.stats import Stats

ID, VER, TPR, APR, PPR, EOI, LDR, DFR, SVR = 0x20, 0x30, 0x80, 0x90, 0xA0, 0xB0, 0xD0, 0xE0, 0xF0
ISR, TMR, IRR, ESR, ICR_LO, ICR_HI = 0x100, 0x180, 0x200, 0x280, 0x300, 0x310
LVT_TIMER, LINT0, LINT1, LVT_ERROR = 0x320, 0x350, 0x360, 0x370
TIMER_INIT, TIMER_CUR, TIMER_DIV = 0x380, 0x390, 0x3E0
MASKED = 1 << 16


class FakePic:
    def __init__(self) -> None:
        self.pending = False
        self.acks = 0

    def interrupt_pending(self) -> bool:
        return self.pending

    def acknowledge(self) -> int:
        self.acks += 1
        self.pending = False
        return 0x20


def make(**kw) -> tuple[LocalApic, VirtualClock]:
    clock = VirtualClock(ClockSource.MANUAL)
    return LocalApic(clock, **kw), clock


def rd(apic: LocalApic, reg: int) -> int:
    return apic.mmio_read(reg, 4)


def wr(apic: LocalApic, reg: int, value: int) -> None:
    apic.mmio_write(reg, 4, value)


def enable(apic: LocalApic) -> None:
    wr(apic, SVR, 0x1FF)


def run(clock: VirtualClock, ns: int) -> None:
    clock.advance(ns)
    clock.run_due()


def test_reset_values() -> None:
    apic, _ = make()
    assert apic.rdmsr(MSR_IA32_APIC_BASE) == DEFAULT_BASE | 0x900  # enabled, BSP
    assert rd(apic, VER) == APIC_VERSION == 0x00050014
    assert rd(apic, DFR) == 0xFFFFFFFF
    assert rd(apic, SVR) == 0xFF
    assert rd(apic, LVT_TIMER) == MASKED
    assert rd(apic, LINT0) == 0x700  # BSP virtual wire, as QEMU/KVM reset it
    assert rd(apic, LINT1) == MASKED
    assert rd(apic, TIMER_CUR) == 0


def test_id_ldr_dfr_writable_bits() -> None:
    apic, _ = make()
    wr(apic, ID, 0x05FFFFFF)
    assert rd(apic, ID) == 0x05000000
    wr(apic, LDR, 0x12345678)
    assert rd(apic, LDR) == 0x12000000
    wr(apic, DFR, 0)
    assert rd(apic, DFR) == 0x0FFFFFFF  # bits 27:0 read as ones


def test_version_is_read_only_and_counted() -> None:
    stats = Stats()
    apic, _ = make(stats=stats)
    wr(apic, VER, 0)
    assert rd(apic, VER) == APIC_VERSION
    assert stats.get("lapic", "read-only or reserved write") == 1


def test_software_disable_masks_every_lvt_and_keeps_them_masked() -> None:
    apic, _ = make()
    enable(apic)
    wr(apic, LVT_TIMER, 0x40)
    wr(apic, SVR, 0xFF)
    assert rd(apic, LVT_TIMER) & MASKED and rd(apic, LINT0) & MASKED
    wr(apic, LVT_TIMER, 0x40)
    assert rd(apic, LVT_TIMER) == MASKED | 0x40


def test_fixed_interrupt_irr_isr_and_eoi() -> None:
    apic, _ = make()
    enable(apic)
    apic.accept(0, 0x41)
    apic.accept(0, 0x30)
    assert rd(apic, IRR + 0x20) == 1 << 1  # vector 0x41: IRR[2] bit 1
    assert rd(apic, IRR + 0x10) == 1 << 16  # vector 0x30: IRR[1] bit 16
    assert apic.interrupt_pending()
    assert apic.acknowledge() == 0x41  # highest first
    assert rd(apic, ISR + 0x20) == 1 << 1
    assert rd(apic, PPR) == 0x40
    assert not apic.interrupt_pending()  # 0x30's class is below PPR
    wr(apic, EOI, 0)
    assert apic.acknowledge() == 0x30


def test_tpr_blocks_lower_or_equal_classes() -> None:
    apic, _ = make()
    enable(apic)
    wr(apic, TPR, 0x45)
    apic.accept(0, 0x4F)
    assert not apic.interrupt_pending()
    assert rd(apic, PPR) == 0x45
    apic.accept(0, 0x50)
    assert apic.acknowledge() == 0x50


def test_illegal_vector_sets_esr_after_write() -> None:
    apic, _ = make()
    enable(apic)
    apic.accept(0, 5)
    assert rd(apic, IRR) == 0
    assert rd(apic, ESR) == 0  # not visible until ESR is written
    wr(apic, ESR, 0)
    assert rd(apic, ESR) == 0x40  # received illegal vector
    wr(apic, ESR, 0)
    assert rd(apic, ESR) == 0


def test_error_lvt_signals_errors() -> None:
    apic, _ = make()
    enable(apic)
    wr(apic, LVT_ERROR, 0xFE)
    wr(apic, ICR_LO, 0x40003)  # self-IPI, vector 3: send illegal vector
    assert apic.acknowledge() == 0xFE
    wr(apic, ESR, 0)
    assert rd(apic, ESR) == 0x20


def test_level_triggered_eoi_is_broadcast() -> None:
    bus = ApicBus()
    seen: list[int] = []
    bus.eoi_listeners.append(seen.append)
    apic, _ = make(bus=bus)
    enable(apic)
    assert bus.deliver(0, False, 0, 0x60, level=True)
    assert rd(apic, TMR + 0x30) == 1
    assert apic.acknowledge() == 0x60
    wr(apic, EOI, 0)
    assert seen == [0x60]
    apic.accept(0, 0x61)
    apic.acknowledge()
    wr(apic, EOI, 0)
    assert seen == [0x60]  # edge: no broadcast


def test_physical_logical_and_broadcast_destinations() -> None:
    bus = ApicBus()
    clock = VirtualClock(ClockSource.MANUAL)
    a = LocalApic(clock, bus, apic_id=0)
    b = LocalApic(clock, bus, apic_id=1, bsp=False)
    wr(a, LDR, 0x01000000)
    wr(b, LDR, 0x02000000)
    assert bus.targets(1, False) == [b]
    assert bus.targets(0xFF, False) == [a, b]
    assert bus.targets(0x03, True) == [a, b]  # flat model: bitmask
    assert bus.targets(0x02, True) == [b]
    wr(a, DFR, 0x0FFFFFFF)  # cluster model
    wr(a, LDR, 0x21000000)
    assert a.matches(0x21, True) and not a.matches(0x11, True)


def test_icr_ipi_to_other_apic_and_init_sipi() -> None:
    bus = ApicBus()
    clock = VirtualClock(ClockSource.MANUAL)
    a = LocalApic(clock, bus, apic_id=0)
    b = LocalApic(clock, bus, apic_id=1, bsp=False)
    enable(b)
    wr(a, ICR_HI, 0x01000000)
    wr(a, ICR_LO, 0x00000050)
    assert b.acknowledge() == 0x50
    wr(a, ICR_LO, 0x000C4500)  # INIT, all excluding self
    assert b.s.init_pending and not a.s.init_pending
    wr(a, ICR_LO, 0x000C4608)  # SIPI vector 8
    assert b.s.sipi_vector == 8
    assert rd(a, ICR_LO) & (1 << 12) == 0  # delivery status idle


def test_extint_through_lint0_and_when_globally_disabled() -> None:
    pic = FakePic()
    apic, _ = make(extint=pic)
    assert not apic.interrupt_pending()
    pic.pending = True
    assert apic.interrupt_pending()  # virtual wire at reset
    assert apic.acknowledge() == 0x20
    enable(apic)
    wr(apic, LINT0, MASKED | 0x700)
    pic.pending = True
    assert not apic.interrupt_pending()
    assert apic.wrmsr(MSR_IA32_APIC_BASE, DEFAULT_BASE | 0x100)  # global disable
    assert apic.interrupt_pending()  # INTR straight from the PIC


def test_global_disable_and_relocation() -> None:
    apic, _ = make()
    moves: list[int | None] = []
    apic.on_base_change = moves.append
    enable(apic)
    apic.accept(0, 0x40)
    assert apic.wrmsr(MSR_IA32_APIC_BASE, DEFAULT_BASE | 0x100)
    assert not apic.interrupt_pending()
    assert apic.wrmsr(MSR_IA32_APIC_BASE, 0xFED00000 | 0x900)
    assert moves == [None, 0xFED00000]
    assert rd(apic, SVR) == 0xFF and rd(apic, IRR + 0x20) == 0  # power-up state again
    assert apic.rdmsr(MSR_IA32_APIC_BASE) & 0x100  # BSP is read only
    assert not apic.wrmsr(MSR_IA32_APIC_BASE, DEFAULT_BASE | 0x100 | 0x400)  # EXTD, no EN: #GP
    assert not apic.wrmsr(MSR_IA32_APIC_BASE, DEFAULT_BASE | 0x901)  # reserved bit: #GP


def test_one_shot_timer_with_divider() -> None:
    apic, clock = make()
    enable(apic)
    wr(apic, TIMER_DIV, 0x1)  # divide by 4
    wr(apic, LVT_TIMER, 0x40)
    wr(apic, TIMER_INIT, 100)
    run(clock, 40)
    assert rd(apic, TIMER_CUR) == 90
    run(clock, 359)
    assert not apic.interrupt_pending() and rd(apic, TIMER_CUR) == 1
    run(clock, 1)
    assert apic.acknowledge() == 0x40
    assert rd(apic, TIMER_CUR) == 0
    run(clock, 1000)
    assert not apic.interrupt_pending()


def test_divide_configuration_encoding() -> None:
    apic, clock = make()
    enable(apic)
    for dcr, divisor in ((0x0, 2), (0x3, 16), (0x8, 32), (0xA, 128), (0xB, 1)):
        wr(apic, TIMER_DIV, dcr)
        wr(apic, TIMER_INIT, 1000)
        run(clock, divisor * 10)
        assert rd(apic, TIMER_CUR) == 990, dcr
    assert rd(apic, TIMER_DIV) == 0xB


def test_periodic_timer_counts_every_period_without_drift() -> None:
    apic, clock = make()
    enable(apic)
    wr(apic, TIMER_DIV, 0xB)
    wr(apic, LVT_TIMER, 0x20040)  # periodic, vector 0x40
    wr(apic, TIMER_INIT, 1000)
    taken = 0
    for _ in range(10):
        run(clock, 333)
        while apic.interrupt_pending():
            apic.acknowledge()
            wr(apic, EOI, 0)
            taken += 1
    assert taken == 3  # 3330 ns: periods end at 1000, 2000, 3000
    assert rd(apic, TIMER_CUR) == 1000 - 330


def test_masked_timer_counts_but_does_not_interrupt() -> None:
    apic, clock = make()
    enable(apic)
    wr(apic, TIMER_DIV, 0xB)
    wr(apic, LVT_TIMER, MASKED | 0x20040)
    wr(apic, TIMER_INIT, 10)
    run(clock, 25)
    assert not apic.interrupt_pending()
    assert rd(apic, TIMER_CUR) == 5


def test_timer_storm_is_bounded() -> None:
    """A 1 ns period and a long jump: one callback, missed periods coalesced."""
    apic, clock = make()
    enable(apic)
    wr(apic, TIMER_DIV, 0xB)
    wr(apic, LVT_TIMER, 0x20040)
    wr(apic, TIMER_INIT, 1)
    clock.advance(10_000_000)
    assert clock.run_due() <= 2
    assert apic.interrupt_pending()


def test_tsc_deadline_mode() -> None:
    tsc_offset = 5_000
    apic, clock = make()
    apic.read_tsc = lambda: clock.now_ns() + tsc_offset
    enable(apic)
    assert apic.wrmsr(MSR_IA32_TSC_DEADLINE, 9_000)
    assert apic.rdmsr(MSR_IA32_TSC_DEADLINE) == 0  # not in TSC-deadline mode: ignored
    wr(apic, LVT_TIMER, 0x40040)
    wr(apic, TIMER_INIT, 50)  # ignored in TSC-deadline mode
    assert rd(apic, TIMER_INIT) == 0
    apic.wrmsr(MSR_IA32_TSC_DEADLINE, 9_000)
    assert apic.rdmsr(MSR_IA32_TSC_DEADLINE) == 9_000
    run(clock, 3_999)
    assert not apic.interrupt_pending()
    run(clock, 1)
    assert apic.acknowledge() == 0x40
    assert apic.rdmsr(MSR_IA32_TSC_DEADLINE) == 0
    apic.wrmsr(MSR_IA32_TSC_DEADLINE, 20_000)
    apic.wrmsr(MSR_IA32_TSC_DEADLINE, 0)  # disarm
    run(clock, 100_000)
    assert not apic.interrupt_pending()


def test_leaving_tsc_deadline_mode_disarms() -> None:
    apic, clock = make()
    enable(apic)
    wr(apic, LVT_TIMER, 0x40040)
    apic.wrmsr(MSR_IA32_TSC_DEADLINE, 100)
    wr(apic, LVT_TIMER, 0x00040)
    run(clock, 1000)
    assert not apic.interrupt_pending()


def test_sub_dword_reads_and_bad_accesses() -> None:
    stats = Stats()
    apic, _ = make(stats=stats)
    assert apic.mmio_read(VER + 2, 1) == 0x05
    assert apic.mmio_read(VER, 2) == 0x0014
    assert apic.mmio_read(VER + 4, 4) == 0  # beyond the register's dword
    assert apic.mmio_read(VER + 3, 2) == 0
    apic.mmio_write(TPR, 1, 0x50)
    apic.mmio_write(TPR + 4, 4, 0x50)
    apic.mmio_write(TPR, 8, 0x50)
    assert rd(apic, TPR) == 0
    assert stats.get("lapic", "bad access") == 5


def test_reserved_register_read_sets_illegal_register_address() -> None:
    apic, _ = make()
    assert rd(apic, 0x40) == 0
    wr(apic, ESR, 0)
    assert rd(apic, ESR) == 0x80


def test_snapshot_resumes_running_periodic_timer() -> None:
    apic, clock = make()
    enable(apic)
    wr(apic, TIMER_DIV, 0xB)
    wr(apic, LVT_TIMER, 0x20040)
    wr(apic, TIMER_INIT, 1000)
    run(clock, 1500)
    apic.acknowledge()
    state, clock_state = apic.get_state(), clock.get_state()

    clock2 = VirtualClock(ClockSource.MANUAL)
    clock2.set_state(clock_state)
    copy = LocalApic(clock2)
    copy.set_state(state)
    assert rd(copy, TIMER_CUR) == rd(apic, TIMER_CUR) == 500
    assert rd(copy, ISR + 0x20) == 1
    run(clock2, 500)
    assert rd(copy, IRR + 0x20) == 1  # the period at 2000 ns fired after the restore
