"""Para-virtualization: the hypercall ABI, its device, and the virtual switch.

See docs/PARAVIRT.md for the guest-visible ABI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from pyvmm.paravirt.abi import HypercallCpu, RegisterListCpu
from pyvmm.paravirt.switch import SendStatus, VirtualSwitch

if TYPE_CHECKING:
    from pyvmm.paravirt.hypercall import HypercallDevice


class SwitchedBoard(Protocol):
    """What `connect_board` needs of a board (PcBoard has it)."""

    vm_id: int
    switch: object | None
    hypercall: HypercallDevice

__all__ = ["HypercallCpu", "RegisterListCpu", "SendStatus", "VirtualSwitch", "connect_board"]


def connect_board(board: SwitchedBoard, switch: VirtualSwitch, vm_id: int) -> None:
    """Plug `board` into `switch` as VM `vm_id` (sets `board.switch`, `board.vm_id`)."""
    board.vm_id = vm_id
    board.switch = switch
    board.hypercall.plug(switch, vm_id)
