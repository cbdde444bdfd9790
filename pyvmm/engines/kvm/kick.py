"""Getting a vCPU thread out of KVM_RUN promptly, from any thread.

Mechanism (KVM API, "KVM_RUN" / "immediate_exit" / "KVM_SET_SIGNAL_MASK"):
a kick sets kvm_run.immediate_exit = 1 (covers a vCPU that is about to
enter) and sends SIGUSR1 to the vCPU thread (covers one already in guest
mode: a pending unblocked signal makes KVM_RUN return -EINTR).

So that the signal can never kill the process, whatever its disposition, the
vCPU thread keeps SIGUSR1 *blocked* while it runs Python code and lets KVM
unblock it only for the duration of KVM_RUN (KVM_SET_SIGNAL_MASK).  A
delivered kick therefore stays pending and is consumed with sigtimedwait();
the kernel does not apply a default "terminate" action to a signal blocked in
the thread's saved mask.  As a second guard, a no-op Python handler is
installed when we are on the main thread and SIGUSR1 is at SIG_DFL.

`Waker` is the thread that kicks at the clock's next deadline or the run
timeout, whichever comes first.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable

KICK_SIGNAL = signal.SIGUSR1


def _ignore(signum: int, frame: object) -> None:
    """No-op handler: the kick's only job is to interrupt KVM_RUN."""


def ensure_handler() -> None:
    """Install the no-op handler if SIGUSR1 is at its default (terminate) disposition.

    Only possible on the main thread (signal.signal's rule); elsewhere the
    signal mask alone keeps the kick harmless.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(KICK_SIGNAL) in (signal.SIG_DFL, None):
        signal.signal(KICK_SIGNAL, _ignore)


def sigset_bits(signals: set[int]) -> int:
    """The kernel sigset_t bitmap (bit n-1 for signal n) of `signals`."""
    bits = 0
    for sig in signals:
        bits |= 1 << (int(sig) - 1)
    return bits


def block_kick() -> set[int]:
    """Block SIGUSR1 in the calling thread; returns the previous mask."""
    return set(signal.pthread_sigmask(signal.SIG_BLOCK, {KICK_SIGNAL}))


def consume_kicks() -> int:
    """Dequeue a pending (blocked) SIGUSR1 of this thread; returns how many (0 or 1)."""
    consumed = 0
    while signal.sigtimedwait({KICK_SIGNAL}, 0) is not None:
        consumed += 1
    return consumed


def restore_mask(mask: set[int]) -> None:
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)


class Waker:
    """A daemon thread that calls `kick()` when the earliest target time passes.

    Targets are host monotonic times in ns.  `set_target` is thread-safe and
    only ever wakes the thread when the new target is earlier (or cleared).
    After kicking, the thread waits for the vCPU thread to set a new target.
    """

    def __init__(self, kick: Callable[[], None], name: str = "pyvmm-kvm-waker") -> None:
        self._kick = kick
        self._cond = threading.Condition()
        self._target: int | None = None
        self._stopping = False
        self.kicks = 0
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @property
    def target(self) -> int | None:
        return self._target

    def set_target(self, target_ns: int | None) -> None:
        """Replace the target (None: nothing to wait for)."""
        with self._cond:
            if target_ns == self._target:
                return
            earlier = target_ns is not None and (self._target is None or target_ns < self._target)
            self._target = target_ns
            if earlier:
                self._cond.notify()

    def offer(self, target_ns: int) -> None:
        """Lower the target to `target_ns` if that is earlier than the current one."""
        with self._cond:
            if self._target is None or target_ns < self._target:
                self._target = target_ns
                self._cond.notify()

    def _loop(self) -> None:
        with self._cond:
            while not self._stopping:
                target = self._target
                if target is None:
                    self._cond.wait()
                    continue
                delay = target - time.monotonic_ns()
                if delay > 0:
                    self._cond.wait(delay / 1e9)
                    continue
                self._target = None
                self.kicks += 1
                self._kick()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)
