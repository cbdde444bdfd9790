"""The hypercall device: pyvmm's para-virtual timer, console and network.

One port (`abi.HYPERCALL_PORT`); a 32-bit OUT there is one hypercall.  The
device reads the arguments from the calling vCPU's registers and writes the
results back through the engine's `HypercallCpu` (`cpu_access`), so the ABI
is the same under every engine (docs/PARAVIRT.md).

Every guest buffer is given by guest-physical address and length and is
checked against the VM's RAM before it is touched: a bad one costs the guest
an -EFAULT, never the VMM an exception.  Everything here runs on the VM's
own vCPU thread; other VMs' datagrams arrive through the switch's notify
callback, which only posts to this VM's `HostEvents`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO

from pyvmm.errors import GuestMemoryError
from pyvmm.machine.clock import Timer, VirtualClock
from pyvmm.machine.events import HostEvents
from pyvmm.machine.interrupts import IrqLine
from pyvmm.machine.memory import GuestMemory
from pyvmm.paravirt import abi
from pyvmm.paravirt.abi import (
    ABI_VERSION,
    CONSOLE_MAX_WRITE,
    EAGAIN,
    EFAULT,
    EHOSTUNREACH,
    EINVAL,
    EMSGSIZE,
    ENOBUFS,
    ENODEV,
    ENOSYS,
    FEATURE_CONSOLE,
    FEATURE_NET,
    FEATURE_TIMER,
    HYPERCALL_ACCESS_SIZE,
    RAX,
    RBX,
    RCX,
    RSI,
    TIMER_MAX_PERIOD_NS,
    TIMER_MIN_PERIOD_NS,
    TIMER_PERIODIC,
    HypercallCpu,
    error,
)
from pyvmm.schema import NS, Bool, Int, Maybe, Record
from pyvmm.stats import Stats

if TYPE_CHECKING:
    from pyvmm.paravirt.switch import VirtualSwitch

STATS = "hypercalls"  # category: one counter per call name, plus the bad ones
PV_STATS = "paravirt"  # category: timer ticks, console bytes, datagrams

_SEND_ERRORS = {"dropped": ENOBUFS, "unreachable": EHOSTUNREACH, "too big": EMSGSIZE}


# Snapshot shape: a timer period is 0 (stopped) or within the ABI's range.
HYPERCALL_STATE = Record({
    "timer_period_ns": Int(0, TIMER_MAX_PERIOD_NS), "timer_periodic": Bool(),
    "timer_deadline_ns": Maybe(NS), "wait_armed": Bool(), "wait_deadline_ns": Maybe(NS),
}, rules=(
    (lambda s: s["timer_period_ns"] == 0 or s["timer_period_ns"] >= TIMER_MIN_PERIOD_NS,
     "timer_period_ns", f"neither 0 nor at least {TIMER_MIN_PERIOD_NS} ns"),
    (lambda s: not s["timer_periodic"] or s["timer_period_ns"] != 0,
     "timer_period_ns", "0 with timer_periodic set"),
))


class HypercallDevice:
    """Port device implementing the hypercalls of `pyvmm.paravirt.abi`."""

    def __init__(self, memory: GuestMemory, clock: VirtualClock, timer_irq: IrqLine,
                 event_irq: IrqLine, console: BinaryIO, events: HostEvents,
                 stats: Stats | None = None,
                 cpu_access: Callable[[], HypercallCpu | None] = lambda: None,
                 switch_lookup: Callable[[], tuple[VirtualSwitch | None, int]] | None = None
                 ) -> None:
        self.memory = memory
        self.clock = clock
        self.timer_irq = timer_irq
        self.event_irq = event_irq
        self.console = console
        self.events = events
        self.stats = stats if stats is not None else Stats()
        self._cpu_access = cpu_access
        self._switch_lookup = switch_lookup
        self.switch: VirtualSwitch | None = None
        self.vm_id = 0
        # PV timer.
        self.timer_period_ns = 0
        self.timer_periodic = False
        self._timer: Timer | None = None
        # HC_NET_WAIT: armed until a datagram arrives or the deadline passes.
        self.wait_armed = False
        self._wait_timer: Timer | None = None
        self._calls: dict[int, Callable[[list[int]], dict[int, int]]] = {
            abi.HC_PROBE: self._probe,
            abi.HC_TIMER_START: self._timer_start,
            abi.HC_TIMER_STOP: self._timer_stop,
            abi.HC_CONSOLE_WRITE: self._console_write,
            abi.HC_CLOCK: self._clock,
            abi.HC_NET_SEND: self._net_send,
            abi.HC_NET_RECV: self._net_recv,
            abi.HC_NET_WAIT: self._net_wait,
        }

    # -- the port --------------------------------------------------------------
    def io_read(self, offset: int, size: int) -> int:
        """Reads are not hypercalls: they float high like an unclaimed port."""
        return (1 << (8 * size)) - 1

    def io_write(self, offset: int, size: int, value: int) -> None:
        if offset != 0 or size != HYPERCALL_ACCESS_SIZE:
            self.stats.count(STATS, "bad access")
            return
        cpu = self._cpu_access()
        if cpu is None:
            self.stats.count(STATS, "no register access")
            return
        regs = cpu.get_registers()
        number = regs[RAX] & 0xFFFFFFFF
        handler = self._calls.get(number)
        if handler is None:
            self.stats.count(STATS, "unknown")
            result = {RAX: error(ENOSYS)}
        else:
            self.stats.count(STATS, abi.CALL_NAMES[number])
            result = handler(regs)
        cpu.set_registers(result)

    # -- guest memory ----------------------------------------------------------
    def _ram_ok(self, gpa: int, length: int, writable: bool) -> bool:
        region = self.memory.region_at(gpa, max(length, 1))
        return region is not None and not (writable and region.readonly)

    # -- probe and clock --------------------------------------------------------
    def _probe(self, regs: list[int]) -> dict[int, int]:
        switch = self._current_switch()
        features = FEATURE_TIMER | FEATURE_CONSOLE | (FEATURE_NET if switch is not None else 0)
        return {RAX: ABI_VERSION, RBX: self.vm_id, RCX: features}

    def _clock(self, regs: list[int]) -> dict[int, int]:
        return {RAX: self.clock.now_ns()}

    # -- PV timer ----------------------------------------------------------------
    def _timer_start(self, regs: list[int]) -> dict[int, int]:
        period, flags = regs[RBX], regs[RCX]
        if not TIMER_MIN_PERIOD_NS <= period <= TIMER_MAX_PERIOD_NS or flags & ~TIMER_PERIODIC:
            return {RAX: error(EINVAL)}
        self.start_timer(period, bool(flags & TIMER_PERIODIC))
        return {RAX: 0}

    def _timer_stop(self, regs: list[int]) -> dict[int, int]:
        self.stop_timer()
        return {RAX: 0}

    def start_timer(self, period_ns: int, periodic: bool) -> None:
        """(Re)start the PV timer: IRQ 0 after `period_ns`, then every period if periodic."""
        self.stop_timer()
        self.timer_period_ns = period_ns
        self.timer_periodic = periodic
        self._timer = self.clock.set_timer_after(period_ns, self._timer_fired)

    def stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.timer_period_ns = 0
        self.timer_periodic = False

    def _timer_fired(self) -> None:
        timer = self._timer
        assert timer is not None
        self.timer_irq.pulse()
        self.stats.count(PV_STATS, "timer interrupts")
        if not self.timer_periodic:
            self._timer = None
            self.timer_period_ns = 0
            return
        # Next deadline on the period grid; ticks the VM missed (the host
        # stalled it) are coalesced into this one rather than replayed in a burst.
        deadline = timer.deadline_ns + self.timer_period_ns
        now = self.clock.now_ns()
        if deadline <= now:
            missed = (now - deadline) // self.timer_period_ns + 1
            self.stats.count(PV_STATS, "timer ticks coalesced", missed)
            deadline += missed * self.timer_period_ns
        self._timer = self.clock.set_timer(deadline, self._timer_fired)

    # -- PV console ----------------------------------------------------------------
    def _console_write(self, regs: list[int]) -> dict[int, int]:
        gpa, length = regs[RBX], regs[RCX]
        if length > CONSOLE_MAX_WRITE:
            return {RAX: error(EINVAL)}
        if not self._ram_ok(gpa, length, writable=False):
            self.stats.count(PV_STATS, "console faults")
            return {RAX: error(EFAULT)}
        if length:
            self.console.write(self.memory.read(gpa, length))
            self.console.flush()
        self.stats.count(PV_STATS, "console bytes", length)
        return {RAX: length}

    # -- datagrams -------------------------------------------------------------------
    def plug(self, switch: VirtualSwitch, vm_id: int) -> None:
        """Attach this VM to `switch` as `vm_id` (the hypervisor's wiring)."""
        if self.switch is switch and self.vm_id == vm_id:
            return
        if self.switch is not None:
            self.switch.detach(self.vm_id)
        self.switch = switch
        self.vm_id = vm_id
        switch.attach(vm_id, self._notify)

    def _current_switch(self) -> VirtualSwitch | None:
        """The switch this VM is plugged into.  A board given a switch after
        construction (`board.switch`, `board.vm_id`) is plugged in here, on
        first use, if nobody plugged it in before."""
        if self._switch_lookup is not None:
            switch, vm_id = self._switch_lookup()
            if switch is None:
                if self.switch is None:
                    self.vm_id = vm_id
            elif switch is not self.switch or vm_id != self.vm_id:
                try:
                    self.plug(switch, vm_id)
                except ValueError:  # another board already holds this id
                    self.stats.count(STATS, "switch id taken")
                    return None
        return self.switch

    def _notify(self) -> None:
        """Switch callback, on the SENDER's thread: hand over to our vCPU thread."""
        self.events.post(self._datagram_arrived)

    def _datagram_arrived(self) -> None:
        self.stats.count(PV_STATS, "datagram notifications")
        if self.wait_armed:
            self._wake_waiter()

    def _wake_waiter(self) -> None:
        self.wait_armed = False
        if self._wait_timer is not None:
            self._wait_timer.cancel()
            self._wait_timer = None
        self.event_irq.pulse()
        self.stats.count(PV_STATS, "wait wake-ups")

    def _net_send(self, regs: list[int]) -> dict[int, int]:
        switch = self._current_switch()
        if switch is None:
            return {RAX: error(ENODEV)}
        destination, gpa, length = regs[RBX], regs[RCX], regs[RSI]
        if length > switch.max_payload:
            return {RAX: error(EMSGSIZE)}
        if not self._ram_ok(gpa, length, writable=False):
            return {RAX: error(EFAULT)}
        status = switch.send(self.vm_id, destination, self.memory.read(gpa, length))
        self.stats.count(PV_STATS, f"datagrams {status.value}")
        code = _SEND_ERRORS.get(status.value)
        return {RAX: 0 if code is None else error(code)}

    def _net_recv(self, regs: list[int]) -> dict[int, int]:
        switch = self._current_switch()
        if switch is None:
            return {RAX: error(ENODEV)}
        gpa, capacity = regs[RBX], regs[RCX]
        length = switch.head_length(self.vm_id)
        if length is None:
            return {RAX: error(EAGAIN)}
        if length > capacity:
            return {RAX: error(EMSGSIZE), RBX: length}
        if not self._ram_ok(gpa, length, writable=True):
            return {RAX: error(EFAULT)}
        datagram = switch.receive(self.vm_id)
        assert datagram is not None  # only this vCPU thread takes from our queue
        try:
            self.memory.write(gpa, datagram.payload)
        except GuestMemoryError:  # pragma: no cover - checked above
            return {RAX: error(EFAULT)}
        self.stats.count(PV_STATS, "datagrams received")
        return {RAX: len(datagram.payload), RBX: datagram.source}

    def _net_wait(self, regs: list[int]) -> dict[int, int]:
        """Non-blocking: the vCPU never sleeps inside a hypercall.  With
        datagrams queued it returns their count; otherwise it arms a one-shot
        IRQ_PV_EVENT pulse (datagram arrival or `timeout_ns`, 0 = none) and
        returns -EAGAIN, and the guest halts until an interrupt.  A timeout
        longer than the PV timer's longest period (1 h) is -EINVAL: no guest
        value may become a host wait the host cannot arm."""
        switch = self._current_switch()
        if switch is None:
            return {RAX: error(ENODEV)}
        timeout = regs[RBX]
        if timeout > TIMER_MAX_PERIOD_NS:
            return {RAX: error(EINVAL)}
        queued = switch.pending(self.vm_id)
        if queued:
            return {RAX: queued}
        if self._wait_timer is not None:
            self._wait_timer.cancel()
            self._wait_timer = None
        self.wait_armed = True
        if timeout:
            self._wait_timer = self.clock.set_timer_after(timeout, self._wait_expired)
        return {RAX: error(EAGAIN)}

    def _wait_expired(self) -> None:
        self._wait_timer = None
        if self.wait_armed:
            self.stats.count(PV_STATS, "wait timeouts")
            self._wake_waiter()

    # -- snapshot -------------------------------------------------------------------
    def get_state(self) -> dict:
        return {
            "timer_period_ns": self.timer_period_ns,
            "timer_periodic": self.timer_periodic,
            "timer_deadline_ns": None if self._timer is None else self._timer.deadline_ns,
            "wait_armed": self.wait_armed,
            "wait_deadline_ns": None if self._wait_timer is None
            else self._wait_timer.deadline_ns,
        }

    def set_state(self, state: dict) -> None:
        HYPERCALL_STATE.check(state)
        self.stop_timer()
        if self._wait_timer is not None:
            self._wait_timer.cancel()
            self._wait_timer = None
        self.timer_period_ns = state["timer_period_ns"]
        self.timer_periodic = state["timer_periodic"]
        if state["timer_deadline_ns"] is not None:
            self._timer = self.clock.set_timer(state["timer_deadline_ns"], self._timer_fired)
        self.wait_armed = state["wait_armed"]
        if state["wait_deadline_ns"] is not None:
            self._wait_timer = self.clock.set_timer(state["wait_deadline_ns"],
                                                    self._wait_expired)
