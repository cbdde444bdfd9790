"""What every engine implements, and the ways a VM can stop.

An engine executes the guest on a board (memory, buses, devices, clock).  It
takes a `CpuState` in, runs until something stops the VM, and gives a
`CpuState` back: that is the whole contract, which is what lets a snapshot
move a VM between engines.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyvmm.cpu.state import CpuState

if TYPE_CHECKING:
    from pyvmm.board.pc import PcBoard


class StopKind(enum.Enum):
    """Why a VM stopped.  `exit_code` is what `pyvmm run` returns for it.

    Guest debug-exit statuses are always odd ((v << 1) | 1), so pyvmm's own
    codes are even and never collide with a guest's.
    """

    DEBUG_EXIT = ("debug-exit", None)
    USER_QUIT = ("user quit", 0)
    TIMEOUT = ("timeout", 4)
    TRIPLE_FAULT = ("triple fault", 6)
    HALTED = ("halted with interrupts disabled", 8)
    INTERNAL_ERROR = ("internal error", 10)
    RESET = ("guest requested reset", 12)
    PAUSED = ("paused", 14)
    EXCEPTION = ("guest exception intercepted", 16)  # only when an engine is told to intercept
    UNMAPPED_ACCESS = ("guest accessed unmapped physical memory", 20)
    OUTPUT_LIMIT = ("console output limit reached", 22)  # a hypervisor VM's budget

    def __init__(self, label: str, exit_code: int | None) -> None:
        self.label = label
        self.exit_code = exit_code


@dataclass
class StopReason:
    kind: StopKind
    message: str = ""
    guest_status: int | None = None  # for DEBUG_EXIT: (v << 1) | 1
    vector: int | None = None  # for EXCEPTION: the intercepted vector
    error_code: int | None = None  # for EXCEPTION, when the vector has one

    @property
    def exit_code(self) -> int:
        if self.kind is StopKind.DEBUG_EXIT:
            assert self.guest_status is not None
            return self.guest_status
        assert self.kind.exit_code is not None
        return self.kind.exit_code

    def describe(self) -> str:
        text = self.kind.label
        if self.kind is StopKind.DEBUG_EXIT:
            text += f" with status {self.guest_status}"
        if self.message:
            text += f": {self.message}"
        return text


class Engine(ABC):
    """One way of executing guest code on a `PcBoard`."""

    name: str = "?"

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        """(True, "") if this engine can run here, else (False, reason)."""
        return True, ""

    def __init__(self, board: PcBoard) -> None:
        self.board = board

    @abstractmethod
    def set_state(self, state: CpuState) -> None:
        """Load the architectural state the guest starts or resumes from."""

    @abstractmethod
    def get_state(self) -> CpuState:
        """Read back the architectural state (after run() returned)."""

    @abstractmethod
    def run(self, timeout: float | None = None) -> StopReason:
        """Execute until the VM stops, or until `timeout` host seconds pass (TIMEOUT)."""

    def wake(self) -> None:
        """Thread-safe: make a running `run()` look at host events soon."""
        return None

    def request_pause(self) -> None:
        """Thread-safe: make `run()` return PAUSED at the next instruction boundary."""
        return None

    def close(self) -> None:
        """Release host resources (file descriptors, mappings)."""
        return None
