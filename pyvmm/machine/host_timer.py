"""One host timer for every VM in the process.

The hypervisor is the only thing that touches the real timer: each VM keeps
its own virtual timers (its `VirtualClock`), and tells the service the host
time at which it next needs its vCPU woken (the earliest of its clock's next
deadline and its run timeout).  The service runs ONE thread that arms ONE
host wait, for the earliest target over all VMs; when it expires it hands the
expiry to the VM it belongs to (the VM's `wake` callback, which kicks the
vCPU out of KVM_RUN or its HLT wait so it runs its due timers) and re-arms
for the next earliest.

The per-VM handle (`TimerChannel`) has the interface of a private waker
thread (`set_target`, `offer`, `stop`, `kicks`), so an engine uses one the
same way whether it is one VM of many or a hypervisor of one.

Targets are host monotonic times in ns (`time.monotonic_ns()`).  Only VMs
whose clock follows the host (`ClockSource.VCPU` or `HOST`, i.e. KVM) need the service:
an interpreter's clock is advanced by its own instruction count, so its
deadlines are not host times.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from pyvmm.stats import Stats

STATS_CATEGORY = "timer"
STAT_HOST_WAKEUPS = "host wake-ups"

# The longest single host wait armed.  Lock/Condition/Event waits raise
# OverflowError past threading.TIMEOUT_MAX (about 292 years on Linux, but a
# guest can ask for 2**64 ns); a longer wait is taken in pieces of this size,
# so no guest- or user-chosen time can crash a host thread.
MAX_WAIT_SECONDS = 3600.0
MAX_WAIT_NS = int(MAX_WAIT_SECONDS * 1e9)
# The longest time a user may give (run timeouts, snapshot times): about
# three years.  Longer is a typo or an attack, and is refused with a one-line
# error rather than reaching the integer-ns deadlines engine code uses.
MAX_RUN_SECONDS = 1e8


def wait_seconds_until(target_ns: int, now_ns: int) -> float:
    """Seconds from `now_ns` to `target_ns` (host ns), within [0, MAX_WAIT_SECONDS].

    Done in integers first: a target near 2**64 ns or beyond must neither
    overflow the float conversion nor the host wait."""
    return min(max(target_ns - now_ns, 0), MAX_WAIT_NS) / 1e9


def wait_event(event: threading.Event, seconds: float | None) -> bool:
    """`event.wait(seconds)` for any `seconds` (None, inf, 1e300, NaN = 0).

    Waits in pieces of at most MAX_WAIT_SECONDS until the event is set (True)
    or the whole time has passed (False)."""
    if seconds is None:
        return event.wait()
    if math.isnan(seconds):
        seconds = 0.0
    end = time.monotonic() + seconds  # inf stays inf: wait until set
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return event.is_set()
        if event.wait(min(left, MAX_WAIT_SECONDS)):
            return True


class TimerChannel:
    """One VM's registration with the host timer: its next wake-up target."""

    __slots__ = ("_service", "_wake", "_stats", "name", "_target", "kicks", "_active")

    def __init__(self, service: HostTimerService, wake: Callable[[], None],
                 stats: Stats | None, name: str) -> None:
        self._service = service
        self._wake = wake
        self._stats = stats
        if stats is not None:
            # Create the category now, on the registering thread: creating it
            # later from the timer thread could race the vCPU thread's first
            # count in the same category (defaultdict + Counter() is not atomic).
            stats.counters[STATS_CATEGORY]  # noqa: B018
        self.name = name
        self._target: int | None = None
        self.kicks = 0  # expiries delivered to this VM
        self._active = True

    @property
    def target(self) -> int | None:
        return self._target

    def set_target(self, target_ns: int | None) -> None:
        """Replace this VM's target (None: it needs no wake-up)."""
        self._service._update(self, target_ns, replace=True)

    def offer(self, target_ns: int) -> None:
        """Lower this VM's target to `target_ns` if that is earlier (any thread)."""
        self._service._update(self, target_ns, replace=False)

    def stop(self) -> None:
        """Unregister: the service forgets this VM."""
        self._service._remove(self)

    def _deliver(self) -> None:
        self.kicks += 1
        if self._stats is not None:
            self._stats.count(STATS_CATEGORY, STAT_HOST_WAKEUPS)
        self._wake()


class HostTimerService:
    """One thread, one armed host wait: the earliest target of all channels.

    `arms` counts the host waits armed (a new earliest target re-arms the
    single wait), `wakeups` the times the thread woke with expiries to deliver.
    No wait is longer than MAX_WAIT_SECONDS, whatever the targets.
    """

    def __init__(self, name: str = "pyvmm-host-timer") -> None:
        self._cond = threading.Condition()
        self._channels: list[TimerChannel] = []
        self._stopping = False
        self.arms = 0
        self.wakeups = 0
        self.delivery_errors = 0  # wake callbacks that raised (the thread carries on)
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    # -- registration ---------------------------------------------------------
    def channel(self, wake: Callable[[], None], stats: Stats | None = None,
                name: str = "") -> TimerChannel:
        """Register a VM: `wake` is called (on the service thread) at each expiry."""
        channel = TimerChannel(self, wake, stats, name)
        with self._cond:
            if self._stopping:
                raise RuntimeError("the host timer service is stopped")
            self._channels.append(channel)
        return channel

    @property
    def channels(self) -> list[TimerChannel]:
        with self._cond:
            return list(self._channels)

    def earliest(self) -> int | None:
        """The host time the single wait is (or is about to be) armed for."""
        with self._cond:
            return self._earliest()

    def _earliest(self) -> int | None:
        targets = [c._target for c in self._channels if c._target is not None]
        return min(targets) if targets else None

    def _update(self, channel: TimerChannel, target_ns: int | None, replace: bool) -> None:
        with self._cond:
            if not channel._active:
                return
            current = channel._target
            if replace:
                if target_ns == current:
                    return
            elif target_ns is None or (current is not None and target_ns >= current):
                return
            before = self._earliest()
            channel._target = target_ns
            # Only a new overall earliest target needs the armed wait moved.
            if target_ns is not None and (before is None or target_ns < before):
                self._cond.notify()

    def _remove(self, channel: TimerChannel) -> None:
        with self._cond:
            channel._active = False
            channel._target = None
            if channel in self._channels:
                self._channels.remove(channel)

    # -- the thread -------------------------------------------------------------
    def _loop(self) -> None:
        cond = self._cond
        with cond:
            while not self._stopping:
                now = time.monotonic_ns()
                due = [c for c in self._channels
                       if c._target is not None and c._target <= now]
                if due:
                    for c in due:
                        c._target = None  # the VM sets a new one when it runs
                    self.wakeups += 1
                    cond.release()
                    try:
                        for c in due:
                            try:
                                c._deliver()
                            except Exception:  # noqa: BLE001 - one VM's wake must not end the service
                                self.delivery_errors += 1
                    finally:
                        cond.acquire()
                    continue
                earliest = self._earliest()
                self.arms += 1
                # Bounded: an absurd target is re-armed every MAX_WAIT_SECONDS.
                cond.wait(None if earliest is None else wait_seconds_until(earliest, now))

    def stop(self) -> None:
        """Stop the thread (idempotent); channels stop receiving expiries."""
        with self._cond:
            self._stopping = True
            for c in self._channels:
                c._active = False
            self._channels.clear()
            self._cond.notify()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()
