"""The host side of one process's NICs: named switches and TAP devices.

A `Network` is what a NIC's plain options (netdev.py's `nic_options`: a
`netdev` kind and the `ifname` or `switch` it names) are opened against.
`pyvmm run` has one per VM; `pyvmm hypervisor` has one for all its VMs, so
two VMs naming switch "lan" are ports of the same EthernetSwitch.

Every backend offers the same four things to the NIC: `send(frame)` (never
blocks: a full queue drops and counts), `receive()` (the next frame for the
NIC, or None), a thread-safe `notify` it calls when frames arrive, and
`close()`; `counter_rows()` is its hop's counters for --stats.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Protocol

from pyvmm.errors import ConfigError
from pyvmm.net.switch import EthernetSwitch
from pyvmm.net.tap import TapBackend


class Backend(Protocol):
    notify: Callable[[], None] | None

    def send(self, frame: bytes) -> None: ...

    def receive(self) -> bytes | None: ...

    def close(self) -> None: ...

    def counter_rows(self) -> dict[str, int]: ...


class Network:
    def __init__(self) -> None:
        self.switches: dict[str, EthernetSwitch] = {}
        self._lock = threading.Lock()

    def switch(self, name: str) -> EthernetSwitch:
        """The switch called `name`, made on first use."""
        with self._lock:
            if name not in self.switches:
                self.switches[name] = EthernetSwitch()
            return self.switches[name]

    def open(self, options: Mapping[str, str], port_name: str) -> tuple[str, Backend]:
        """(the hop's name for --stats, its backend) for a NIC's options."""
        kind = options.get("netdev")
        if kind == "switch":
            name = options["switch"]
            return f"switch {name}", self.switch(name).attach(port_name)
        if kind == "tap":
            ifname = options["ifname"]
            return f"tap {ifname}", TapBackend(ifname)
        raise ConfigError(f"a NIC without a known netdev: {dict(options)!r}")
