"""KVM's in-kernel chips <-> the snapshot state of the board's Python models.

Pure conversions, no ioctls (irqchip.py fetches and stores the structures).
Layouts: arch/x86/include/uapi/asm/kvm.h (kvm_pic_state, kvm_ioapic_state,
kvm_lapic_state, kvm_pit_channel_state, kvm_pit_state2); the meaning of each
field from arch/x86/kvm/i8259.c, ioapic.c, lapic.c and i8254.c (Linux 6.1).
The models' state dicts are the schemas next to their `set_state`
(devices/pic8259.py PIC_STATE, ioapic.py IOAPIC_STATE, lapic.py LAPIC_STATE,
pit8254.py CHANNEL_STATE/PORT61_STATE, pci/piix.py ELCR_STATE).

What KVM does not keep, and what each direction then assumes:

- i8259: no ICW3 and no single mode (KVM's PIC is always the PC/AT cascade),
  no per-chip LTIM (KVM has the PIIX ELCR instead, which is the board's
  "elcr" device): a chip comes out with ICW3 = 0x04 (master) / 0x02 (slave)
  and edge-triggered, its ELCR bits in "elcr".
- I/O APIC: KVM's `irr` is the pins' asserted levels, less the edge pins
  already delivered; only level pins' levels go in (KVM re-injects every
  `irr` bit on KVM_SET_IRQCHIP).
- LAPIC: the timer's current count (TMCCT) is the remaining count in both
  directions; KVM_SET_LAPIC restarts the count from it.  The TSC deadline
  travels as a distance from now (the caller's `deadline_ns`).
- PIT: KVM reports no phase for channel 0 (its count runs in an hrtimer;
  count_load_time is kept for channels 1 and 2 only) and KVM_SET_PIT2
  reloads every channel's count at once, so a counting channel 0 restarts
  its period at the switch, in both directions (QEMU's behaviour too).
"""

from __future__ import annotations

from dataclasses import asdict

from pyvmm.devices import lapic as L
from pyvmm.devices.ioapic import DEFAULT_BASE as IOAPIC_BASE
from pyvmm.devices.ioapic import PINS, RTE_LEVEL, RTE_LOW_WRITABLE, RTE_REMOTE_IRR
from pyvmm.devices.pit8254 import PIT_HZ, RW_LSB, RW_MSB, RW_WORD, ChannelState
from pyvmm.engines.kvm import ioctls as k

# -- i8259 -------------------------------------------------------------------------
ICW3_MASTER, ICW3_SLAVE = 0x04, 0x02  # PC/AT: the slave on master IR2
ICW4_8086, ICW4_AEOI, ICW4_SFNM = 0x01, 0x02, 0x10


def pic_from_kvm(pic: k.kvm_pic_state, master: bool) -> dict:
    """One chip as a PIC_STATE dict."""
    icw4 = (ICW4_8086 | (ICW4_AEOI if pic.auto_eoi else 0)
            | (ICW4_SFNM if pic.special_fully_nested_mode else 0)) if pic.init4 else 0
    return {
        "irr": pic.irr, "isr": pic.isr, "imr": pic.imr, "levels": pic.last_irr,
        "vector_base": pic.irq_base & 0xF8, "icw3": ICW3_MASTER if master else ICW3_SLAVE,
        "init_step": min(pic.init_state, 3), "icw4_needed": bool(pic.init4), "single": False,
        "level_triggered": False, "auto_eoi": bool(pic.auto_eoi),
        "rotate_on_aeoi": bool(pic.rotate_on_auto_eoi),
        "special_fully_nested": bool(pic.special_fully_nested_mode),
        "special_mask": bool(pic.special_mask), "read_isr": bool(pic.read_reg_select),
        "poll": bool(pic.poll),
        # KVM's priority_add is the highest-priority IR; the model keeps the lowest.
        "lowest_priority": (pic.priority_add - 1) & 7, "icw4": icw4,
    }


def pic_into_kvm(state: dict, elcr: int, pic: k.kvm_pic_state) -> None:
    """A PIC_STATE dict and its 8 ELCR bits into `pic` (elcr_mask is KVM's own)."""
    pic.last_irr, pic.irr, pic.isr, pic.imr = (state["levels"], state["irr"], state["isr"],
                                               state["imr"])
    pic.priority_add = (state["lowest_priority"] + 1) & 7
    pic.irq_base = state["vector_base"]
    pic.read_reg_select = int(state["read_isr"])
    pic.poll = int(state["poll"])
    pic.special_mask = int(state["special_mask"])
    pic.init_state = state["init_step"]
    pic.auto_eoi = int(state["auto_eoi"])
    pic.rotate_on_auto_eoi = int(state["rotate_on_aeoi"])
    pic.special_fully_nested_mode = int(state["special_fully_nested"])
    pic.init4 = int(state["icw4_needed"])
    level = 0xFF if state["level_triggered"] else elcr
    pic.elcr = level & pic.elcr_mask


def elcr_from_kvm(master: k.kvm_pic_state, slave: k.kvm_pic_state) -> dict:
    return {"registers": bytes([master.elcr, slave.elcr]).hex()}


def elcr_bytes(state: dict) -> tuple[int, int]:
    data = bytes.fromhex(state["registers"])
    return data[0], data[1]


# -- I/O APIC ----------------------------------------------------------------------
_RTE_KEPT = 0xFF << 56 | RTE_LOW_WRITABLE | RTE_REMOTE_IRR  # what IOAPIC_STATE holds


def ioapic_from_kvm(io: k.kvm_ioapic_state) -> dict:
    ident = io.id & 0xF
    return {"ioapic_id": ident, "arb_id": ident, "ioregsel": io.ioregsel & 0xFF,
            "redirection": [io.redirtbl[pin] & _RTE_KEPT for pin in range(PINS)],
            "asserted": io.irr & ((1 << PINS) - 1)}


def ioapic_into_kvm(state: dict, io: k.kvm_ioapic_state) -> None:
    io.base_address = IOAPIC_BASE
    io.ioregsel = state["ioregsel"]
    io.id = state["ioapic_id"]
    level_pins = 0
    for pin, entry in enumerate(state["redirection"]):
        io.redirtbl[pin] = entry
        if entry & RTE_LEVEL:
            level_pins |= 1 << pin
    io.irr = state["asserted"] & level_pins


# -- local APIC --------------------------------------------------------------------

def _reg(regs: k.kvm_lapic_state, offset: int) -> int:
    return int.from_bytes(bytes(regs.regs[offset:offset + 4]), "little")


def _set_reg(regs: k.kvm_lapic_state, offset: int, value: int) -> None:
    regs.regs[offset:offset + 4] = list((value & 0xFFFFFFFF).to_bytes(4, "little"))


def _bank(regs: k.kvm_lapic_state, base: int) -> int:
    """A 256-bit ISR/TMR/IRR: eight registers 16 bytes apart, vector 32*j+i in bit i of j."""
    return sum(_reg(regs, base + 16 * j) << (32 * j) for j in range(8))


def _set_bank(regs: k.kvm_lapic_state, base: int, bits: int) -> None:
    for j in range(8):
        _set_reg(regs, base + 16 * j, bits >> (32 * j))


def _lvt_kept(index: int) -> int:
    return L.LVT_WRITABLE[index] | L.LVT_MASKED | L.LVT_REMOTE_IRR | 1 << 12


def lapic_from_kvm(regs: k.kvm_lapic_state, apic_base: int, now_ns: int,
                   deadline_ns: int) -> dict:
    """The register page (KVM_GET_LAPIC: TMCCT holds the current count) as a
    LAPIC_STATE dict.  `now_ns`: the board clock now; `deadline_ns`: the TSC
    deadline as a board time (0: disarmed)."""
    lvt = [0] * len(L.LVT_WRITABLE)
    for reg, index in L.LVT_REGS.items():
        lvt[index] = _reg(regs, reg) & _lvt_kept(index)
    initial = _reg(regs, L.REG_TIMER_INITIAL)
    current = _reg(regs, L.REG_TIMER_CURRENT)
    divide = _reg(regs, L.REG_TIMER_DIVIDE) & 0xB
    mode = lvt[L.LVT_TIMER] >> L.TIMER_MODE_SHIFT & 3
    counting = mode != L.TIMER_TSC_DEADLINE and initial > 0 and current > 0
    start = now_ns - (initial - current) * L.timer_divisor(divide) if counting else 0
    return {
        "apic_id": _reg(regs, L.REG_ID) >> 24, "apic_base": apic_base & L.BASE_WRITABLE,
        "tpr": _reg(regs, L.REG_TPR) & 0xFF, "ldr": _reg(regs, L.REG_LDR) & 0xFF000000,
        "dfr": _reg(regs, L.REG_DFR) | 0x0FFFFFFF, "svr": _reg(regs, L.REG_SVR) & L.SVR_WRITABLE,
        "isr": _bank(regs, L.REG_ISR), "tmr": _bank(regs, L.REG_TMR),
        "irr": _bank(regs, L.REG_IRR), "esr": _reg(regs, L.REG_ESR) & 0xFF, "esr_pending": 0,
        "icr_lo": _reg(regs, L.REG_ICR_LO) & L.ICR_WRITABLE,
        "icr_hi": _reg(regs, L.REG_ICR_HI) & 0xFF000000, "lvt": lvt,
        "timer_initial": initial, "timer_divide": divide, "timer_start_ns": start,
        "timer_running": counting,
        "tsc_deadline": deadline_ns if mode == L.TIMER_TSC_DEADLINE else 0,
        "init_pending": False, "sipi_vector": None, "nmi_pending": False,
    }


def lapic_current_count(state: dict, now_ns: int) -> int:
    """The count a LAPIC_STATE dict's timer holds at `now_ns` (lapic.LocalApic)."""
    mode = state["lvt"][L.LVT_TIMER] >> L.TIMER_MODE_SHIFT & 3
    initial = state["timer_initial"]
    if not state["timer_running"] or mode == L.TIMER_TSC_DEADLINE or not initial:
        return 0
    elapsed = max(0, now_ns - state["timer_start_ns"]) // L.timer_divisor(state["timer_divide"])
    if mode == L.TIMER_PERIODIC:
        return initial - elapsed % initial
    return max(0, initial - elapsed)


def lapic_into_kvm(state: dict, now_ns: int, regs: k.kvm_lapic_state) -> None:
    """A LAPIC_STATE dict into the register page (read from KVM first, so the
    version and KVM's other registers stay)."""
    simple = {L.REG_ID: state["apic_id"] << 24, L.REG_TPR: state["tpr"],
              L.REG_LDR: state["ldr"], L.REG_DFR: state["dfr"], L.REG_SVR: state["svr"],
              L.REG_ESR: state["esr"], L.REG_ICR_LO: state["icr_lo"],
              L.REG_ICR_HI: state["icr_hi"], L.REG_TIMER_INITIAL: state["timer_initial"],
              L.REG_TIMER_CURRENT: lapic_current_count(state, now_ns),
              L.REG_TIMER_DIVIDE: state["timer_divide"]}
    for reg, index in L.LVT_REGS.items():
        simple[reg] = state["lvt"][index]
    for reg, value in simple.items():
        _set_reg(regs, reg, value)
    _set_bank(regs, L.REG_ISR, state["isr"])
    _set_bank(regs, L.REG_TMR, state["tmr"])
    _set_bank(regs, L.REG_IRR, state["irr"])


# -- 8254 PIT and port 0x61 -----------------------------------------------------------
KVM_PIT_UNPROGRAMMED = 0xFF  # kvm_pit_reset: mode 0xff until a control word
# kvm_pit_channel_state read_state/write_state (i8254.h RW_STATE_*).
RW_STATE_LSB, RW_STATE_MSB, RW_STATE_WORD0, RW_STATE_WORD1 = 1, 2, 3, 4
PORTB_GATE2, PORTB_SPEAKER = 0x01, 0x02


def _ticks_ns(ticks: int) -> int:
    return ticks * 1_000_000_000 // PIT_HZ


def pit_channel_from_kvm(c: k.kvm_pit_channel_state, index: int, now_ns: int,
                         elapsed_ns: int | None) -> dict:
    """One channel as a CHANNEL_STATE dict.  `elapsed_ns`: how long its count has
    run (host ns since count_load_time), None where KVM does not say (channel 0:
    counting restarts now)."""
    if c.mode == KVM_PIT_UNPROGRAMMED:
        return asdict(ChannelState(gate=bool(c.gate)))
    rw = c.rw_mode if c.rw_mode in (RW_LSB, RW_MSB, RW_WORD) else RW_WORD
    gate = bool(c.gate)
    elapsed = elapsed_ns or 0
    latch: list[int] = []
    if c.count_latched == RW_STATE_WORD0:
        latch = [c.latched_count & 0xFF, c.latched_count >> 8]
    elif c.count_latched == RW_STATE_LSB:
        latch = [c.latched_count & 0xFF]
    elif c.count_latched == RW_STATE_MSB:
        latch = [c.latched_count >> 8]
    return {
        "mode": c.mode & 7, "rw": rw, "bcd": bool(c.bcd), "reload": c.count & 0xFFFF,
        "gate": gate, "armed": True, "running": gate,
        "start_ns": now_ns - elapsed if gate else now_ns,
        "tick_offset": 0 if gate else elapsed * PIT_HZ // 1_000_000_000,
        "null_count": False, "write_high": c.write_state == RW_STATE_WORD1,
        "write_low": c.write_latch, "read_high": c.read_state == RW_STATE_WORD1,
        "latch": latch, "status_latch": c.status if c.status_latched else None,
        "pending_reload": None, "pending_start_ns": 0, "out_high": c.mode & 7 not in (0, 1),
    }


def pit_from_kvm(pit: k.kvm_pit_state2, now_ns: int, host_now_ns: int,
                 port61: dict) -> tuple[list[dict], dict]:
    """(the three CHANNEL_STATE dicts, the port 0x61 PORT61_STATE dict)."""
    channels = []
    for index, c in enumerate(pit.channels):
        elapsed = None if index == 0 else max(0, host_now_ns - c.count_load_time)
        channels.append(pit_channel_from_kvm(c, index, now_ns, elapsed))
    value = port61["value"] & ~(PORTB_GATE2 | PORTB_SPEAKER)
    value |= PORTB_GATE2 if pit.channels[2].gate else 0
    value |= PORTB_SPEAKER if pit.flags & k.KVM_PIT_FLAGS_SPEAKER_DATA_ON else 0
    return channels, {**port61, "value": value}


def _unprogrammed(state: dict, index: int) -> bool:
    fresh = asdict(ChannelState(gate=index != 2))
    return all(state[name] == fresh[name] for name in ("mode", "rw", "armed", "reload",
                                                        "null_count"))


def pit_channel_into_kvm(state: dict, index: int, c: k.kvm_pit_channel_state) -> None:
    c.gate = int(state["gate"])
    if _unprogrammed(state, index):
        c.mode, c.count, c.rw_mode = KVM_PIT_UNPROGRAMMED, 0x10000, 0
        c.read_state = c.write_state = 0
        c.count_latched = c.status_latched = 0
        return
    mode = state["mode"]
    rw = state["rw"]
    c.mode = mode - 4 if mode >= 6 else mode  # 6 and 7 alias 2 and 3, as KVM stores them
    c.rw_mode, c.bcd = rw, int(state["bcd"])
    c.count = state["reload"] or 0x10000
    if rw == RW_WORD:
        c.write_state = RW_STATE_WORD1 if state["write_high"] else RW_STATE_WORD0
        c.read_state = RW_STATE_WORD1 if state["read_high"] else RW_STATE_WORD0
    else:
        c.write_state = c.read_state = rw
    c.write_latch = state["write_low"]
    latch = state["latch"]
    if len(latch) == 2:
        c.count_latched, c.latched_count = RW_STATE_WORD0, latch[0] | latch[1] << 8
    elif latch and rw == RW_LSB:
        c.count_latched, c.latched_count = RW_STATE_LSB, latch[0]
    elif latch:
        c.count_latched, c.latched_count = RW_STATE_MSB, latch[0] << 8
    else:
        c.count_latched = 0
    status = state["status_latch"]
    c.status_latched, c.status = (0, 0) if status is None else (1, status)


def pit_into_kvm(channels: list[dict], port61: dict, pit: k.kvm_pit_state2) -> None:
    for index, (state, c) in enumerate(zip(channels, pit.channels, strict=True)):
        pit_channel_into_kvm(state, index, c)
    pit.channels[2].gate = int(bool(port61["value"] & PORTB_GATE2))
    speaker = k.KVM_PIT_FLAGS_SPEAKER_DATA_ON
    pit.flags = (pit.flags & ~speaker) | (speaker if port61["value"] & PORTB_SPEAKER else 0)
