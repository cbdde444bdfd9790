"""QEMU's debugging ports: isa-debug-exit (0xF4) and debugcon (0xE9).

Neither is PC hardware; both are de-facto standards that test guests use to
report a result (QEMU hw/misc/debugexit.c, hw/char/debugcon.c; Bochs port
0xE9 hack).  debugcon uses the low byte of a wider access; debug-exit takes
the whole value written, as QEMU's does with iosize=4 (the exit status keeps
only its low bits anyway).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO, Protocol

from pyvmm.schema import EMPTY

BYTE_MASK = 0xFF
DEBUGCON_READBACK = 0xE9  # what a read of the debugcon port returns (guest detection)


class Writer(Protocol):
    def write(self, data: bytes) -> object: ...
    def flush(self) -> None: ...


class DebugExit:
    """isa-debug-exit: a write of v asks the board to stop with status (v << 1) | 1.

    Reads are not decoded by QEMU's device, so they float high like an
    unclaimed ISA port (all ones for the access size).
    """

    def __init__(self, on_exit: Callable[[int], None]) -> None:
        self._on_exit = on_exit

    def io_read(self, offset: int, size: int) -> int:
        return (1 << (8 * size)) - 1

    def io_write(self, offset: int, size: int, value: int) -> None:
        self._on_exit(value & ((1 << (8 * size)) - 1))

    def get_state(self) -> dict:
        return {}

    def set_state(self, state: dict) -> None:
        EMPTY.check(state)


class DebugConsole:
    """debugcon: every byte written goes to `output`; reads return 0xE9."""

    def __init__(self, output: BinaryIO | Writer) -> None:
        self._output = output

    def io_read(self, offset: int, size: int) -> int:
        return DEBUGCON_READBACK

    def io_write(self, offset: int, size: int, value: int) -> None:
        self._output.write(bytes((value & BYTE_MASK,)))
        self._output.flush()

    def get_state(self) -> dict:
        return {}

    def set_state(self, state: dict) -> None:
        EMPTY.check(state)
