"""A bare machine for running interpreter snippets: RAM, empty buses, no devices.

Ports read as all ones (an empty ISA bus), which is what the hardware
vectors expect of IN.  Used by the conformance runner and the unit tests.
"""

from __future__ import annotations

from pyvmm.machine.bus import MmioBus, PortBus
from pyvmm.machine.clock import ClockSource, VirtualClock
from pyvmm.machine.events import HostEvents
from pyvmm.machine.interrupts import NullInterruptController
from pyvmm.machine.memory import GuestMemory
from pyvmm.stats import Stats


class BareBoard:
    """Just enough of PcBoard for an engine: memory, buses, clock, events, stats."""

    def __init__(self, ram_size: int = 2 << 20) -> None:
        self.stats = Stats()
        self.memory = GuestMemory()
        self.memory.add_region("ram", 0, ram_size)
        self.ports = PortBus(self.stats)
        self.mmio = MmioBus(self.stats)
        self.clock = VirtualClock(ClockSource.MANUAL)
        self.events = HostEvents()
        self.stop_request = None
        self.interrupt_controller = NullInterruptController()
        self.cpu_access = None
        self.host_timer = None
        self.vm_id = 0

    def request_stop(self, reason) -> None:  # noqa: ANN001
        if self.stop_request is None:
            self.stop_request = reason

    def close(self) -> None:
        self.memory.close()
