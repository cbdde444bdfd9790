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

Who kicks at the clock's next deadline or the run timeout: the process's one
host timer (pyvmm.machine.host_timer.HostTimerService).
"""

from __future__ import annotations

import signal
import threading

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
