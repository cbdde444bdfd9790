"""i8259 pair, checked against the Intel 8259A datasheet's programming model."""

import json

from pyvmm.devices.pic8259 import Pic8259Pair
from pyvmm.machine.interrupts import IrqLine


def init_pair(pic: Pic8259Pair, master_base: int = 0x20, slave_base: int = 0x28,
              icw1: int = 0x11, icw4: int = 0x01) -> None:
    """The BIOS/Linux sequence: ICW1 (edge, cascade, IC4), ICW2, ICW3, ICW4."""
    pic.master.io_write(0, 1, icw1)
    pic.master.io_write(1, 1, master_base)
    pic.master.io_write(1, 1, 0x04)  # slave on IR2
    pic.master.io_write(1, 1, icw4)
    pic.slave.io_write(0, 1, icw1)
    pic.slave.io_write(1, 1, slave_base)
    pic.slave.io_write(1, 1, 0x02)  # slave id 2
    pic.slave.io_write(1, 1, icw4)


def eoi(chip) -> None:
    chip.io_write(0, 1, 0x20)  # OCW2 non-specific EOI


def read_isr(chip) -> int:
    chip.io_write(0, 1, 0x0B)  # OCW3: read ISR
    return chip.io_read(0, 1)


def read_irr(chip) -> int:
    chip.io_write(0, 1, 0x0A)  # OCW3: read IRR
    return chip.io_read(0, 1)


def test_init_sequence_sets_vector_base_and_clears_mask():
    pic = Pic8259Pair()
    pic.master.io_write(1, 1, 0xFF)
    init_pair(pic, 0x08, 0x70)
    assert pic.master.io_read(1, 1) == 0  # ICW1 cleared IMR
    pic.set_irq(1, True)
    assert pic.interrupt_pending()
    assert pic.acknowledge() == 0x09
    pic.set_irq(14, True)
    eoi(pic.master)
    assert pic.acknowledge() == 0x76


def test_imr_read_back_and_masking():
    pic = Pic8259Pair()
    init_pair(pic)
    pic.master.io_write(1, 1, 0xFB)  # mask everything except the cascade
    assert pic.master.io_read(1, 1) == 0xFB
    pic.set_irq(0, True)
    assert not pic.interrupt_pending()
    assert read_irr(pic.master) & 1  # requested but masked
    pic.master.io_write(1, 1, 0x00)
    assert pic.interrupt_pending()
    assert pic.acknowledge() == 0x20


def test_priority_lowest_irq_first_and_nesting():
    pic = Pic8259Pair()
    init_pair(pic)
    pic.set_irq(4, True)
    pic.set_irq(1, True)
    assert pic.acknowledge() == 0x21
    assert read_isr(pic.master) == 0x02
    # IR4 has lower priority than IR1 in service: no INTR until EOI.
    assert not pic.interrupt_pending()
    eoi(pic.master)
    assert read_isr(pic.master) == 0
    assert pic.acknowledge() == 0x24
    # A higher-priority request nests over IR4 in service.
    pic.set_irq(0, True)
    assert pic.interrupt_pending()
    assert pic.acknowledge() == 0x20
    assert read_isr(pic.master) == 0x11
    eoi(pic.master)  # non-specific EOI clears the highest (IR0)
    assert read_isr(pic.master) == 0x10


def test_specific_eoi():
    pic = Pic8259Pair()
    init_pair(pic)
    pic.set_irq(3, True)
    pic.acknowledge()
    pic.set_irq(1, True)
    pic.acknowledge()
    pic.master.io_write(0, 1, 0x63)  # specific EOI for IR3
    assert read_isr(pic.master) == 0x02


def test_edge_triggered_latches_rising_edge_only():
    pic = Pic8259Pair()
    init_pair(pic)
    line = IrqLine(pic, 3)
    line.pulse()
    assert pic.interrupt_pending()  # latched although the line is low again
    assert pic.acknowledge() == 0x23
    eoi(pic.master)
    line.raise_()
    pic.acknowledge()
    eoi(pic.master)
    pic.set_irq(3, True)  # still high: no new edge
    assert not pic.interrupt_pending()


def test_cascade_returns_slave_vector_and_needs_both_eois():
    pic = Pic8259Pair()
    init_pair(pic)
    pic.set_irq(12, True)
    assert pic.interrupt_pending()
    assert pic.acknowledge() == 0x2C
    assert read_isr(pic.master) == 0x04
    assert read_isr(pic.slave) == 0x10
    pic.set_irq(12, False)
    pic.set_irq(9, True)  # higher priority on the slave, but master IR2 is in service
    assert not pic.interrupt_pending()
    eoi(pic.slave)
    assert not pic.interrupt_pending()
    eoi(pic.master)
    assert pic.interrupt_pending()
    assert pic.acknowledge() == 0x29


def test_slave_mask_and_master_cascade_mask():
    pic = Pic8259Pair()
    init_pair(pic)
    pic.master.io_write(1, 1, 0x04)  # mask the cascade input
    pic.set_irq(8, True)
    assert not pic.interrupt_pending()
    pic.master.io_write(1, 1, 0x00)
    assert pic.interrupt_pending()
    pic.slave.io_write(1, 1, 0x01)  # now mask IRQ8 at the slave
    assert not pic.interrupt_pending()


def test_spurious_irq7_when_level_request_vanishes():
    pic = Pic8259Pair()
    init_pair(pic, icw1=0x19)  # LTIM: level triggered
    pic.set_irq(5, True)
    assert pic.interrupt_pending()
    pic.set_irq(5, False)  # request gone before INTA
    assert not pic.interrupt_pending()
    assert pic.acknowledge() == 0x27
    assert read_isr(pic.master) == 0  # spurious IR7 is not put in service
    assert pic.spurious == 1


def test_vanished_slave_request_is_spurious_on_master():
    """The cascade input follows the slave's INT, so a slave request that
    vanishes before INTA leaves no master request: IR7 of the master."""
    pic = Pic8259Pair()
    init_pair(pic, icw1=0x19)
    pic.set_irq(10, True)
    assert pic.interrupt_pending()
    pic.set_irq(10, False)
    assert pic.acknowledge() == 0x27
    assert read_isr(pic.master) == 0 and read_isr(pic.slave) == 0


def test_slave_spurious_irq15_puts_only_cascade_in_service(monkeypatch):
    """If the slave has nothing when its INTA arrives it answers IR7 (IRQ15)
    without setting its ISR; the master's IR2 is in service (needs an EOI)."""
    pic = Pic8259Pair()
    init_pair(pic)
    pic.set_irq(10, True)
    monkeypatch.setattr(pic.slave, "pending_ir", lambda: None)
    assert pic.acknowledge() == 0x2F
    assert pic.master.s.isr == 0x04
    assert pic.slave.s.isr == 0
    assert pic.spurious == 1


def test_level_triggered_reasserts_after_eoi():
    pic = Pic8259Pair()
    init_pair(pic, icw1=0x19)
    pic.set_irq(4, True)
    assert pic.acknowledge() == 0x24
    assert not pic.interrupt_pending()
    eoi(pic.master)
    assert pic.interrupt_pending()  # line still high
    pic.set_irq(4, False)
    assert not pic.interrupt_pending()


def test_auto_eoi_leaves_isr_clear():
    pic = Pic8259Pair()
    init_pair(pic, icw4=0x03)  # 8086 mode + AEOI
    pic.set_irq(6, True)
    assert pic.acknowledge() == 0x26
    assert read_isr(pic.master) == 0
    pic.set_irq(7, True)
    assert pic.interrupt_pending()  # nothing in service blocks IR7


def test_rotate_on_nonspecific_eoi_makes_serviced_irq_lowest():
    pic = Pic8259Pair()
    init_pair(pic)
    pic.set_irq(1, True)
    assert pic.acknowledge() == 0x21
    pic.master.io_write(0, 1, 0xA0)  # rotate on non-specific EOI: IR1 now lowest
    pic.set_irq(1, False)
    pic.set_irq(1, True)
    pic.set_irq(5, True)
    assert pic.acknowledge() == 0x25  # IR5 now outranks IR1


def test_set_priority_command():
    pic = Pic8259Pair()
    init_pair(pic)
    pic.master.io_write(0, 1, 0xC4)  # IR4 lowest, so IR5 highest
    pic.set_irq(3, True)
    pic.set_irq(6, True)
    assert pic.acknowledge() == 0x26


def test_poll_command():
    pic = Pic8259Pair()
    init_pair(pic)
    pic.master.io_write(0, 1, 0x0C)  # OCW3 poll
    assert pic.master.io_read(0, 1) == 0  # nothing pending
    pic.set_irq(3, True)
    pic.master.io_write(0, 1, 0x0C)
    assert pic.master.io_read(0, 1) == 0x83
    assert read_isr(pic.master) == 0x08


def test_special_mask_mode_allows_lower_priority():
    pic = Pic8259Pair()
    init_pair(pic)
    pic.set_irq(2 + 1, True)
    assert pic.acknowledge() == 0x23
    pic.master.io_write(1, 1, 0x08)  # mask IR3 (in service)
    pic.set_irq(5, True)
    assert not pic.interrupt_pending()
    pic.master.io_write(0, 1, 0x68)  # OCW3: set special mask mode
    assert pic.interrupt_pending()
    assert pic.acknowledge() == 0x25


def test_intr_change_callback():
    pic = Pic8259Pair()
    init_pair(pic)
    seen = []
    pic.on_intr_change = seen.append
    pic.set_irq(0, True)
    pic.acknowledge()
    assert seen == [True, False]


def test_state_round_trip_is_json_and_restores_behaviour():
    pic = Pic8259Pair()
    init_pair(pic, 0x40, 0x48)
    pic.master.io_write(1, 1, 0x10)
    pic.set_irq(3, True)
    state = json.loads(json.dumps(pic.get_state()))
    other = Pic8259Pair()
    other.set_state(state)
    assert other.interrupt_pending()
    assert other.master.io_read(1, 1) == 0x10
    assert other.acknowledge() == 0x43


def test_wide_access_uses_low_byte():
    pic = Pic8259Pair()
    init_pair(pic)
    pic.master.io_write(1, 2, 0xAB55)
    assert pic.master.io_read(1, 1) == 0x55
