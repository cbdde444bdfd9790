"""Firmware tables for a kernel booted without a BIOS (direct Linux or Multiboot boot).

A direct-boot loader stands in for the firmware: it does what SeaBIOS does
on this board before an OS looks for its tables, and puts them where an OS
scans for them without a BIOS to ask.

- The PIIX4 PM function: PMBA = the board's PM I/O base, PMREGMISC decode
  on, interrupt line = the SCI (what SeaBIOS's piix4_pm_setup programs), so
  the FADT's PM blocks and PM timer answer.
- The F-segment, 0xF0000-0xFFFFF (reserved in the board's e820 map): the
  i440FX PAM0 register (82441FX §3.2.14) maps it as shadow RAM, writable
  while the tables are written, then read-only, as a BIOS leaves it.  In it:
  the ACPI RSDP on a 16-byte boundary (ACPI 6.4 §5.2.5.1: OSPM scans
  0xE0000-0xFFFFF), the MP floating pointer and configuration table (MP
  spec 1.4 §4: the BIOS ROM area is scanned), and the ACPI tables.

Linux also gets the RSDP's address in boot_params.acpi_rsdp_addr (boot.rst,
protocol 2.14), so it need not scan.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyvmm.devices.pci.config import INTERRUPT_LINE
from pyvmm.devices.pci.i440fx import PAM0
from pyvmm.devices.pci.piix import PM_IO_ENABLE, PMBA, PMREGMISC
from pyvmm.firmware import mptable
from pyvmm.firmware.acpi import build_acpi

if TYPE_CHECKING:
    from pyvmm.board.pc import PcBoard

F_SEGMENT = 0xF0000
F_SEGMENT_SIZE = 0x10000
RSDP_ADDRESS = F_SEGMENT
MP_FLOATING_ADDRESS = F_SEGMENT + 0x40
MP_CONFIG_ADDRESS = F_SEGMENT + 0x100
ACPI_TABLES_ADDRESS = F_SEGMENT + 0x1000
# PAM0 bits 5:4 hold RE/WE of 0xF0000-0xFFFFF.
PAM0_F_SEGMENT_READ_WRITE = 0x30
PAM0_F_SEGMENT_READ_ONLY = 0x10


def install_firmware_tables(board: PcBoard) -> int | None:
    """Program the PM function and write the ACPI and MP tables into the
    F-segment; returns the RSDP's address (None on a board with a BIOS, which
    installs its own)."""
    if board.bios_loaded:
        return None
    desc = board.platform_description()
    pm = board.pm
    pm.config_write(PMBA, 4, desc.pm_base | 1)
    pm.config_write(PMREGMISC, 1, PM_IO_ENABLE)
    pm.config_write(INTERRUPT_LINE, 1, desc.sci_irq)
    tables, rsdp = build_acpi(desc).placed(ACPI_TABLES_ADDRESS)
    mp_config = mptable.config_table(desc)
    layout = ((RSDP_ADDRESS, rsdp), (MP_FLOATING_ADDRESS, mptable.floating_pointer(
        MP_CONFIG_ADDRESS)), (MP_CONFIG_ADDRESS, mp_config), (ACPI_TABLES_ADDRESS, tables))
    for (address, data), (following, _) in zip(layout, layout[1:] + ((F_SEGMENT + F_SEGMENT_SIZE,
                                                                       b""),), strict=True):
        if address + len(data) > following:
            raise AssertionError(f"firmware table at {address:#x} overruns {following:#x}")
    host = board.host_bridge
    host.config_write(PAM0, 1, PAM0_F_SEGMENT_READ_WRITE)
    for address, data in layout:
        board.memory.write(address, data)
    host.config_write(PAM0, 1, PAM0_F_SEGMENT_READ_ONLY)
    return RSDP_ADDRESS
