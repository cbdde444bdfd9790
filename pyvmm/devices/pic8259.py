"""Intel 8259A programmable interrupt controller, as the PC/AT's cascaded pair.

Facts relied on (Intel 8259A datasheet, order 231468, "Programming the
8259A"): a write to the command port with D4=1 is ICW1 and starts the
initialisation sequence ICW2 (vector base), ICW3 (cascade, only when not
SNGL) and ICW4 (only when IC4); afterwards data-port writes set the IMR
(OCW1) and command-port writes are OCW2 (D4=0, D3=0) or OCW3 (D4=0, D3=1).
The master's IR2 is wired to the slave's INT output (PC/AT); the INTA cycle
for IR2 returns the slave's vector.  When no request survives until INTA the
chip answers with IR7's vector without setting ISR ("spurious IRQ7/IRQ15").

Byte-wide device: a 2- or 4-byte access uses the low byte.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from pyvmm.schema import U8, Bool, Int, Record

CMD_PORT = 0  # offset of the command port (0x20 / 0xA0): ICW1, OCW2, OCW3; reads IRR/ISR
DATA_PORT = 1  # offset of the data port (0x21 / 0xA1): ICW2-4, OCW1 (IMR)

ICW1_IC4 = 0x01  # ICW4 will follow
ICW1_SNGL = 0x02  # single controller: no ICW3
ICW1_LTIM = 0x08  # level-triggered inputs (else edge)
ICW1_INIT = 0x10  # D4 set on a command-port write marks ICW1
OCW3_SELECT = 0x08  # D3 set (with D4 clear) marks OCW3
OCW3_RIS = 0x01  # read ISR (1) or IRR (0) at the next command-port read ...
OCW3_RR = 0x02  # ... when RR is set
OCW3_POLL = 0x04  # poll command: next command-port read returns 0x80|level or 0
OCW3_SMM = 0x20  # special mask mode on (1) / off (0) ...
OCW3_ESMM = 0x40  # ... when ESMM is set
ICW4_UPM = 0x01  # 8086/8088 mode (vector = base | level)
ICW4_AEOI = 0x02  # automatic EOI at the end of INTA
ICW4_SFNM = 0x10  # special fully nested mode (master lets the slave's IR re-interrupt)
ICW2_BASE_MASK = 0xF8  # T7-T3 of the vector; the IR level fills bits 2-0
POLL_INTERRUPT = 0x80  # poll word bit 7: an interrupt was pending

# OCW2 R/SL/EOI (bits 7-5) commands, table "Operation Command Word 2".
OCW2_ROTATE_AEOI_CLEAR = 0  # clear rotate-in-automatic-EOI mode
OCW2_NONSPECIFIC_EOI = 1  # EOI for the highest-priority IR in service
OCW2_NOP = 2  # no operation
OCW2_SPECIFIC_EOI = 3  # EOI for IR L2-L0
OCW2_ROTATE_AEOI_SET = 4  # set rotate-in-automatic-EOI mode
OCW2_ROTATE_NONSPECIFIC_EOI = 5  # non-specific EOI, then that IR becomes lowest priority
OCW2_SET_PRIORITY = 6  # IR L2-L0 becomes lowest priority
OCW2_ROTATE_SPECIFIC_EOI = 7  # specific EOI, then IR L2-L0 becomes lowest priority

CASCADE_IR = 2  # master input wired to the slave INT (PC/AT)
SPURIOUS_IR = 7  # level reported when no request survives to INTA

# Initialisation state: which word the next data-port write is.
_READY, _WANT_ICW2, _WANT_ICW3, _WANT_ICW4 = 0, 1, 2, 3


@dataclass
class PicState:
    """One 8259A's registers and modes (plain data for snapshots)."""

    irr: int = 0  # interrupt request register
    isr: int = 0  # in-service register
    imr: int = 0  # interrupt mask register
    levels: int = 0  # current level of the IR inputs (edge detection)
    vector_base: int = 0  # ICW2 & 0xF8
    icw3: int = 0  # cascade byte (slave mask on the master, id on the slave)
    init_step: int = _READY
    icw4_needed: bool = False
    single: bool = False
    level_triggered: bool = False
    auto_eoi: bool = False
    rotate_on_aeoi: bool = False
    special_fully_nested: bool = False
    special_mask: bool = False
    read_isr: bool = False
    poll: bool = False
    lowest_priority: int = 7  # IR with the lowest priority (rotation)
    icw4: int = 0


# Snapshot shape: 8-bit registers, the init sequencer's 4 steps, IR levels 0-7.
PIC_STATE = Record({
    "irr": U8, "isr": U8, "imr": U8, "levels": U8, "vector_base": Int(0, ICW2_BASE_MASK),
    "icw3": U8, "init_step": Int(_READY, _WANT_ICW4), "icw4_needed": Bool(), "single": Bool(),
    "level_triggered": Bool(), "auto_eoi": Bool(), "rotate_on_aeoi": Bool(),
    "special_fully_nested": Bool(), "special_mask": Bool(), "read_isr": Bool(), "poll": Bool(),
    "lowest_priority": Int(0, 7), "icw4": U8,
}, rules=((lambda s: s["vector_base"] & ~ICW2_BASE_MASK == 0, "vector_base",
           "low 3 bits must be 0 (ICW2 T7-T3)"),))
PAIR_STATE = Record({"master": PIC_STATE, "slave": PIC_STATE})


class Pic8259:
    """One 8259A chip: port device at offsets 0 (command) and 1 (data)."""

    def __init__(self, name: str, is_master: bool) -> None:
        self.name = name
        self.is_master = is_master
        self.s = PicState()
        # The pair re-evaluates INT outputs (cascade, INTR) after any change.
        self.on_change: Callable[[], None] = lambda: None

    # -- inputs -------------------------------------------------------------
    def set_input(self, ir: int, level: bool) -> None:
        """Drive IR input `ir`: edge mode latches IRR on a rising edge only;
        level mode makes IRR follow the input (datasheet, "Edge and level
        triggered modes")."""
        s = self.s
        bit = 1 << ir
        if level:
            if s.level_triggered or not s.levels & bit:
                s.irr |= bit
            s.levels |= bit
        else:
            s.levels &= ~bit
            if s.level_triggered:
                s.irr &= ~bit

    # -- priority -----------------------------------------------------------
    def _priority_order(self) -> range:
        return range(self.s.lowest_priority + 1, self.s.lowest_priority + 9)

    def _highest(self, bits: int) -> int | None:
        for i in self._priority_order():
            if bits & (1 << (i & 7)):
                return i & 7
        return None

    def _rank(self, ir: int) -> int:
        """0 = highest priority under the current rotation."""
        return (ir - self.s.lowest_priority - 1) & 7

    def pending_ir(self) -> int | None:
        """The IR this chip would assert INT for (fully nested priority)."""
        s = self.s
        request = self._highest(s.irr & ~s.imr & 0xFF)
        if request is None:
            return None
        in_service = s.isr
        if s.special_mask:
            in_service &= ~s.imr
        if self.is_master and s.special_fully_nested:
            in_service &= ~(1 << CASCADE_IR)
        current = self._highest(in_service)
        if current is not None and self._rank(current) <= self._rank(request):
            return None
        return request

    def intack(self, ir: int) -> None:
        """INTA for `ir`: IRR -> ISR (or straight out with AEOI)."""
        s = self.s
        bit = 1 << ir
        if not s.level_triggered:
            s.irr &= ~bit
        if s.auto_eoi:
            if s.rotate_on_aeoi:
                s.lowest_priority = ir
        else:
            s.isr |= bit

    # -- ports --------------------------------------------------------------
    def io_read(self, offset: int, size: int) -> int:
        s = self.s
        if offset & 1 == DATA_PORT:
            return s.imr
        if s.poll:
            s.poll = False
            ir = self.pending_ir()
            if ir is None:
                return 0
            self.intack(ir)
            self.on_change()
            return POLL_INTERRUPT | ir
        return s.isr if s.read_isr else s.irr

    def io_write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        if offset & 1 == CMD_PORT:
            if value & ICW1_INIT:
                self._icw1(value)
            elif value & OCW3_SELECT:
                self._ocw3(value)
            else:
                self._ocw2(value)
        else:
            self._data_write(value)
        self.on_change()

    def _icw1(self, value: int) -> None:
        """ICW1 resets the chip: IMR cleared, IR7 lowest priority, special mask
        off, IRR selected for reading, and the edge-sense latch reset so an
        input must rise again to request (datasheet, "Initialization")."""
        levels = self.s.levels
        self.s = PicState(levels=levels, init_step=_WANT_ICW2,
                          icw4_needed=bool(value & ICW1_IC4), single=bool(value & ICW1_SNGL),
                          level_triggered=bool(value & ICW1_LTIM))
        if self.s.level_triggered:
            self.s.irr = levels

    def _data_write(self, value: int) -> None:
        s = self.s
        if s.init_step == _WANT_ICW2:
            s.vector_base = value & ICW2_BASE_MASK
            if not s.single:
                s.init_step = _WANT_ICW3
            else:
                s.init_step = _WANT_ICW4 if s.icw4_needed else _READY
        elif s.init_step == _WANT_ICW3:
            s.icw3 = value
            s.init_step = _WANT_ICW4 if s.icw4_needed else _READY
        elif s.init_step == _WANT_ICW4:
            s.icw4 = value
            s.auto_eoi = bool(value & ICW4_AEOI)
            s.special_fully_nested = bool(value & ICW4_SFNM)
            s.init_step = _READY
        else:
            s.imr = value

    def _ocw2(self, value: int) -> None:
        s = self.s
        command, level = value >> 5, value & 7
        if command in (OCW2_NONSPECIFIC_EOI, OCW2_ROTATE_NONSPECIFIC_EOI):
            ir = self._highest(s.isr)
            if ir is not None:
                s.isr &= ~(1 << ir)
                if command == OCW2_ROTATE_NONSPECIFIC_EOI:
                    s.lowest_priority = ir
        elif command in (OCW2_SPECIFIC_EOI, OCW2_ROTATE_SPECIFIC_EOI):
            s.isr &= ~(1 << level)
            if command == OCW2_ROTATE_SPECIFIC_EOI:
                s.lowest_priority = level
        elif command == OCW2_SET_PRIORITY:
            s.lowest_priority = level
        elif command == OCW2_ROTATE_AEOI_SET:
            s.rotate_on_aeoi = True
        elif command == OCW2_ROTATE_AEOI_CLEAR:
            s.rotate_on_aeoi = False
        # OCW2_NOP: nothing.

    def _ocw3(self, value: int) -> None:
        s = self.s
        if value & OCW3_POLL:
            s.poll = True
        if value & OCW3_RR:
            s.read_isr = bool(value & OCW3_RIS)
        if value & OCW3_ESMM:
            s.special_mask = bool(value & OCW3_SMM)

    # -- snapshot -----------------------------------------------------------
    def get_state(self) -> dict:
        return asdict(self.s)

    def set_state(self, state: dict) -> None:
        PIC_STATE.check(state)
        self.s = PicState(**state)


class Pic8259Pair:
    """Master (IRQ 0-7) and slave (IRQ 8-15) cascaded on master IR2.

    IrqSink for the board's lines and InterruptController for the CPU side.  The
    cascade input follows the slave's INT level directly, so a slave request
    that stays asserted across an INTA is never lost.  `on_intr_change`, if
    set, is called with the new INTR level whenever it changes (an engine can
    use it to open an interrupt window or wake a halted vCPU).
    """

    def __init__(self) -> None:
        self.master = Pic8259("pic-master", is_master=True)
        self.slave = Pic8259("pic-slave", is_master=False)
        self.master.on_change = self._update
        self.slave.on_change = self._update
        self.on_intr_change: Callable[[bool], None] | None = None
        self.spurious = 0  # INTA cycles answered with IR7 (no surviving request)
        self._intr = False

    def _update(self) -> None:
        slave_int = self.slave.pending_ir() is not None
        master = self.master.s
        bit = 1 << CASCADE_IR
        if slave_int:
            master.irr |= bit
            master.levels |= bit
        else:
            master.irr &= ~bit
            master.levels &= ~bit
        intr = self.master.pending_ir() is not None
        if intr != self._intr:
            self._intr = intr
            if self.on_intr_change is not None:
                self.on_intr_change(intr)

    # -- IrqSink ------------------------------------------------------------
    def set_irq(self, irq: int, level: bool) -> None:
        if irq < 8:
            if irq == CASCADE_IR:
                return  # IR2 is the cascade; ISA IRQ2 is rerouted to IRQ9 on the AT
            self.master.set_input(irq, level)
        else:
            self.slave.set_input(irq - 8, level)
        self._update()

    # -- InterruptController --------------------------------------------------
    def interrupt_pending(self) -> bool:
        return self._intr

    def acknowledge(self) -> int:
        """The two-pulse INTA sequence; returns the vector (8086 mode)."""
        master = self.master
        ir = master.pending_ir()
        if ir is None:
            self.spurious += 1
            vector = master.s.vector_base | SPURIOUS_IR
        else:
            master.intack(ir)
            if ir == CASCADE_IR and not master.s.single:
                slave_ir = self.slave.pending_ir()
                if slave_ir is None:
                    self.spurious += 1
                    slave_ir = SPURIOUS_IR
                else:
                    self.slave.intack(slave_ir)
                vector = self.slave.s.vector_base | slave_ir
            else:
                vector = master.s.vector_base | ir
        self._update()
        return vector

    # -- snapshot -----------------------------------------------------------
    def get_state(self) -> dict:
        return {"master": self.master.get_state(), "slave": self.slave.get_state()}

    def set_state(self, state: dict) -> None:
        PAIR_STATE.check(state)
        self.master.set_state(state["master"])
        self.slave.set_state(state["slave"])
        self._intr = False
        self._update()
