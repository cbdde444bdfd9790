"""Motorola MC146818A real-time clock and CMOS RAM (ports 0x70/0x71, IRQ 8).

Facts relied on (MC146818A datasheet; IBM PC/AT Technical Reference, "CMOS
RAM address map"): port 0x70 selects one of 128 bytes (bit 7 = NMI disable
on the AT), port 0x71 reads/writes it.  Bytes 0x00-0x09 are seconds, alarm
seconds, minutes, alarm minutes, hours, alarm hours, day of week (1 =
Sunday), day, month, year; 0x0A-0x0D are status A-D; 0x32 is the century
(IBM).  Status B bit 2 (DM) selects binary instead of BCD, bit 1 selects
24-hour mode (in 12-hour mode the hour's bit 7 is PM), bit 7 (SET) stops
updates so software can set the time.  Status C is read-only and cleared by
reading; status D bit 7 (VRT) says the RAM is valid.

The time is the host's wall clock at construction plus elapsed virtual
time; it is computed when read, so UIP (status A bit 7) always reads 0 (no
update cycle is ever in progress).  The periodic interrupt (status A rate,
status B PIE) is driven by the virtual clock; alarm and update-ended
interrupts are not modelled.

Byte-wide device: a 2- or 4-byte access uses the low byte.
"""

from __future__ import annotations

import calendar
import time
from dataclasses import asdict, dataclass, field

from pyvmm.machine.clock import Timer, VirtualClock
from pyvmm.machine.interrupts import IrqLine
from pyvmm.schema import NS, U8, Bool, Int, ListOf, Record

INDEX_PORT = 0  # offset of port 0x70
DATA_PORT = 1  # offset of port 0x71
INDEX_NMI_DISABLE = 0x80  # port 0x70 bit 7: NMI disable (AT)
INDEX_MASK = 0x7F
CMOS_SIZE = 128

REG_SECONDS = 0x00
REG_SECONDS_ALARM = 0x01
REG_MINUTES = 0x02
REG_MINUTES_ALARM = 0x03
REG_HOURS = 0x04
REG_HOURS_ALARM = 0x05
REG_DAY_OF_WEEK = 0x06
REG_DAY = 0x07
REG_MONTH = 0x08
REG_YEAR = 0x09
REG_STATUS_A = 0x0A
REG_STATUS_B = 0x0B
REG_STATUS_C = 0x0C
REG_STATUS_D = 0x0D
REG_SHUTDOWN = 0x0F  # shutdown status byte (BIOS use)
REG_EQUIPMENT = 0x14  # equipment byte
REG_BASE_MEM_LO = 0x15  # base memory in KiB, low byte
REG_BASE_MEM_HI = 0x16
REG_EXT_MEM_LO = 0x17  # memory above 1 MiB in KiB, low byte
REG_EXT_MEM_HI = 0x18
REG_CHECKSUM_HI = 0x2E  # sum of bytes 0x10-0x2D, big-endian
REG_CHECKSUM_LO = 0x2F
REG_EXT_MEM2_LO = 0x30  # memory above 1 MiB in KiB (POST's copy), low byte
REG_EXT_MEM2_HI = 0x31
REG_CENTURY = 0x32  # century (IBM)
REG_HIGH_MEM_LO = 0x34  # memory above 16 MiB in 64 KiB blocks (SeaBIOS/QEMU), low byte
REG_HIGH_MEM_HI = 0x35

CHECKSUM_FIRST, CHECKSUM_LAST = 0x10, 0x2D  # range covered by the AT checksum

STATUS_A_UIP = 0x80  # update in progress (read-only)
STATUS_A_DIVIDER_MASK = 0x70  # DV2-DV0: time base
STATUS_A_DIVIDER_32K = 0x20  # 32.768 kHz time base, oscillator running
STATUS_A_RATE_MASK = 0x0F  # RS3-RS0: periodic interrupt rate
STATUS_A_DEFAULT = 0x26  # 32.768 kHz, 1024 Hz periodic rate (BIOS default)
STATUS_B_SET = 0x80  # stop updates
STATUS_B_PIE = 0x40  # periodic interrupt enable
STATUS_B_AIE = 0x20  # alarm interrupt enable
STATUS_B_UIE = 0x10  # update-ended interrupt enable
STATUS_B_DM = 0x04  # data mode: 1 = binary, 0 = BCD
STATUS_B_24H = 0x02  # 1 = 24-hour mode
STATUS_B_DEFAULT = STATUS_B_24H  # BCD, 24-hour
STATUS_C_IRQF = 0x80  # an enabled interrupt flag is set
STATUS_C_PF = 0x40  # periodic interrupt flag
STATUS_D_VRT = 0x80  # valid RAM and time
HOUR_PM = 0x80  # 12-hour mode: PM

EQUIPMENT_FPU = 0x02  # equipment byte bit 1: math coprocessor present
BASE_MEMORY_KIB = 640
KIB = 1024
MIB = 1 << 20
BLOCK_64K = 1 << 16
MAX_WORD = 0xFFFF
RTC_HZ = 32768  # time base selected by DV = 010
NS_PER_S = 1_000_000_000

# Registers whose value is derived from the running clock.
_TIME_REGISTERS = frozenset((REG_SECONDS, REG_MINUTES, REG_HOURS, REG_DAY_OF_WEEK, REG_DAY,
                             REG_MONTH, REG_YEAR, REG_CENTURY))


def _bcd(value: int) -> int:
    return (value // 10) << 4 | value % 10


def _unbcd(value: int) -> int:
    return (value >> 4) * 10 + (value & 0x0F)


def periodic_divisor(rate: int) -> int | None:
    """32.768 kHz cycles per periodic interrupt for RS3-RS0 (datasheet table 5):
    rate 0 = none, 1 and 2 alias 8 and 9 (256 and 128 Hz), n >= 3 gives
    32768 >> (n - 1) Hz."""
    if rate == 0:
        return None
    if rate < 3:
        rate += 7
    return 1 << (rate - 1)


@dataclass
class CmosState:
    ram: list[int] = field(default_factory=lambda: [0] * CMOS_SIZE)
    index: int = 0
    nmi_disabled: bool = False
    base_epoch_ns: int = 0  # wall-clock time (ns since 1970) at ...
    base_clock_ns: int = 0  # ... this virtual-clock time
    periodic_start_ns: int = 0
    periodic_index: int = 0


# Snapshot shape: 128 bytes of RTC/NVRAM, a 7-bit index, times in ns.
CMOS_STATE = Record({
    "ram": ListOf(U8, CMOS_SIZE, CMOS_SIZE), "index": Int(0, INDEX_MASK), "nmi_disabled": Bool(),
    "base_epoch_ns": Int(-(1 << 70), 1 << 70), "base_clock_ns": NS, "periodic_start_ns": NS,
    "periodic_index": Int(0, 1 << 63),
})


class CmosRtc:
    """Port device at 0x70-0x71 (offsets 0 and 1)."""

    def __init__(self, clock: VirtualClock, ram_size: int, irq8: IrqLine, *,
                 epoch_ns: int | None = None) -> None:
        self.clock = clock
        self.irq8 = irq8
        self.s = CmosState()
        self.s.base_epoch_ns = time.time_ns() if epoch_ns is None else epoch_ns
        self.s.base_clock_ns = clock.now_ns()
        self._timer: Timer | None = None
        ram = self.s.ram
        ram[REG_STATUS_A] = STATUS_A_DEFAULT
        ram[REG_STATUS_B] = STATUS_B_DEFAULT
        ram[REG_STATUS_D] = STATUS_D_VRT
        ram[REG_EQUIPMENT] = EQUIPMENT_FPU
        self._set_word(REG_BASE_MEM_LO, BASE_MEMORY_KIB)
        extended_kib = min(max(0, ram_size - MIB) // KIB, MAX_WORD)
        self._set_word(REG_EXT_MEM_LO, extended_kib)
        self._set_word(REG_EXT_MEM2_LO, extended_kib)
        self._set_word(REG_HIGH_MEM_LO, min(max(0, ram_size - 16 * MIB) // BLOCK_64K, MAX_WORD))
        self._update_checksum()
        self._latch_time()

    def _set_word(self, reg: int, value: int) -> None:
        self.s.ram[reg] = value & 0xFF
        self.s.ram[reg + 1] = value >> 8

    def _update_checksum(self) -> None:
        ram = self.s.ram
        total = sum(ram[CHECKSUM_FIRST:CHECKSUM_LAST + 1]) & MAX_WORD
        ram[REG_CHECKSUM_HI] = total >> 8
        ram[REG_CHECKSUM_LO] = total & 0xFF

    # -- time ---------------------------------------------------------------
    def wall_time_ns(self) -> int:
        return self.s.base_epoch_ns + self.clock.now_ns() - self.s.base_clock_ns

    def set_wall_time_ns(self, epoch_ns: int) -> None:
        """Make the clock read `epoch_ns` now (a replay starts at the recorded time)."""
        self.s.base_epoch_ns = epoch_ns
        self.s.base_clock_ns = self.clock.now_ns()
        self._latch_time()

    def _encode(self, value: int) -> int:
        return value if self.s.ram[REG_STATUS_B] & STATUS_B_DM else _bcd(value)

    def _decode(self, value: int) -> int:
        return value if self.s.ram[REG_STATUS_B] & STATUS_B_DM else _unbcd(value)

    def _latch_time(self) -> None:
        """Write the current time into the time registers, in the current format."""
        ram = self.s.ram
        t = time.gmtime(self.wall_time_ns() // NS_PER_S)
        hour = t.tm_hour
        if ram[REG_STATUS_B] & STATUS_B_24H:
            hour_reg = self._encode(hour)
        else:
            hour_reg = self._encode(hour % 12 or 12) | (HOUR_PM if hour >= 12 else 0)
        ram[REG_SECONDS] = self._encode(t.tm_sec)
        ram[REG_MINUTES] = self._encode(t.tm_min)
        ram[REG_HOURS] = hour_reg
        ram[REG_DAY_OF_WEEK] = (t.tm_wday + 1) % 7 + 1  # tm_wday 0 = Monday; RTC 1 = Sunday
        ram[REG_DAY] = self._encode(t.tm_mday)
        ram[REG_MONTH] = self._encode(t.tm_mon)
        ram[REG_YEAR] = self._encode(t.tm_year % 100)
        ram[REG_CENTURY] = self._encode(t.tm_year // 100)

    def _time_from_registers(self) -> None:
        """After software set the time: make the registers the new clock base."""
        ram = self.s.ram
        hour_reg = ram[REG_HOURS]
        if ram[REG_STATUS_B] & STATUS_B_24H:
            hour = self._decode(hour_reg)
        else:
            hour = self._decode(hour_reg & ~HOUR_PM) % 12 + (12 if hour_reg & HOUR_PM else 0)
        year = self._decode(ram[REG_CENTURY]) * 100 + self._decode(ram[REG_YEAR])
        try:
            seconds = calendar.timegm((year, self._decode(ram[REG_MONTH]),
                                       self._decode(ram[REG_DAY]), hour,
                                       self._decode(ram[REG_MINUTES]),
                                       self._decode(ram[REG_SECONDS]), 0, 0, 0))
        except (ValueError, OverflowError):
            return  # nonsense date: keep the running clock
        self.s.base_epoch_ns = seconds * NS_PER_S
        self.s.base_clock_ns = self.clock.now_ns()

    @property
    def _updates_stopped(self) -> bool:
        return bool(self.s.ram[REG_STATUS_B] & STATUS_B_SET)

    # -- periodic interrupt -----------------------------------------------------
    def _period_deadline(self, index: int) -> int:
        divisor = periodic_divisor(self.s.ram[REG_STATUS_A] & STATUS_A_RATE_MASK)
        assert divisor is not None
        return self.s.periodic_start_ns + -(-index * divisor * NS_PER_S // RTC_HZ)

    def _periodic_enabled(self) -> bool:
        ram = self.s.ram
        return (bool(ram[REG_STATUS_B] & STATUS_B_PIE)
                and ram[REG_STATUS_A] & STATUS_A_DIVIDER_MASK == STATUS_A_DIVIDER_32K
                and periodic_divisor(ram[REG_STATUS_A] & STATUS_A_RATE_MASK) is not None)

    def _restart_periodic(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._periodic_enabled():
            return
        self.s.periodic_start_ns = self.clock.now_ns()
        self.s.periodic_index = 1
        self._arm_periodic()

    def _arm_periodic(self) -> None:
        self._timer = self.clock.set_timer(self._period_deadline(self.s.periodic_index),
                                           self._periodic_fire)

    def _periodic_fire(self) -> None:
        """PF is set each period; with PIE it sets IRQF and asserts IRQ 8 until
        status C is read.  Missed periods coalesce (as on a busy real RTC)."""
        self._timer = None
        ram = self.s.ram
        ram[REG_STATUS_C] |= STATUS_C_PF | STATUS_C_IRQF
        self.irq8.set(True)
        # The first period still ahead, in O(1) however far the clock jumped:
        # deadline(i) <= now  <=>  i * divisor * 1e9 <= (now - start) * RTC_HZ.
        divisor = periodic_divisor(ram[REG_STATUS_A] & STATUS_A_RATE_MASK)
        assert divisor is not None
        elapsed = max(0, self.clock.now_ns() - self.s.periodic_start_ns)
        passed = elapsed * RTC_HZ // (divisor * NS_PER_S)
        self.s.periodic_index = max(self.s.periodic_index + 1, passed + 1)
        self._arm_periodic()

    # -- ports ------------------------------------------------------------------
    def io_read(self, offset: int, size: int) -> int:
        s = self.s
        if offset == INDEX_PORT:
            return 0xFF  # the index register is write-only on the AT
        reg = s.index
        if reg in _TIME_REGISTERS and not self._updates_stopped:
            self._latch_time()
        value = s.ram[reg]
        if reg == REG_STATUS_C:
            s.ram[REG_STATUS_C] = 0
            self.irq8.set(False)
        return value

    def io_write(self, offset: int, size: int, value: int) -> None:
        s = self.s
        value &= 0xFF
        if offset == INDEX_PORT:
            s.index = value & INDEX_MASK
            s.nmi_disabled = bool(value & INDEX_NMI_DISABLE)
            return
        reg = s.index
        if reg in (REG_STATUS_C, REG_STATUS_D):
            return  # read-only
        if reg == REG_STATUS_A:
            s.ram[reg] = value & ~STATUS_A_UIP
            self._restart_periodic()
        elif reg == REG_STATUS_B:
            self._write_status_b(value)
        else:
            if reg in _TIME_REGISTERS and not self._updates_stopped:
                self._latch_time()  # the other registers keep running time
            s.ram[reg] = value
            if reg in _TIME_REGISTERS and not self._updates_stopped:
                self._time_from_registers()

    def _write_status_b(self, value: int) -> None:
        """SET freezes the registers (and clears UIE); clearing SET restarts the
        clock from whatever software wrote into them (datasheet, "SET")."""
        s = self.s
        was_stopped = self._updates_stopped
        if value & STATUS_B_SET:
            if not was_stopped:
                self._latch_time()
            value &= ~STATUS_B_UIE
        elif not was_stopped:
            self._latch_time()  # registers in the old format before DM/24h change
        s.ram[REG_STATUS_B] = value
        if was_stopped and not value & STATUS_B_SET:
            self._time_from_registers()
        self._restart_periodic()

    # -- snapshot ------------------------------------------------------------------
    def get_state(self) -> dict:
        state = asdict(self.s)
        state["ram"] = list(self.s.ram)
        return state

    def set_state(self, state: dict) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        CMOS_STATE.check(state)
        self.s = CmosState(**state)
        self.s.ram = list(self.s.ram)
        if self._periodic_enabled():
            self._arm_periodic()
        self.irq8.set(bool(self.s.ram[REG_STATUS_C] & STATUS_C_IRQF))
