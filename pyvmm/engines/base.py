"""What every engine implements.

An engine executes the guest on a board (memory, buses, devices, clock).  It
takes a `CpuState` in, runs until something stops the VM, and gives a
`CpuState` back: that is the whole contract, which is what lets a snapshot
move a VM between engines.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from pyvmm.cpu.state import CpuState

if TYPE_CHECKING:
    from pyvmm.machine.board import Board
    from pyvmm.machine.hooks import HookKind, HookSet
    from pyvmm.machine.stop import StopReason


class Engine(ABC):
    """One way of executing guest code on a `Board` (pyvmm/machine/board.py)."""

    name: str = "?"
    # The hook kinds (pyvmm/machine/hooks.py) this engine can serve; ports and
    # MMIO are served by the board's buses under every engine.
    hook_kinds: frozenset[HookKind] = frozenset()

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        """(True, "") if this engine can run here, else (False, reason)."""
        return True, ""

    def __init__(self, board: Board) -> None:
        self.board = board
        self.hooks: HookSet | None = None

    @abstractmethod
    def set_state(self, state: CpuState) -> None:
        """Load the architectural state the guest starts or resumes from."""

    @abstractmethod
    def get_state(self) -> CpuState:
        """Read back the architectural state (after run() returned)."""

    @abstractmethod
    def run(self, timeout: float | None = None) -> StopReason:
        """Execute until the VM stops, or until `timeout` host seconds pass (TIMEOUT)."""

    def set_hooks(self, hooks: HookSet) -> None:
        """Serve `hooks` (a VM's HookSet); watch it for changes."""
        self.hooks = hooks

    def save_devices(self, board_state: dict) -> None:
        """Write into `board_state` (the board's get_state()) the state of the devices
        this engine runs in place of the board's models (KVM's in-kernel irqchip and
        PIT), so a snapshot holds theirs; the models themselves are left as they are."""
        return None

    def load_devices(self, board_state: dict) -> None:
        """After the board's set_state(board_state): hand those devices their state."""
        return None

    def wake(self) -> None:
        """Thread-safe: make a running `run()` look at host events soon."""
        return None

    def request_pause(self) -> None:
        """Thread-safe: make `run()` return PAUSED at the next instruction boundary."""
        return None

    def close(self) -> None:
        """Release host resources (file descriptors, mappings)."""
        return None
