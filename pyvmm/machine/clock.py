"""The virtual clock: guest time in nanoseconds, and timers on it.

Devices (PIT, RTC, UART timeouts) never read the host clock: they ask the
VM's `VirtualClock` and arm timers on it.  The engine decides how the clock
moves:

- `ClockSource.HOST`: guest time follows the host's monotonic clock from the
  moment the VM starts (used by KVM, whose guest runs in real time).
- `ClockSource.MANUAL`: guest time advances only when the engine calls
  `advance()` (the interpreter advances it per instruction, which makes runs
  deterministic, like QEMU's icount mode).
- `ClockSource.VCPU`: guest time is the host time the VM actually got: the
  CPU time of its vCPU thread while it runs (guest and VMM work alike), plus
  real time while the guest is halted (up to the earliest timer deadline: the
  timer is what ends the halt, so a host that wakes the VMM late does not hand
  the guest the lateness as extra time), frozen while the VM is paused.  Time
  the host scheduler gives to *other* processes does not pass for the guest,
  so a loaded host slows the guest down instead of making its timer fire in
  the middle of work that would otherwise fit between two ticks (KVM's
  default; the engine calls `vcpu_started/vcpu_stopped/idle_begin/idle_end`).

Timer callbacks run on the engine's thread, inside `run_due()`.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import threading
import time
from collections.abc import Callable

from pyvmm.schema import NS, Record

# Snapshot shape: guest time in ns, non-negative and within a signed 64-bit count.
CLOCK_STATE = Record({"now_ns": NS})


class ClockSource(enum.Enum):
    HOST = "host"
    MANUAL = "manual"
    VCPU = "vcpu"


class Timer:
    """A one-shot timer; re-arm it from its callback for periodic behaviour."""

    __slots__ = ("deadline_ns", "callback", "cancelled", "_seq", "_clock")

    def __init__(self, deadline_ns: int, callback: Callable[[], None], seq: int,
                 clock: VirtualClock | None = None) -> None:
        self.deadline_ns = deadline_ns
        self.callback = callback
        self.cancelled = False
        self._seq = seq
        self._clock = clock  # set while the timer sits in that clock's heap

    def cancel(self) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        clock, self._clock = self._clock, None
        if clock is not None:
            clock._timer_cancelled()

    def __lt__(self, other: Timer) -> bool:
        return (self.deadline_ns, self._seq) < (other.deadline_ns, other._seq)


class VirtualClock:
    def __init__(self, source: ClockSource = ClockSource.HOST) -> None:
        self.source = source
        self._manual_ns = 0
        self._host_origin = time.monotonic_ns()
        # VCPU source: guest ns at the start of the current run, the vCPU
        # thread's CPU clock and its reading then, and real time spent halted.
        self._vcpu_clock: int | None = None
        self._vcpu_cpu_start = 0
        self._idle_ns = 0
        self._idle_since: int | None = None
        # While halted: the guest time at the halt, and the earliest timer deadline
        # (idle time stops there).
        self._idle_start_ns = 0
        self._idle_limit_ns: int | None = None
        self._timers: list[Timer] = []
        self._cancelled = 0  # cancelled timers still in the heap (deleted lazily)
        self._seq = itertools.count()
        # Called (from any thread) when a new earliest deadline is armed, so a
        # sleeping engine can recompute how long to wait.
        self.on_new_deadline: Callable[[int], None] | None = None

    def set_source(self, source: ClockSource) -> None:
        """Switch sources without time going backwards."""
        now = self.now_ns()
        self.source = source
        self._manual_ns = now
        self._host_origin = time.monotonic_ns() - now
        self._vcpu_clock = None
        self._idle_since = None

    def now_ns(self) -> int:
        source = self.source
        if source is ClockSource.MANUAL:
            return self._manual_ns
        if source is ClockSource.VCPU:
            if self._vcpu_clock is None:
                return self._manual_ns  # paused: frozen
            idle = self._idle_ns
            if self._idle_since is not None:
                idle += self._idle_elapsed()
            return (self._manual_ns + time.clock_gettime_ns(self._vcpu_clock)
                    - self._vcpu_cpu_start + idle)
        return time.monotonic_ns() - self._host_origin

    # -- VCPU source: called by the engine on its vCPU thread ------------------
    def vcpu_started(self) -> None:
        """The calling thread starts running the guest: time flows from here."""
        if self.source is not ClockSource.VCPU or self._vcpu_clock is not None:
            return
        self._vcpu_clock = time.pthread_getcpuclockid(threading.get_ident())
        self._vcpu_cpu_start = time.clock_gettime_ns(self._vcpu_clock)
        self._idle_ns = 0
        self._idle_since = None

    def vcpu_stopped(self) -> None:
        """The guest is paused (run() returned): time stands still."""
        if self.source is not ClockSource.VCPU or self._vcpu_clock is None:
            return
        self.idle_end()
        self._manual_ns = self.now_ns()
        self._vcpu_clock = None

    def idle_begin(self) -> None:
        """The guest halted: real time passes for it while the VMM sleeps, up to the
        earliest timer deadline (the event that ends the halt).  Engine thread only."""
        if self.source is ClockSource.VCPU and self._idle_since is None:
            self._idle_start_ns = self.now_ns()
            self._idle_limit_ns = self.next_deadline()
            self._idle_since = time.monotonic_ns()

    def idle_end(self) -> None:
        if self._idle_since is not None:
            self._idle_ns += self._idle_elapsed()
            self._idle_since = None

    def idle_for(self, ns: int) -> None:
        """The guest was halted for `ns` of real time the engine could not bracket
        with idle_begin/idle_end (KVM's in-kernel HLT, inside KVM_RUN): it passes for
        the guest as halted time does, up to the earliest timer deadline."""
        if self.source is not ClockSource.VCPU or self._vcpu_clock is None or ns <= 0:
            return
        limit = self.next_deadline()
        if limit is not None:
            ns = min(ns, max(0, limit - self.now_ns()))
        self._idle_ns += ns

    def _idle_elapsed(self) -> int:
        assert self._idle_since is not None
        elapsed = time.monotonic_ns() - self._idle_since
        limit = self._idle_limit_ns
        if limit is not None:
            elapsed = min(elapsed, max(0, limit - self._idle_start_ns))
        return elapsed

    def advance(self, ns: int) -> None:
        """Move manual time forward (ignored for the host source)."""
        if self.source is ClockSource.MANUAL and ns > 0:
            self._manual_ns += ns

    def advance_to(self, deadline_ns: int) -> None:
        if self.source is ClockSource.MANUAL and deadline_ns > self._manual_ns:
            self._manual_ns = deadline_ns

    def _timer_cancelled(self) -> None:
        """Lazy deletion, bounded: once cancelled entries outnumber live ones the
        heap is rebuilt, so a guest re-arming a timer in a loop keeps it O(live)."""
        self._cancelled += 1
        if self._cancelled * 2 > len(self._timers):
            self._timers = [t for t in self._timers if not t.cancelled]
            heapq.heapify(self._timers)
            self._cancelled = 0

    def _pop(self) -> Timer:
        timer = heapq.heappop(self._timers)
        if timer.cancelled:
            self._cancelled -= 1
        timer._clock = None
        return timer

    @property
    def pending_timers(self) -> int:
        """Entries in the timer heap, cancelled ones included (bounded by 2x live)."""
        return len(self._timers)

    def set_timer(self, deadline_ns: int, callback: Callable[[], None]) -> Timer:
        timer = Timer(deadline_ns, callback, next(self._seq), self)
        earliest = self.next_deadline()
        heapq.heappush(self._timers, timer)
        if self._idle_since is not None and (self._idle_limit_ns is None
                                             or deadline_ns < self._idle_limit_ns):
            self._idle_limit_ns = deadline_ns  # armed while halted: the halt ends there
        if self.on_new_deadline is not None and (earliest is None or deadline_ns < earliest):
            self.on_new_deadline(deadline_ns)
        return timer

    def set_timer_after(self, delay_ns: int, callback: Callable[[], None]) -> Timer:
        return self.set_timer(self.now_ns() + max(0, delay_ns), callback)

    def next_deadline(self) -> int | None:
        while self._timers and self._timers[0].cancelled:
            self._pop()
        return self._timers[0].deadline_ns if self._timers else None

    def run_due(self) -> int:
        """Fire every timer whose deadline has passed; returns how many fired."""
        fired = 0
        now = self.now_ns()
        # self._timers, not a local: a callback's cancel() may rebuild the heap.
        while self._timers and (self._timers[0].cancelled or self._timers[0].deadline_ns <= now):
            timer = self._pop()
            if timer.cancelled:
                continue
            timer.cancelled = True
            timer.callback()
            fired += 1
        return fired

    # -- snapshot -----------------------------------------------------------
    def get_state(self) -> dict:
        return {"now_ns": self.now_ns()}

    def set_state(self, state: dict) -> None:
        CLOCK_STATE.check(state)
        self._manual_ns = state["now_ns"]
        self._host_origin = time.monotonic_ns() - state["now_ns"]
        self._vcpu_clock = None
        self._idle_since = None
