"""The observable outcome of running one test block, on either side."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ExecResult:
    """Architectural state after a block ran to its end or faulted.

    `rip` is the offset from the code segment base (16-bit: CS base is the
    code area; 32/64-bit: flat, so it is the linear address).  For a fault it
    is the faulting instruction (faults are restartable, SDM Vol. 3A §6.5).
    """

    gprs: list[int]
    rflags: int
    rip: int
    data: bytes
    vector: int | None = None  # exception vector, None when the block completed
    error_code: int | None = None
    fault_address: int | None = None  # #PF: CR2 (native: the signal's si_addr)
    timed_out: bool = False
    fxsave: bytes = b""  # FXSAVE image of the FP/SIMD state at the end (empty: not known)
    note: str = ""  # anything the side could not express as state (e.g. an engine error)
