"""The board's device table: wiring, `--stats` names and snapshots from one table."""

import io

from pyvmm.board.pc import PC_DEVICES, PcBoard
from pyvmm.board.table import DeviceRow, Range
from pyvmm.machine.clock import ClockSource
from pyvmm.schema import U8, Record

MIB = 1 << 20


def board(cls=PcBoard):
    return cls(ram_size=16 * MIB, serial_output=io.BytesIO(), clock_source=ClockSource.MANUAL)


def test_every_board_device_with_state_is_saved():
    b = board()
    saved = {id(device) for _, device in b.snapshot_devices()}
    for attr, value in vars(b).items():
        if hasattr(value, "get_state") and value is not b.clock:
            assert id(value) in saved, f"board.{attr} is not saved"


def test_every_bus_range_belongs_to_a_saved_device():
    b = board()
    saved = {name for name, _ in b.snapshot_devices()}
    assert len(b.get_state()["lapics"]) == len(b.lapics)  # per-vCPU, saved beside devices
    for bus in (b.ports, b.mmio):
        for entry in bus.ranges:
            if any(entry.device is lapic for lapic in b.lapics):
                continue
            owner = b.part_of.get(id(entry.device))
            assert owner is not None, f"{entry.name} at {entry.base:#x} is in no table row"
            assert owner in saved, entry.name


def test_port_ranges_and_stats_names_come_from_the_rows():
    b = board()
    registered = {(e.base, e.length, e.name) for e in b.ports.ranges}
    rows = {(r.base, r.length, r.name) for row in PC_DEVICES for r in row.ports}
    assert rows <= registered
    assert (0x3F8, 8, "com1") in registered and (0x510, 2, "fw_cfg") in registered
    b.ports.read(0x3FD, 1)
    b.ports.read(0x21, 1)
    assert b.stats.get("ports", "com1") == 1 and b.stats.get("ports", "pic-master") == 1


class Latch:
    """A toy one-byte port device that raises IRQ 10 on a write."""

    STATE = Record({"value": U8})

    def __init__(self, irq):
        self.irq = irq
        self.value = 0

    def io_read(self, offset, size):
        return self.value

    def io_write(self, offset, size, value):
        self.value = value & 0xFF
        self.irq.pulse()

    def get_state(self):
        return {"value": self.value}

    def set_state(self, state):
        self.STATE.check(state)
        self.value = state["value"]


class LatchBoard(PcBoard):
    DEVICES = PC_DEVICES + (
        DeviceRow("latch", "latch", lambda b, irq: Latch(*irq),
                  ports=(Range(0x700, 1, "latch"),), irqs=(10,)),)


def test_adding_a_device_is_one_row():
    b = board(LatchBoard)
    b.ports.write(0x700, 1, 0x5A)
    assert b.ports.read(0x700, 1) == 0x5A
    assert b.pic.slave.s.irr & (1 << 2)  # IRQ 10 = slave IR2
    state = b.get_state()
    assert state["devices"]["latch"] == {"value": 0x5A}
    restored = board(LatchBoard)
    restored.set_state(state)
    assert restored.latch.value == 0x5A
