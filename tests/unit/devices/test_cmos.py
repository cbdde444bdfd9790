"""MC146818 RTC / CMOS (datasheet + PC/AT CMOS map)."""

import calendar
import json

from pyvmm.devices.cmos import CmosRtc
from pyvmm.machine.clock import ClockSource, VirtualClock
from pyvmm.machine.interrupts import IrqLine
from tests.unit.devices.irq_sink import Sink

MIB = 1 << 20
NS = 1_000_000_000
# 2024-02-29 23:59:58 UTC, a Thursday.
EPOCH = calendar.timegm((2024, 2, 29, 23, 59, 58, 0, 0, 0)) * NS


def make(ram=64 * MIB):
    clock = VirtualClock(ClockSource.MANUAL)
    sink = Sink()
    return clock, sink, CmosRtc(clock, ram, IrqLine(sink, 8), epoch_ns=EPOCH)


def rd(cmos, reg):
    cmos.io_write(0, 1, reg)
    return cmos.io_read(1, 1)


def wr(cmos, reg, value):
    cmos.io_write(0, 1, reg)
    cmos.io_write(1, 1, value)


def test_memory_size_bytes_for_64_mib():
    _, _, cmos = make()
    assert rd(cmos, 0x15) | rd(cmos, 0x16) << 8 == 640
    assert rd(cmos, 0x17) | rd(cmos, 0x18) << 8 == 63 * 1024
    assert rd(cmos, 0x30) | rd(cmos, 0x31) << 8 == 63 * 1024
    assert rd(cmos, 0x34) | rd(cmos, 0x35) << 8 == (48 * MIB) // 65536


def test_extended_memory_capped_and_checksum():
    _, _, cmos = make(ram=3 * 1024 * MIB)
    assert rd(cmos, 0x17) | rd(cmos, 0x18) << 8 == 0xFFFF
    total = sum(rd(cmos, r) for r in range(0x10, 0x2E))
    assert rd(cmos, 0x2E) << 8 | rd(cmos, 0x2F) == total


def test_bcd_time_by_default_then_binary():
    clock, _, cmos = make()
    assert rd(cmos, 0x00) == 0x58
    assert rd(cmos, 0x02) == 0x59
    assert rd(cmos, 0x04) == 0x23
    assert rd(cmos, 0x06) == 5  # Thursday (1 = Sunday)
    assert rd(cmos, 0x07) == 0x29
    assert rd(cmos, 0x08) == 0x02
    assert rd(cmos, 0x09) == 0x24
    assert rd(cmos, 0x32) == 0x20
    wr(cmos, 0x0B, 0x06)  # binary, 24 h
    assert rd(cmos, 0x00) == 58
    assert rd(cmos, 0x04) == 23
    assert rd(cmos, 0x09) == 24
    clock.advance(3 * NS)  # into 2024-03-01 00:00:01
    assert rd(cmos, 0x00) == 1
    assert rd(cmos, 0x07) == 1
    assert rd(cmos, 0x08) == 3


def test_twelve_hour_mode_sets_pm_bit():
    _, _, cmos = make()
    wr(cmos, 0x0B, 0x00)  # BCD, 12 h
    assert rd(cmos, 0x04) == 0x80 | 0x11  # 11 PM


def test_set_bit_freezes_and_software_sets_time():
    clock, _, cmos = make()
    wr(cmos, 0x0B, 0x82)  # SET, BCD, 24 h
    clock.advance(10 * NS)
    assert rd(cmos, 0x00) == 0x58  # frozen
    wr(cmos, 0x04, 0x08)
    wr(cmos, 0x02, 0x30)
    wr(cmos, 0x00, 0x00)
    wr(cmos, 0x0B, 0x02)  # release: the clock runs from 08:30:00
    clock.advance(5 * NS)
    assert (rd(cmos, 0x04), rd(cmos, 0x02), rd(cmos, 0x00)) == (0x08, 0x30, 0x05)


def test_status_registers():
    _, _, cmos = make()
    assert rd(cmos, 0x0A) & 0x80 == 0  # UIP clear
    assert rd(cmos, 0x0A) == 0x26
    assert rd(cmos, 0x0D) == 0x80  # VRT
    wr(cmos, 0x0D, 0x00)
    assert rd(cmos, 0x0D) == 0x80  # read-only
    wr(cmos, 0x3F, 0x77)
    assert rd(cmos, 0x3F) == 0x77  # plain RAM


def test_periodic_interrupt_and_status_c_read_clears():
    clock, sink, cmos = make()
    wr(cmos, 0x0A, 0x2F)  # 2 Hz
    wr(cmos, 0x0B, 0x42)  # PIE
    assert not sink.level
    clock.advance(NS // 2)
    clock.run_due()
    assert sink.level
    assert rd(cmos, 0x0C) == 0xC0  # IRQF + PF
    assert not sink.level
    assert rd(cmos, 0x0C) == 0x00  # cleared by the read
    clock.advance(NS // 2)
    clock.run_due()
    assert sink.rises == 2


def test_index_port_nmi_bit_is_not_part_of_index():
    _, _, cmos = make()
    cmos.io_write(0, 1, 0x80 | 0x15)
    assert cmos.io_read(1, 1) == 0x80
    assert cmos.s.nmi_disabled


def test_state_round_trip():
    clock, _, cmos = make()
    wr(cmos, 0x40, 0x12)
    state = json.loads(json.dumps(cmos.get_state()))
    clock2 = VirtualClock(ClockSource.MANUAL)
    other = CmosRtc(clock2, 4 * MIB, IrqLine(None, 8))
    other.set_state(state)
    assert rd(other, 0x40) == 0x12
    assert rd(other, 0x17) | rd(other, 0x18) << 8 == 63 * 1024
    assert rd(other, 0x00) == 0x58
