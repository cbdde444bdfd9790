"""Control-flow signals a handler raises *after* completing its instruction.

`EndBatch`: the instruction changed something the run loop must look at
before the next one (IF, the interrupt shadow, HLT, a port write that may
raise an IRQ).  `Unsupported`: the guest asked for something this interpreter
does not implement (task switches); the run loop stops the VM with
StopKind.INTERNAL_ERROR and the message.  `SoftwareInterrupt`: INT n / INT3 / INTO, delivered by the
run loop with the next instruction's address as the return address.
"""

from __future__ import annotations


class EndBatch(Exception):  # noqa: N818 - a signal, not an error
    pass


class SoftwareInterrupt(Exception):  # noqa: N818
    def __init__(self, vector: int, return_ip: int) -> None:
        super().__init__(vector)
        self.vector = vector
        self.return_ip = return_ip


class Unsupported(Exception):  # noqa: N818
    """An architectural feature the interpreter does not implement (stops the VM)."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


END_BATCH = EndBatch()
