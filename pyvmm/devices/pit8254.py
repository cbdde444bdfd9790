"""Intel 8254 programmable interval timer (three channels) and port 0x61.

Facts relied on (Intel 8254 datasheet, order 231164): CLK is 1.193182 MHz on
the PC; the control word (port 0x43) selects counter (SC1-0), access
(RW1-0: 0 = counter latch command, 1 = LSB, 2 = MSB, 3 = LSB then MSB), mode
(M2-M0; 6 and 7 alias 2 and 3) and BCD; SC=3 is the read-back command.  A
count of 0 means 2^16 (10^4 in BCD).  Mode 0 OUT goes low on the control
word and high at terminal count; mode 2 OUT pulses low for one CLK every N
CLKs; mode 3 OUT is high for ceil(N/2) and low for floor(N/2) CLKs.  GATE low
suspends counting in modes 0, 2, 3, 4 (2 and 3 force OUT high and reload on
the next rising GATE); a rising GATE triggers modes 1 and 5.

Counting is computed from the virtual clock when asked; nothing ticks.  The
count is taken to be loaded at the moment of the write (the real chip loads
on the next CLK edge, 838 ns later).  Channel 0 drives IRQ0 through
`clock.set_timer`: in modes 0 and 1 the line follows OUT; in modes 2-5 the
line is pulsed at each rising edge of OUT (all an edge-triggered 8259 input
sees).  Periodic deadlines are computed from the start of counting, never
from the time a callback ran, so there is no drift.

Byte-wide device: a 2- or 4-byte access uses the low byte.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from pyvmm.machine.clock import Timer, VirtualClock
from pyvmm.machine.interrupts import IrqLine
from pyvmm.schema import NS, U8, U16, Bits, Bool, Int, ListOf, Maybe, Record

PIT_HZ = 1_193_182  # CLK input of all three counters on the PC (14.31818 MHz / 12)
NS_PER_S = 1_000_000_000
CONTROL_PORT = 3  # offset of the control word register (port 0x43)

CW_BCD = 0x01  # control word bit 0: BCD counting
CW_MODE_SHIFT = 1  # bits 3-1: mode
CW_RW_SHIFT = 4  # bits 5-4: access
CW_SC_SHIFT = 6  # bits 7-6: select counter; 3 = read-back
SC_READ_BACK = 3
RB_NOT_COUNT = 0x20  # read-back bit 5: 0 = latch count of the selected counters
RB_NOT_STATUS = 0x10  # read-back bit 4: 0 = latch status of the selected counters
RB_COUNTER0 = 0x02  # read-back bits 1-3 select counters 0-2
STATUS_OUT = 0x80  # status byte bit 7: OUT pin
STATUS_NULL_COUNT = 0x40  # status byte bit 6: count written but not yet loaded

RW_LATCH, RW_LSB, RW_MSB, RW_WORD = 0, 1, 2, 3

PORTB_GATE2 = 0x01  # port 0x61 bit 0: timer 2 GATE
PORTB_SPEAKER = 0x02  # port 0x61 bit 1: speaker data (AND-ed with OUT2)
PORTB_WRITABLE = 0x0F  # port 0x61 bits 0-3 are read/write (bits 2-3 NMI check enables)
PORTB_REFRESH = 0x10  # port 0x61 bit 4: refresh request toggle (read only)
PORTB_OUT2 = 0x20  # port 0x61 bit 5: timer 2 OUT (read only)


def _ticks(elapsed_ns: int) -> int:
    return elapsed_ns * PIT_HZ // NS_PER_S


def _ns_for_ticks(ticks: int) -> int:
    """Smallest elapsed time at which `ticks` CLKs have passed."""
    return -(-ticks * NS_PER_S // PIT_HZ)


def _to_bcd(value: int) -> int:
    return int(str(value % 10000), 16)


def _from_bcd(value: int) -> int:
    return sum(((value >> (4 * i)) & 0xF) * 10 ** i for i in range(4))


@dataclass
class ChannelState:
    mode: int = 0
    rw: int = RW_WORD
    bcd: bool = False
    reload: int = 0  # N as written (0 = maximum count)
    gate: bool = True
    armed: bool = False  # a count is loaded (and, in modes 1/5, triggered)
    running: bool = False  # counting now (armed and gate allows)
    start_ns: int = 0  # start of the current counting segment
    tick_offset: int = 0  # CLKs counted before the current segment
    null_count: bool = True
    write_high: bool = False  # LSB-then-MSB write: next byte is the MSB
    write_low: int = 0
    read_high: bool = False  # LSB-then-MSB live read: next byte is the MSB
    latch: list[int] = field(default_factory=list)  # latched count bytes still to read
    status_latch: int | None = None
    pending_reload: int | None = None  # modes 2/3: new N taking effect at ...
    pending_start_ns: int = 0  # ... this time (end of the current period)
    out_high: bool = False  # OUT level for the modes whose line follows OUT


# Snapshot shape: 3-bit mode, 2-bit RW, 16-bit counts, at most a 2-byte latch.
CHANNEL_STATE = Record({
    "mode": Bits(3), "rw": Bits(2), "bcd": Bool(), "reload": U16, "gate": Bool(),
    "armed": Bool(), "running": Bool(), "start_ns": NS, "tick_offset": Int(0, 1 << 63),
    "null_count": Bool(), "write_high": Bool(), "write_low": U8, "read_high": Bool(),
    "latch": ListOf(U8, 0, 2), "status_latch": Maybe(U8), "pending_reload": Maybe(U16),
    "pending_start_ns": NS, "out_high": Bool(),
})
PIT_STATE = Record({"channels": ListOf(CHANNEL_STATE, 3, 3), "irq_pulses": Int(0, 1 << 63)},
                   optional=frozenset({"irq_pulses"}))
PORT61_STATE = Record({"value": U8, "refresh": Bool()})


class PitChannel:
    def __init__(self, pit: Pit8254, index: int, irq: IrqLine | None) -> None:
        self.pit = pit
        self.index = index
        self.irq = irq
        self.s = ChannelState(gate=index != 2)
        self._timer: Timer | None = None

    # -- counting -----------------------------------------------------------
    @property
    def _clock(self) -> VirtualClock:
        return self.pit.clock

    def _n(self) -> int:
        s = self.s
        if s.reload:
            return s.reload
        return 10000 if s.bcd else 0x10000

    def _modulus(self) -> int:
        return 10000 if self.s.bcd else 0x10000

    def _sync(self, now: int) -> None:
        """Apply a mode 2/3 count written mid-period once that period ended."""
        s = self.s
        if s.pending_reload is not None and now >= s.pending_start_ns:
            s.reload = s.pending_reload
            s.pending_reload = None
            s.start_ns = s.pending_start_ns
            s.tick_offset = 0

    def elapsed(self, now: int) -> int:
        s = self.s
        if s.running:
            return s.tick_offset + _ticks(now - s.start_ns)
        return s.tick_offset

    def count(self, now: int) -> int:
        """The counting element's value (binary), datasheet mode descriptions."""
        self._sync(now)
        s = self.s
        n = self._n()
        if not s.armed:
            return s.reload
        t = self.elapsed(now)
        mode = self._mode()
        if mode == 2:
            return n - t % n
        if mode == 3:  # decrements by two, twice per period
            return (n - (2 * t) % n) & ~1 or n & ~1
        return (n - t) % self._modulus()

    def output(self, now: int) -> bool:
        self._sync(now)
        s = self.s
        mode = self._mode()
        if mode == 0:
            return s.armed and self.elapsed(now) >= self._n()
        if not s.armed:
            return True
        t = self.elapsed(now)
        n = self._n()
        if mode == 1:
            return t >= n
        if mode == 2:
            return not s.running or t % n != n - 1
        if mode == 3:
            return not s.running or t % n < (n + 1) // 2
        return t != n  # modes 4, 5: one CLK low at terminal count

    def _mode(self) -> int:
        return self._mode_of(self.s.mode)

    # -- programming --------------------------------------------------------
    def control(self, rw: int, mode: int, bcd: bool) -> None:
        """A control word: the counter stops until a count is written; OUT goes
        low in mode 0 and high in the others."""
        self._cancel()
        self.s = ChannelState(mode=mode, rw=rw, bcd=bcd, gate=self.s.gate,
                              out_high=self._mode_of(mode) != 0)
        self._drive_line(self.s.out_high)

    @staticmethod
    def _mode_of(mode: int) -> int:
        return mode - 4 if mode >= 6 else mode

    def load(self, value: int) -> None:
        s = self.s
        now = self._clock.now_ns()
        self._sync(now)
        if s.bcd:
            value = _from_bcd(value)
        s.null_count = False
        mode = self._mode()
        if mode in (2, 3) and s.armed and s.running:
            # New count takes effect at the end of the current period.
            n = self._n()
            t = self.elapsed(now)
            boundary = (t // n + 1) * n
            s.pending_reload = value
            s.pending_start_ns = s.start_ns + _ns_for_ticks(boundary - s.tick_offset)
            return
        s.reload = value
        s.pending_reload = None
        if mode in (1, 5):
            return  # waits for a rising GATE
        self._start(now)

    def _start(self, now: int) -> None:
        s = self.s
        s.armed = True
        s.start_ns = now
        s.tick_offset = 0
        s.running = s.gate
        if self._mode() in (0, 1):
            self._set_out(False)
        self._reschedule()

    def set_gate(self, level: bool) -> None:
        s = self.s
        if level == s.gate:
            return
        now = self._clock.now_ns()
        self._sync(now)
        mode = self._mode()
        s.gate = level
        if mode in (1, 5):
            if level and not s.null_count:  # rising GATE with a count written
                self._start(now)
            return
        if not s.armed:
            return
        if level:
            if mode in (2, 3):
                s.tick_offset = 0
            s.start_ns = now
            s.running = True
        else:
            s.tick_offset = self.elapsed(now)
            s.running = False
        self._reschedule()

    # -- IRQ ------------------------------------------------------------------
    def _drive_line(self, level: bool) -> None:
        if self.irq is None:
            return
        if self._mode() in (0, 1):
            self.irq.set(level)
        else:
            self.irq.set(False)

    def _set_out(self, level: bool) -> None:
        self.s.out_high = level
        self._drive_line(level)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _next_event_tick(self, t: int) -> int | None:
        """The CLK count (since arming) of the next OUT edge the line reports."""
        n = self._n()
        mode = self._mode()
        if mode in (0, 1):
            return n if t < n else None
        if mode in (2, 3):
            return (t // n + 1) * n
        return n + 1 if t < n + 1 else None

    def _reschedule(self) -> None:
        self._cancel()
        s = self.s
        if self.irq is None or not s.armed or not s.running:
            return
        now = self._clock.now_ns()
        if s.pending_reload is not None:
            self._timer = self._clock.set_timer(s.pending_start_ns, self._fire)
            return
        tick = self._next_event_tick(self.elapsed(now))
        if tick is None:
            return
        deadline = s.start_ns + _ns_for_ticks(tick - s.tick_offset)
        self._timer = self._clock.set_timer(deadline, self._fire)

    def _fire(self) -> None:
        self._timer = None
        assert self.irq is not None
        now = self._clock.now_ns()
        self._sync(now)
        if self._mode() in (0, 1):
            self._set_out(True)
        else:
            self.irq.pulse()
            self.pit.irq_pulses += 1
        self._reschedule()

    # -- ports ----------------------------------------------------------------
    def latch_count(self) -> None:
        s = self.s
        if s.latch:
            return  # a second latch before the first is read is ignored
        value = self.count(self._clock.now_ns())
        if s.bcd:
            value = _to_bcd(value)
        value &= 0xFFFF
        if s.rw == RW_LSB:
            s.latch = [value & 0xFF]
        elif s.rw == RW_MSB:
            s.latch = [value >> 8]
        else:
            s.latch = [value & 0xFF, value >> 8]

    def latch_status(self) -> None:
        s = self.s
        if s.status_latch is not None:
            return
        out = self.output(self._clock.now_ns())
        s.status_latch = ((STATUS_OUT if out else 0) | (STATUS_NULL_COUNT if s.null_count else 0)
                          | s.rw << CW_RW_SHIFT | s.mode << CW_MODE_SHIFT | int(s.bcd))

    def read(self) -> int:
        s = self.s
        if s.status_latch is not None:
            value, s.status_latch = s.status_latch, None
            return value
        if s.latch:
            return s.latch.pop(0)
        value = self.count(self._clock.now_ns())
        if s.bcd:
            value = _to_bcd(value)
        value &= 0xFFFF
        if s.rw == RW_LSB:
            return value & 0xFF
        if s.rw == RW_MSB:
            return value >> 8
        s.read_high = not s.read_high
        return value & 0xFF if s.read_high else value >> 8

    def write(self, value: int) -> None:
        s = self.s
        if s.rw == RW_LSB:
            self.load(value)
        elif s.rw == RW_MSB:
            self.load(value << 8)
        elif not s.write_high:
            s.write_low = value
            s.write_high = True
            s.null_count = True
        else:
            s.write_high = False
            self.load(s.write_low | value << 8)

    def get_state(self) -> dict:
        return asdict(self.s)

    def set_state(self, state: dict) -> None:
        CHANNEL_STATE.check(state)
        self._cancel()
        self.s = ChannelState(**state)
        self.s.latch = list(self.s.latch)
        self._drive_line(self.s.out_high)
        self._reschedule()


class Pit8254:
    """Port device at 0x40-0x43 (offsets 0-2 counters, 3 control word)."""

    def __init__(self, clock: VirtualClock, irq0: IrqLine) -> None:
        self.clock = clock
        self.irq_pulses = 0  # IRQ0 pulses delivered (for stats/tests)
        self.channels = [PitChannel(self, 0, irq0), PitChannel(self, 1, None),
                         PitChannel(self, 2, None)]

    def io_read(self, offset: int, size: int) -> int:
        if offset == CONTROL_PORT:
            return 0xFF  # the control word register is write-only
        return self.channels[offset].read()

    def io_write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        if offset != CONTROL_PORT:
            self.channels[offset].write(value)
            return
        select = value >> CW_SC_SHIFT
        rw = (value >> CW_RW_SHIFT) & 3
        if select == SC_READ_BACK:
            self._read_back(value)
        elif rw == RW_LATCH:
            self.channels[select].latch_count()
        else:
            self.channels[select].control(rw, (value >> CW_MODE_SHIFT) & 7, bool(value & CW_BCD))

    def _read_back(self, value: int) -> None:
        """Read-back command: latch count and/or status of each selected counter."""
        for index, channel in enumerate(self.channels):
            if not value & (RB_COUNTER0 << index):
                continue
            if not value & RB_NOT_STATUS:
                channel.latch_status()
            if not value & RB_NOT_COUNT:
                channel.latch_count()

    # -- board-facing -----------------------------------------------------------
    def channel_output(self, n: int) -> bool:
        return self.channels[n].output(self.clock.now_ns())

    def set_gate(self, n: int, level: bool) -> None:
        self.channels[n].set_gate(level)

    def stop_timers(self) -> None:
        """Disarm every channel's timer, keeping the registers (while another PIT,
        KVM's in-kernel one, drives IRQ0)."""
        for channel in self.channels:
            channel._cancel()

    def get_state(self) -> dict:
        return {"channels": [c.get_state() for c in self.channels],
                "irq_pulses": self.irq_pulses}

    def set_state(self, state: dict) -> None:
        PIT_STATE.check(state)
        self.irq_pulses = state.get("irq_pulses", 0)
        for channel, cs in zip(self.channels, state["channels"], strict=True):
            channel.set_state(cs)


class SystemControlPortB:
    """Port 0x61 (PC/AT system control port B): GATE2, speaker, OUT2, refresh.

    Bits 0-3 read back what was written; bit 4 toggles on every read (real
    hardware toggles every 15 us; BIOS delay loops only need it to change);
    bit 5 is channel 2's OUT.  Bits 6-7 (parity/IOCHK errors) read 0.
    """

    def __init__(self, pit: Pit8254) -> None:
        self.pit = pit
        self.value = 0
        self.refresh = False

    def io_read(self, offset: int, size: int) -> int:
        self.refresh = not self.refresh
        out2 = self.pit.channel_output(2)
        return (self.value | (PORTB_REFRESH if self.refresh else 0)
                | (PORTB_OUT2 if out2 else 0))

    def io_write(self, offset: int, size: int, value: int) -> None:
        self.value = value & PORTB_WRITABLE
        self.pit.set_gate(2, bool(value & PORTB_GATE2))

    def get_state(self) -> dict:
        return {"value": self.value, "refresh": self.refresh}

    def set_state(self, state: dict) -> None:
        PORT61_STATE.check(state)
        self.value = state["value"]
        self.refresh = state["refresh"]
