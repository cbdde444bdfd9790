"""The High Precision Event Timer (IA-PC HPET Specification 1.0a, Intel, Oct 2004).

Facts relied on (section numbers of the specification):

- §2.3.1: a 1 KiB memory-mapped block (here at 0xFED00000); registers are
  64 bits wide and are accessed as aligned dwords or qwords.  Other accesses
  are undefined: reads return all ones, writes are ignored, both counted.
- §2.3.4 General Capabilities and ID (0x000, read only): COUNTER_CLK_PERIOD
  in bits 63:32 (femtoseconds per tick, at most 0x05F5E100 = 100 ns),
  VENDOR_ID 31:16, LEG_RT_CAP 15, COUNT_SIZE_CAP 13 (1: 64-bit counter),
  NUM_TIM_CAP 12:8 (the last timer's number), REV_ID 7:0 (never 0).
- §2.3.5 General Configuration (0x010): ENABLE_CNF bit 0 runs the main
  counter and allows timer interrupts (0: the counter halts and no timer
  interrupts); LEG_RT_CNF bit 1 routes timer 0 to IRQ0 of the 8259 / input 2
  of the I/O APIC and timer 1 to IRQ8 / input 8, overriding their
  Tn_INT_ROUTE_CNF, and while it is set the 8254's and the RTC's outputs no
  longer reach those inputs (§2.3.9.2.2 "Legacy Replacement Option"; the
  board cuts them through `on_legacy_change`).
- §2.3.6 General Interrupt Status (0x020): Tn_INT_STS bit n is set, for a
  level-triggered timer, when its interrupt occurs (whether or not
  Tn_INT_ENB_CNF lets it reach the pin); writing 1 clears it and releases a
  level-triggered pin; writing 0 has no effect.  Edge-triggered timers leave
  it 0.
- §2.3.7 Main Counter (0x0F0): counts up at the period above while
  ENABLE_CNF is set; software may write it (the spec asks for the counter to
  be halted first; a write while it runs restarts counting from the value).
- §2.3.8 Timer N Configuration and Capabilities (0x100 + 0x20*N):
  Tn_INT_ROUTE_CAP 63:32 (the I/O APIC inputs the timer can drive),
  Tn_INT_ROUTE_CNF 13:9 (a value outside the capability is not taken: it
  does not read back), Tn_32MODE_CNF 8, Tn_VAL_SET_CNF 6, Tn_SIZE_CAP 5,
  Tn_PER_INT_CAP 4, Tn_TYPE_CNF 3 (1: periodic, only where PER_INT_CAP),
  Tn_INT_ENB_CNF 2, Tn_INT_TYPE_CNF 1 (1: level).  FSB delivery is not
  offered (Tn_FSB_INT_DEL_CAP 0), so the FSB route register reads 0.
- §2.3.9 Comparator (0x108 + 0x20*N): a one-shot timer interrupts when the
  main counter equals the comparator, and again each time the counter wraps
  around to it (every 2^32 ticks in 32-bit mode).  A periodic timer, on a
  match, adds the last value software wrote to the comparator; a write with
  Tn_VAL_SET_CNF set also sets the comparator itself ("the accumulator"),
  and the bit clears itself (§2.3.9.2.2 "Periodic mode").  In 32-bit mode
  the comparator's upper half is 0 and only the low 32 counter bits match.

This HPET: a 64-bit counter at 10 ns (100 MHz, what QEMU's offers), three
timers; timer 0 periodic-capable, all three 64-bit capable.  A periodic
timer that fell behind (a halted guest whose clock jumped) catches up with
one interrupt, as a missed edge would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pyvmm.machine.clock import Timer, VirtualClock
from pyvmm.machine.interrupts import IrqLine
from pyvmm.schema import U32, U64, Bool, ListOf, Record, StateError
from pyvmm.stats import Stats

DEFAULT_BASE = 0xFED00000
MMIO_SIZE = 0x400
PERIOD_FS = 10_000_000  # 10 ns per tick
FS_PER_NS = 1_000_000
VENDOR_ID = 0x8086
REVISION = 0x01
TIMERS = 3
COUNTER_BITS = 64

REG_CAPABILITIES = 0x000
REG_CONFIG = 0x010
REG_STATUS = 0x020
REG_COUNTER = 0x0F0
REG_TIMER_BASE = 0x100
TIMER_STRIDE = 0x20
TIMER_CONFIG, TIMER_COMPARATOR, TIMER_FSB = 0x00, 0x08, 0x10

CAP_LEG_RT = 1 << 15
CAP_COUNT_SIZE_64 = 1 << 13
CAPABILITIES = ((PERIOD_FS << 32) | (VENDOR_ID << 16) | CAP_LEG_RT | CAP_COUNT_SIZE_64
                | ((TIMERS - 1) << 8) | REVISION)

CONF_ENABLE = 1 << 0
CONF_LEGACY = 1 << 1
CONF_WRITABLE = CONF_ENABLE | CONF_LEGACY

TN_LEVEL = 1 << 1
TN_INT_ENABLE = 1 << 2
TN_PERIODIC = 1 << 3
TN_PERIODIC_CAP = 1 << 4
TN_SIZE_64_CAP = 1 << 5
TN_VAL_SET = 1 << 6
TN_32BIT = 1 << 8
TN_ROUTE_SHIFT = 9
TN_ROUTE_MASK = 0x1F << TN_ROUTE_SHIFT

# The I/O APIC inputs a timer may be routed to (Tn_INT_ROUTE_CAP): 20-23, above
# the PCI INTx pins 16-19, as Intel's ICH HPETs offer.
ROUTE_CAP = 0x00F00000
# Legacy replacement (§2.3.9.2.2): timer 0 -> ISA IRQ0, timer 1 -> ISA IRQ8.
LEGACY_ISA_IRQS = (0, 8)
# Timer 0 periodic-capable, every timer 64-bit capable.
TIMER_CAPS = tuple(TN_SIZE_64_CAP | (TN_PERIODIC_CAP if n == 0 else 0) for n in range(TIMERS))

# The shortest period the ACPI HPET table promises without lost interrupts
# (§3.2.4 "Main Counter Minimum Clock_tick in Periodic Mode"): 100 us.  The
# engines run timers between instruction batches and VM exits, so a shorter
# period can coalesce interrupts (counted as "periodic interrupts missed").
MIN_PERIODIC_TICKS = 10_000

STATS = "hpet"
# A deadline past this is never reached by any VM (about 146 years of guest time).
FAR_NS = 1 << 62

TIMER_STATE = Record({"config": U64, "comparator": U64, "period": U64})
HPET_STATE = Record({"config": U32, "status": U32, "counter": U64, "running": Bool(),
                     "timers": ListOf(TIMER_STATE, TIMERS, TIMERS)})


def _writable(number: int) -> int:
    """Timer `number`'s guest-writable configuration bits (§2.3.8)."""
    writable = TN_LEVEL | TN_INT_ENABLE | TN_VAL_SET | TN_32BIT | TN_ROUTE_MASK
    return writable | (TN_PERIODIC if TIMER_CAPS[number] & TN_PERIODIC_CAP else 0)


@dataclass
class HpetTimer:
    number: int
    config: int
    comparator: int = 0xFFFFFFFFFFFFFFFF  # reset: all ones (§2.3.9, Table 9)
    period: int = 0
    pending: Timer | None = None
    line: IrqLine | None = None  # the pin it drives now (None: not routed)

    @property
    def width(self) -> int:
        return 32 if self.config & TN_32BIT else 64


class Hpet:
    """The event timer block; `isa_irq(n)` and `ioapic_pin(n)` give the lines it drives."""

    def __init__(self, clock: VirtualClock, isa_irq: Callable[[int], IrqLine],
                 ioapic_pin: Callable[[int], IrqLine], stats: Stats | None = None) -> None:
        self.clock = clock
        self.stats = stats if stats is not None else Stats()
        self._legacy_lines = tuple(isa_irq(irq) for irq in LEGACY_ISA_IRQS)
        self._pin_lines = {pin: ioapic_pin(pin) for pin in range(32) if ROUTE_CAP >> pin & 1}
        self.config = 0
        self.status = 0
        self._counter = 0  # the count at _counter_ns (while running) or the halted count
        self._counter_ns = 0
        self.timers = [HpetTimer(n, TIMER_CAPS[n]) for n in range(TIMERS)]
        # The board's switch for the PIT's and RTC's outputs: called with True
        # while LEG_RT_CNF cuts them from IRQ0/IRQ8 (§2.3.9.2.2), False when not.
        self.on_legacy_change: Callable[[bool], None] | None = None
        self._legacy_active = False

    # -- the main counter -------------------------------------------------------
    @property
    def running(self) -> bool:
        return bool(self.config & CONF_ENABLE)

    def counter(self) -> int:
        if not self.running:
            return self._counter
        ticks = (self.clock.now_ns() - self._counter_ns) * FS_PER_NS // PERIOD_FS
        return (self._counter + ticks) & ((1 << COUNTER_BITS) - 1)

    def _set_counter(self, value: int) -> None:
        self._counter = value & ((1 << COUNTER_BITS) - 1)
        self._counter_ns = self.clock.now_ns()

    def _ns_after(self, ticks: int) -> int:
        """Guest time at which the counter will have advanced `ticks` from now."""
        now_ticks = (self.clock.now_ns() - self._counter_ns) * FS_PER_NS // PERIOD_FS
        return self._counter_ns + -(-(now_ticks + ticks) * PERIOD_FS // FS_PER_NS)

    # -- MMIO -------------------------------------------------------------------
    def mmio_read(self, offset: int, size: int) -> int:
        if size not in (4, 8) or offset % size:
            self.stats.count(STATS, "odd-sized or unaligned access")
            return (1 << (8 * size)) - 1
        register = offset & ~7
        return (self._read(register) >> (8 * (offset - register))) & ((1 << (8 * size)) - 1)

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        if size not in (4, 8) or offset % size:
            self.stats.count(STATS, "odd-sized or unaligned access")
            return
        register = offset & ~7
        shift = 8 * (offset - register)
        mask = ((1 << (8 * size)) - 1) << shift
        self._write(register, mask, (value << shift) & mask)

    def _read(self, register: int) -> int:
        if register == REG_CAPABILITIES:
            return CAPABILITIES
        if register == REG_CONFIG:
            return self.config
        if register == REG_STATUS:
            return self.status
        if register == REG_COUNTER:
            return self.counter()
        timer, field = self._timer_register(register)
        if timer is None:
            return 0  # reserved
        if field == TIMER_CONFIG:
            return (ROUTE_CAP << 32) | timer.config
        if field == TIMER_COMPARATOR:
            return timer.comparator
        return 0  # FSB route: no FSB delivery

    def _write(self, register: int, mask: int, value: int) -> None:
        """`value` is already in place within the 64-bit register; `mask` says
        which bytes the access wrote."""
        if register == REG_CONFIG:
            self._write_config((self.config & ~mask | value) & CONF_WRITABLE)
        elif register == REG_STATUS:
            self._clear_status(value)
        elif register == REG_COUNTER:
            self._set_counter(self.counter() & ~mask | value)
            self._rearm_all()
        else:
            timer, field = self._timer_register(register)
            if timer is None or field == TIMER_FSB:
                self.stats.count(STATS, "write to a read-only or reserved register")
            elif field == TIMER_CONFIG:
                self._write_timer_config(timer, (timer.config & ~mask | value) & 0xFFFFFFFF)
            else:
                self._write_comparator(timer, mask, value)

    def _timer_register(self, register: int) -> tuple[HpetTimer | None, int]:
        index, field = divmod(register - REG_TIMER_BASE, TIMER_STRIDE)
        if register < REG_TIMER_BASE or index >= TIMERS or field > TIMER_FSB:
            return None, 0
        return self.timers[index], field

    # -- configuration ----------------------------------------------------------
    def _write_config(self, value: int) -> None:
        was_running = self.running
        if was_running and not value & CONF_ENABLE:
            self._set_counter(self.counter())  # halt at the current count
        self.config = value
        if not was_running and self.running:
            self._counter_ns = self.clock.now_ns()
        self._rewire()
        self._rearm_all()

    def _write_timer_config(self, timer: HpetTimer, value: int) -> None:
        writable = _writable(timer.number)
        route = (value & TN_ROUTE_MASK) >> TN_ROUTE_SHIFT
        if not ROUTE_CAP >> route & 1:
            writable &= ~TN_ROUTE_MASK
            if route != (timer.config & TN_ROUTE_MASK) >> TN_ROUTE_SHIFT:
                self.stats.count(STATS, "route outside Tn_INT_ROUTE_CAP ignored")
        timer.config = TIMER_CAPS[timer.number] | (timer.config & ~writable & ~TIMER_CAPS[
            timer.number]) | (value & writable)
        if timer.config & TN_32BIT:
            timer.comparator &= 0xFFFFFFFF
            timer.period &= 0xFFFFFFFF
        if not timer.config & TN_LEVEL:
            self.status &= ~(1 << timer.number)
        self._rewire()
        self._rearm(timer)

    def _write_comparator(self, timer: HpetTimer, mask: int, value: int) -> None:
        if timer.config & TN_32BIT:
            mask &= 0xFFFFFFFF
            value &= 0xFFFFFFFF
        periodic = bool(timer.config & TN_PERIODIC)
        if not periodic or timer.config & TN_VAL_SET:
            timer.comparator = timer.comparator & ~mask | value
        if periodic:
            timer.period = timer.period & ~mask | value
        timer.config &= ~TN_VAL_SET
        self._rearm(timer)

    def _clear_status(self, value: int) -> None:
        cleared = value & self.status & ((1 << TIMERS) - 1)
        self.status &= ~cleared
        self._drive_lines()

    # -- interrupt lines ----------------------------------------------------------
    def _route(self, timer: HpetTimer) -> IrqLine | None:
        if self.config & CONF_LEGACY and timer.number < len(LEGACY_ISA_IRQS):
            return self._legacy_lines[timer.number]
        return self._pin_lines.get((timer.config & TN_ROUTE_MASK) >> TN_ROUTE_SHIFT)

    def _rewire(self) -> None:
        for timer in self.timers:
            line = self._route(timer)
            if line is not timer.line and timer.line is not None:
                timer.line.lower()
            timer.line = line
        legacy = bool(self.config & CONF_LEGACY)
        if legacy != self._legacy_active:
            self._legacy_active = legacy
            if self.on_legacy_change is not None:
                self.on_legacy_change(legacy)
        self._drive_lines()

    def _asserted(self, timer: HpetTimer) -> bool:
        return bool(timer.config & TN_LEVEL and timer.config & TN_INT_ENABLE
                    and self.running and self.status >> timer.number & 1)

    def _drive_lines(self) -> None:
        """Level-triggered pins follow their status bit (§2.3.6)."""
        for timer in self.timers:
            if timer.line is not None and timer.config & TN_LEVEL:
                timer.line.set(self._asserted(timer))

    def _interrupt(self, timer: HpetTimer) -> None:
        self.stats.count(STATS, f"timer {timer.number} interrupts")
        if timer.config & TN_LEVEL:
            self.status |= 1 << timer.number
            self._drive_lines()
        elif timer.config & TN_INT_ENABLE and timer.line is not None:
            timer.line.pulse()

    # -- comparator matches --------------------------------------------------------
    def _rearm_all(self) -> None:
        for timer in self.timers:
            self._rearm(timer)

    def _rearm(self, timer: HpetTimer, after_match: bool = False) -> None:
        if timer.pending is not None:
            timer.pending.cancel()
            timer.pending = None
        if not self.running:
            return
        modulus = 1 << timer.width
        ticks = (timer.comparator - self.counter()) % modulus
        if ticks == 0 and after_match:
            ticks = modulus  # a one-shot matches again after the counter wraps
        deadline = self._ns_after(ticks)
        if deadline < FAR_NS:
            timer.pending = self.clock.set_timer(deadline, lambda: self._match(timer))

    def _match(self, timer: HpetTimer) -> None:
        timer.pending = None
        self._interrupt(timer)
        if timer.config & TN_PERIODIC and timer.period:
            modulus = 1 << timer.width
            behind = (self.counter() - timer.comparator) % modulus
            steps = behind // timer.period + 1
            if steps > 1:
                self.stats.count(STATS, "periodic interrupts missed")
            timer.comparator = (timer.comparator + steps * timer.period) % modulus
            self._rearm(timer)
        else:
            self._rearm(timer, after_match=True)

    # -- snapshot -----------------------------------------------------------------
    def get_state(self) -> dict:
        return {"config": self.config, "status": self.status, "counter": self.counter(),
                "running": self.running,
                "timers": [{"config": t.config, "comparator": t.comparator,
                            "period": t.period} for t in self.timers]}

    def set_state(self, state: dict) -> None:
        HPET_STATE.check(state)
        if state["running"] != bool(state["config"] & CONF_ENABLE):
            raise StateError("running", "disagrees with config.ENABLE_CNF")
        for index, (timer, saved) in enumerate(zip(self.timers, state["timers"], strict=True)):
            route = (saved["config"] & TN_ROUTE_MASK) >> TN_ROUTE_SHIFT
            if route and not ROUTE_CAP >> route & 1:
                raise StateError(f"timers.{index}.config", f"route {route} is not offered")
            # Only the guest-writable bits are taken: a snapshot cannot change a capability.
            timer.config = TIMER_CAPS[index] | (saved["config"] & _writable(index))
            timer.comparator, timer.period = saved["comparator"], saved["period"]
        self.config = state["config"] & CONF_WRITABLE
        self.status = state["status"] & ((1 << TIMERS) - 1)
        self._set_counter(state["counter"])
        self._rewire()
        self._rearm_all()
