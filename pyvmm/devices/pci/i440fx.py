"""The i440FX host bridge (Intel 82441FX PMC datasheet, order 290549).

Device 0 function 0, 8086:1237.  Besides its header it owns the PAM
registers 0x59-0x5F (§3.2.14 "PAM[6:0]"), which decide for each segment of
0xC0000-0xFFFFF whether reads and writes go to DRAM ("shadow RAM") or to
the PCI/ISA side, where the BIOS ROM answers.  Each nibble holds RE (bit 0)
and WE (bit 1) for one segment:

    0x59 bits 7:4  0xF0000-0xFFFFF (64 KiB)
    0x5A-0x5F      0xC0000-0xEFFFF in 16 KiB segments, low nibble first

The board maps the memory; this model only decodes the registers and calls
`on_pam(base, size, mode)` for every segment whose mode changed.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from pyvmm.devices.pci.config import PciFunction

VENDOR_INTEL = 0x8086
DEVICE_I440FX = 0x1237
CLASS_HOST_BRIDGE = 0x060000
PAM0 = 0x59
PAM_REGISTERS = 7
SMRAM = 0x72  # SMRAM control (§3.2.17); stored, SMM is not modelled
SMRAM_RESET = 0x02


class PamMode(enum.IntEnum):
    """RE/WE of one PAM nibble."""

    DISABLED = 0  # reads and writes go to PCI (the ROM)
    READ_ONLY = 1  # reads from DRAM, writes to PCI (dropped)
    WRITE_ONLY = 2  # reads from PCI, writes to DRAM
    READ_WRITE = 3  # DRAM


def pam_segments() -> list[tuple[int, int, int, int]]:
    """(register, shift, base, size) of every PAM segment, in register order."""
    segments = [(PAM0, 4, 0xF0000, 0x10000)]
    base = 0xC0000
    for register in range(PAM0 + 1, PAM0 + PAM_REGISTERS):
        for shift in (0, 4):
            segments.append((register, shift, base, 0x4000))
            base += 0x4000
    return segments


PAM_SEGMENTS = pam_segments()


class I440fxHostBridge(PciFunction):
    name = "i440fx"

    def __init__(self, on_pam: Callable[[int, int, PamMode], None] | None = None) -> None:
        super().__init__(VENDOR_INTEL, DEVICE_I440FX, CLASS_HOST_BRIDGE, revision=0x02)
        self.on_pam = on_pam
        self.make_writable(PAM0, 1, 0x70)  # PAM0 bits 3:0 are reserved
        self.make_writable(PAM0 + 1, PAM_REGISTERS - 1, (1 << 8 * (PAM_REGISTERS - 1)) - 1)
        self.config[SMRAM] = SMRAM_RESET
        self.make_writable(SMRAM, 1, 0x78)
        self._modes = [PamMode.DISABLED] * len(PAM_SEGMENTS)

    def pam_mode(self, base: int) -> PamMode:
        for index, (_, _, seg_base, size) in enumerate(PAM_SEGMENTS):
            if seg_base <= base < seg_base + size:
                return self._modes[index]
        raise ValueError(f"{base:#x} is not in a PAM segment")

    def config_written(self, offset: int, size: int) -> None:
        if offset + size > PAM0 and offset < PAM0 + PAM_REGISTERS:
            self._apply_pam()

    def _apply_pam(self) -> None:
        for index, (register, shift, base, size) in enumerate(PAM_SEGMENTS):
            mode = PamMode((self.config[register] >> shift) & 3)
            if mode != self._modes[index]:
                self._modes[index] = mode
                if self.on_pam is not None:
                    self.on_pam(base, size, mode)

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        self._apply_pam()
