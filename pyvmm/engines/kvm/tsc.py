"""IA32_TSC_DEADLINE of the board's local APIC under KVM with `--irqchip user`.

The guest's TSC under KVM is the host's TSC scaled and offset by KVM (the
VMCS/VMCB TSC offset; KVM API, KVM_GET_TSC_KHZ and the IA32_TSC MSR read
through KVM_GET_MSRS), counting at `tsc_khz`.  The board's local APIC counts
TSC-deadline time on the board's virtual TSC: one tick per nanosecond of its
`VirtualClock` (pyvmm/devices/lapic.py), the interpreter's 1 GHz TSC.

An armed deadline is a distance from now (SDM Vol. 3A, "TSC-Deadline Mode":
the timer fires when the TSC reaches the value written), so a WRMSR
converts the guest's distance `value - guest TSC now` to the board's
ticks, and a RDMSR converts back.  0 means disarmed in both units.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from pyvmm.devices.lapic import MSR_IA32_TSC_DEADLINE

_MASK64 = (1 << 64) - 1
BOARD_KHZ = 1_000_000  # the board's TSC: 1 GHz


class DeadlineApic(Protocol):
    """What this module needs of a local APIC (pyvmm/devices/lapic.py)."""

    def rdmsr(self, index: int) -> int | None: ...

    def wrmsr(self, index: int, value: int) -> bool: ...

    def read_tsc(self) -> int: ...


def convert(ticks: int, from_khz: int, to_khz: int) -> int:
    """A TSC distance from one frequency to another, rounded up (a deadline never
    fires early)."""
    return -(-ticks * to_khz // from_khz)


class TscDeadlineMsr:
    """The MSR device for IA32_TSC_DEADLINE (vcpu.MsrDevice): guest TSC units
    outside, the board LAPIC's 1 GHz virtual TSC inside."""

    def __init__(self, lapic: DeadlineApic, guest_tsc: Callable[[], int], tsc_khz: int) -> None:
        if tsc_khz <= 0:
            raise ValueError(f"a TSC frequency of {tsc_khz} kHz")
        self.lapic = lapic
        self.guest_tsc = guest_tsc
        self.tsc_khz = tsc_khz
        self._written: tuple[int, int] | None = None  # (guest value, board value) last set

    def wrmsr(self, index: int, value: int) -> bool:
        if index != MSR_IA32_TSC_DEADLINE:
            return False
        value &= _MASK64
        board = 0
        if value:
            distance = max(0, value - self.guest_tsc())
            board = (self.lapic.read_tsc() + convert(distance, self.tsc_khz, BOARD_KHZ)) or 1
        ok = self.lapic.wrmsr(index, board)
        self._written = (value, board) if value else None
        return ok

    def rdmsr(self, index: int) -> int:
        board = self.lapic.rdmsr(index) or 0
        if not board:
            return 0
        if self._written is not None and self._written[1] == board:
            return self._written[0]  # the guest reads back what it wrote
        distance = board - self.lapic.read_tsc()
        sign = -1 if distance < 0 else 1
        return (self.guest_tsc() + sign * convert(abs(distance), BOARD_KHZ, self.tsc_khz)) \
            & _MASK64
