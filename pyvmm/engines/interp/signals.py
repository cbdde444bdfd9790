"""Control-flow signals a handler raises *after* completing its instruction.

`EndBatch`: the instruction changed something the run loop must look at
before the next one (IF, the interrupt shadow, HLT, a port write that may
raise an IRQ).  `SoftwareInterrupt`: INT n / INT3 / INTO, delivered by the
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


END_BATCH = EndBatch()
