"""The ways a VM can stop, each with the exit status `pyvmm run` returns.

Below the board and every engine: the board requests stops (debug-exit, reset,
unmapped access) and an engine returns them from `run()`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


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
    OUTPUT_CLOSED = ("host output closed", 24)  # stdout's reader went away (`| head -1`)
    POWER_OFF = ("guest powered off (ACPI S5)", 26)  # PIIX4 PM1 control SLP_EN with S5
    REPLAY_DIVERGED = ("replay diverged from the recording", 28)  # --replay

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
