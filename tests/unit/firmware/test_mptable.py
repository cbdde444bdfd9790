"""The MP table's PCI entries (MP Specification 1.4 §4.3.3, §4.3.4, Appendix D),
generated from the board's device table."""

from __future__ import annotations

import struct

from pyvmm.board.irq_routing import pci_pirq
from pyvmm.board.pc import PC_DEVICES, PcBoard
from pyvmm.board.table import DeviceRow
from pyvmm.devices.pci.config import PciFunction
from pyvmm.firmware.mptable import config_table

ACTIVE_LOW_LEVEL = 0b1111  # PO = 11 (active low), EL = 11 (level): PCI INTx


def entries(table: bytes) -> list[bytes]:
    count = struct.unpack_from("<H", table, 34)[0]
    out, offset = [], 44
    for _ in range(count):
        size = 20 if table[offset] == 0 else 8
        out.append(table[offset:offset + size])
        offset += size
    return out


def pci_routes(board: PcBoard) -> dict[tuple[int, int], tuple[int, int, int]]:
    """(device, INTx pin) -> (I/O APIC id, INTIN#, flags) of the PCI bus's I/O interrupts."""
    table = entries(config_table(board.platform_description()))
    [pci_bus] = [e[1] for e in table if e[0] == 1 and e[2:8] == b"PCI   "]
    return {(e[5] >> 2, e[5] & 3): (e[6], e[7], struct.unpack_from("<H", e, 2)[0])
            for e in table if e[0] == 3 and e[4] == pci_bus}


class _Toy(PciFunction):
    name = "toy"

    def __init__(self) -> None:
        super().__init__(0x1234, 0x5678, 0xFF0000, interrupt_pin=2)  # INTB#


class _ToyBoard(PcBoard):
    DEVICES = (*PC_DEVICES, DeviceRow("toy", "toy", lambda b, _: _Toy(), pci=(3, 0)))


def test_the_chipsets_interrupt_pin_has_an_entry():
    """The PIIX4 PM function (device 1, INTA#) -> PIRQA -> INTIN16, level, active low."""
    board = PcBoard(ram_size=4 << 20)
    try:
        assert pci_routes(board) == {(1, 0): (0, 16, ACTIVE_LOW_LEVEL)}
    finally:
        board.close()


def test_a_new_pci_row_gets_its_entry_and_the_wiring_agrees():
    board = _ToyBoard(ram_size=4 << 20)
    try:
        routes = pci_routes(board)
        # Device 3 INTB#: PIRQ (3 - 1 + 1) mod 4 = D -> GSI 19.
        assert routes[(3, 1)] == (0, 19, ACTIVE_LOW_LEVEL)
        board.wiring.pirq_line(pci_pirq(3, 1)).raise_()
        assert board.wiring.gsi_inputs[19].level
        assert [pin for pin, wire in enumerate(board.wiring.gsi_inputs) if wire.level] == [19]
    finally:
        board.close()
