"""What an engine sees of a board: the `Board` protocol.

Engines type against this, never against `PcBoard`, so the board layer never
has to be imported by an engine and a bare machine (tests/conformance's
`BareBoard`: RAM and empty buses) runs the interpreter just as well.

A board owns everything that is not the CPU: guest memory, the port and MMIO
buses, the interrupt controller an engine polls (INTR + the INTA cycle), the
virtual clock, the host-event queue, the stop request and the statistics.
"""

from __future__ import annotations

from typing import Protocol

from pyvmm.machine.bus import MmioBus, PortBus
from pyvmm.machine.clock import VirtualClock
from pyvmm.machine.events import HostEvents
from pyvmm.machine.host_timer import HostTimerService
from pyvmm.machine.interrupts import InterruptController
from pyvmm.machine.memory import GuestMemory
from pyvmm.machine.stop import StopReason
from pyvmm.stats import Stats


class Board(Protocol):
    """The board facilities every engine uses.

    `cpu_access` is set by the engine (the calling vCPU's registers, for the
    hypercall device; typed `object` because the protocol that describes it
    lives in the paravirt layer above this one); `host_timer` and `vm_id` are
    set by a hypervisor (its shared `HostTimerService` and this VM's id).
    """

    stats: Stats
    memory: GuestMemory
    ports: PortBus
    mmio: MmioBus
    clock: VirtualClock
    events: HostEvents
    stop_request: StopReason | None
    cpu_access: object | None
    host_timer: HostTimerService | None
    vm_id: int

    @property
    def interrupt_controller(self) -> InterruptController:
        """What the engine polls between instructions/exits for INTR."""
        ...

    def request_stop(self, reason: StopReason) -> None:
        """Ask the engine to stop the VM after the current instruction or exit."""
        ...
