"""KVM's in-kernel chip state <-> the board models' snapshot state (engines/kvm/chipstate.py).

Struct layouts from Linux arch/x86/include/uapi/asm/kvm.h and
include/uapi/linux/kvm.h (6.1); field meanings from arch/x86/kvm/i8259.c,
ioapic.c, lapic.c, i8254.c.  The last tests put states through a real KVM VM
(KVM_SET_* then KVM_GET_*) and need /dev/kvm.
"""

from __future__ import annotations

import ctypes
import io

from pyvmm.devices.ioapic import IOAPIC_STATE
from pyvmm.devices.lapic import LAPIC_STATE
from pyvmm.devices.pic8259 import PIC_STATE
from pyvmm.devices.pit8254 import CHANNEL_STATE
from pyvmm.engines.kvm import chipstate as cs
from pyvmm.engines.kvm import ioctls as k
from tests.conftest import requires_kvm


def test_struct_layouts_match_the_kernel_headers() -> None:
    assert ctypes.sizeof(k.kvm_pic_state) == 16  # sixteen __u8
    assert k.kvm_pic_state.elcr.offset == 14 and k.kvm_pic_state.priority_add.offset == 4
    assert ctypes.sizeof(k.kvm_ioapic_state) == 24 + 8 * k.KVM_IOAPIC_NUM_PINS
    assert k.kvm_ioapic_state.redirtbl.offset == 24 and k.kvm_ioapic_state.irr.offset == 16
    assert ctypes.sizeof(k.kvm_irqchip) == 8 + 512  # chip_id, pad, the 512-byte union
    assert ctypes.sizeof(k.kvm_lapic_state) == 0x400  # KVM_APIC_REG_SIZE
    assert ctypes.sizeof(k.kvm_pit_channel_state) == 24
    assert k.kvm_pit_channel_state.count_load_time.offset == 16
    assert ctypes.sizeof(k.kvm_pit_state2) == 3 * 24 + 4 + 36
    # The ioctl numbers encode direction and size (linux/kvm.h).
    assert k.KVM_GET_IRQCHIP == 0xC208AE62 and k.KVM_SET_IRQCHIP == 0x8208AE63
    assert k.KVM_GET_LAPIC == 0x8400AE8E and k.KVM_SET_LAPIC == 0x4400AE8F
    assert k.KVM_GET_PIT2 == 0x8070AE9F and k.KVM_SET_PIT2 == 0x4070AEA0


def _pic(**fields) -> dict:
    state = {"irr": 0x11, "isr": 0x02, "imr": 0xF8, "levels": 0x01, "vector_base": 0x20,
             "icw3": 0x04, "init_step": 0, "icw4_needed": True, "single": False,
             "level_triggered": False, "auto_eoi": False, "rotate_on_aeoi": True,
             "special_fully_nested": False, "special_mask": True, "read_isr": True,
             "poll": False, "lowest_priority": 3, "icw4": 0x01}
    state.update(fields)
    PIC_STATE.check(state)
    return state


def test_pic_round_trip_and_kvm_s_priority_base() -> None:
    state = _pic()
    pic = k.kvm_pic_state(elcr_mask=0xF8)
    cs.pic_into_kvm(state, 0x08, pic)
    # i8259.c: priority_add is the IR with the highest priority; the model keeps
    # the lowest, one below it in rotation order.
    assert pic.priority_add == 4 and pic.irq_base == 0x20 and pic.last_irr == 0x01
    assert pic.elcr == 0x08 and pic.init4 == 1 and pic.read_reg_select == 1
    back = cs.pic_from_kvm(pic, master=True)
    PIC_STATE.check(back)
    assert back == state


def test_pic_elcr_is_masked_by_kvm_s_elcr_mask_and_ltim_sets_it() -> None:
    pic = k.kvm_pic_state(elcr_mask=0xDE)  # the slave: IRQ 8 and 13 are edge only
    cs.pic_into_kvm(_pic(level_triggered=True), 0, pic)
    assert pic.elcr == 0xDE
    master, slave = k.kvm_pic_state(elcr=0x20), k.kvm_pic_state(elcr=0x0C)
    assert cs.elcr_from_kvm(master, slave) == {"registers": "200c"}
    assert cs.elcr_bytes({"registers": "200c"}) == (0x20, 0x0C)


def test_ioapic_entries_are_the_82093aa_layout_and_only_level_pins_stay_asserted() -> None:
    redirection = [1 << 16] * 24
    redirection[2] = 0x22  # edge, unmasked, vector 0x22
    redirection[9] = 0x0F << 56 | 1 << 15 | 1 << 14 | 1 << 13 | 0x39  # level, remote IRR
    state = {"ioapic_id": 3, "arb_id": 3, "ioregsel": 0x14, "redirection": redirection,
             "asserted": 1 << 2 | 1 << 9}
    IOAPIC_STATE.check(state)
    io_state = k.kvm_ioapic_state()
    cs.ioapic_into_kvm(state, io_state)
    assert io_state.base_address == 0xFEC00000 and io_state.id == 3
    assert io_state.irr == 1 << 9  # KVM re-injects every irr bit: the delivered edge is out
    assert io_state.redirtbl[9] >> 56 == 0x0F and io_state.redirtbl[9] >> 14 & 1
    back = cs.ioapic_from_kvm(io_state)
    IOAPIC_STATE.check(back)
    assert back == {**state, "asserted": 1 << 9}


def test_ioapic_from_kvm_drops_delivery_status_and_reserved_bits() -> None:
    io_state = k.kvm_ioapic_state(id=0x1F)
    io_state.redirtbl[0] = 0xAB << 56 | 0xFFFFFF << 32 | 1 << 12 | 0x30
    back = cs.ioapic_from_kvm(io_state)
    IOAPIC_STATE.check(back)
    assert back["redirection"][0] == 0xAB << 56 | 0x30 and back["ioapic_id"] == 0xF


def _lapic(**fields) -> dict:
    lvt = [1 << 16] * 7
    lvt[0] = 1 << 17 | 0x20  # periodic, vector 0x20
    lvt[3] = 0x700  # LINT0 ExtINT
    state = {"apic_id": 0, "apic_base": 0xFEE00900, "tpr": 0x10, "ldr": 0x01000000,
             "dfr": 0xFFFFFFFF, "svr": 0x12F, "isr": 1 << 0x20, "tmr": 1 << 0x39,
             "irr": 1 << 0x21 | 1 << 0xFF, "esr": 0x40, "esr_pending": 0, "icr_lo": 0x40025,
             "icr_hi": 0x01000000, "lvt": lvt, "timer_initial": 100_000, "timer_divide": 0x3,
             "timer_start_ns": 1_000_000, "timer_running": True, "tsc_deadline": 0,
             "init_pending": False, "sipi_vector": None, "nmi_pending": False}
    state.update(fields)
    LAPIC_STATE.check(state)
    return state


def test_lapic_register_page_round_trip_with_the_current_count() -> None:
    state = _lapic()
    regs = k.kvm_lapic_state()
    now = 1_000_000 + 16 * 25_000  # 25,000 counts at divide-by-16 (DCR 0b0011)
    cs.lapic_into_kvm(state, now, regs)
    raw = bytes(regs.regs)

    def reg(offset: int) -> int:
        return int.from_bytes(raw[offset:offset + 4], "little")

    assert reg(0x390) == 75_000  # TMCCT: the remaining count
    assert reg(0x380) == 100_000 and reg(0x3E0) == 0x3 and reg(0x320) == 1 << 17 | 0x20
    assert reg(0x100 + 0x10 * 1) == 1  # ISR: vector 0x20 is bit 0 of the second register
    assert reg(0x200 + 0x10 * 7) == 1 << 31 and reg(0x180 + 0x10 * 1) == 1 << 25
    back = cs.lapic_from_kvm(regs, 0xFEE00900, now, 0)
    LAPIC_STATE.check(back)
    assert back == state


def test_lapic_one_shot_that_ran_out_and_a_tsc_deadline() -> None:
    regs = k.kvm_lapic_state()
    cs.lapic_into_kvm(_lapic(lvt=[0x20] + [1 << 16] * 6, timer_divide=0xB), 5_000_000, regs)
    back = cs.lapic_from_kvm(regs, 0xFEE00900, 5_000_000, 0)
    assert not back["timer_running"]  # one-shot, count 0: expired
    deadline = _lapic(lvt=[2 << 17 | 0x21] + [1 << 16] * 6, timer_running=False,
                      tsc_deadline=9_000)
    cs.lapic_into_kvm(deadline, 0, regs)
    back = cs.lapic_from_kvm(regs, 0xFEE00900, 0, 9_000)
    assert back["tsc_deadline"] == 9_000 and not back["timer_running"]


def _channel(**fields) -> dict:
    state = {"mode": 2, "rw": 3, "bcd": False, "reload": 1193, "gate": True, "armed": True,
             "running": True, "start_ns": 500, "tick_offset": 0, "null_count": False,
             "write_high": False, "write_low": 0, "read_high": True, "latch": [0x34, 0x12],
             "status_latch": 0x34, "pending_reload": None, "pending_start_ns": 0,
             "out_high": True}
    state.update(fields)
    CHANNEL_STATE.check(state)
    return state


def test_pit_channel_registers_and_latches() -> None:
    c = k.kvm_pit_channel_state()
    cs.pit_channel_into_kvm(_channel(mode=6), 0, c)
    assert (c.mode, c.rw_mode, c.count) == (2, 3, 1193)  # 6 aliases 2, as KVM stores it
    assert (c.count_latched, c.latched_count) == (cs.RW_STATE_WORD0, 0x1234)
    assert c.read_state == cs.RW_STATE_WORD1 and (c.status_latched, c.status) == (1, 0x34)
    back = cs.pit_channel_from_kvm(c, 0, 7_000, None)
    CHANNEL_STATE.check(back)
    assert back == _channel(start_ns=7_000)  # channel 0 restarts its period now
    cs.pit_channel_into_kvm(_channel(rw=1, latch=[0x56], read_high=False), 1, c)
    assert (c.count_latched, c.latched_count, c.write_state) == (cs.RW_STATE_LSB, 0x56, 1)
    assert cs.pit_channel_from_kvm(c, 1, 7_000, 2_000)["start_ns"] == 5_000


def test_pit_reload_zero_is_65536_and_a_fresh_channel_is_kvm_s_unprogrammed() -> None:
    c = k.kvm_pit_channel_state()
    cs.pit_channel_into_kvm(_channel(reload=0), 0, c)
    assert c.count == 0x10000
    assert cs.pit_channel_from_kvm(c, 0, 0, None)["reload"] == 0
    fresh = cs.pit_channel_from_kvm(k.kvm_pit_channel_state(mode=0xFF, gate=1), 0, 0, None)
    CHANNEL_STATE.check(fresh)
    cs.pit_channel_into_kvm(fresh, 0, c)
    assert c.mode == cs.KVM_PIT_UNPROGRAMMED  # kvm_pit_reset's mode: no timer


def test_port61_gate2_and_speaker_travel_in_the_pit_state() -> None:
    pit = k.kvm_pit_state2()
    channels = [_channel(), _channel(), _channel(gate=False, running=False)]
    cs.pit_into_kvm(channels, {"value": 0x03, "refresh": False}, pit)
    assert pit.channels[2].gate == 1 and pit.flags & k.KVM_PIT_FLAGS_SPEAKER_DATA_ON
    _, port61 = cs.pit_from_kvm(pit, 0, 0, {"value": 0x0C, "refresh": True})
    assert port61 == {"value": 0x0F, "refresh": True}


@requires_kvm
def test_a_board_state_goes_through_kvm_s_chips_unchanged() -> None:
    """KVM_SET_IRQCHIP/PIT2/LAPIC then KVM_GET_*: what KVM keeps comes back."""
    from pyvmm.vm import VirtualMachine

    vm = VirtualMachine(engine="kvm", irqchip="kernel", kvm_pit=True,
                        serial_output=io.BytesIO())
    try:
        board = vm.board.get_state()
        devices = board["devices"]
        devices["pic"]["master"] = _pic(isr=0, irr=0)
        devices["pic"]["slave"] = _pic(imr=0xFF, irr=0, isr=0, vector_base=0x28, icw3=0x02)
        devices["elcr"] = {"registers": "0800"}
        redirection = [1 << 16] * 24
        redirection[4] = 0x24
        redirection[9] = 1 << 15 | 1 << 16 | 0x39
        devices["ioapic"] = {"ioapic_id": 0, "arb_id": 0, "ioregsel": 0x18,
                             "redirection": redirection, "asserted": 0}
        # Nothing may fire between the load and the save (an IRR bit would differ):
        # channel 1 drives no IRQ, and the LAPIC timer counts with its LVT masked.
        devices["pit"]["channels"][1] = _channel(latch=[], status_latch=None, read_high=False)
        now = vm.board.clock.now_ns()
        lvt = [1 << 16] * 7
        lvt[0] = 1 << 17 | 1 << 16 | 0x20
        board["lapics"] = [_lapic(isr=0, irr=0, tmr=0, esr=0, timer_start_ns=now, lvt=lvt)]
        vm.engine.load_devices(board)
        saved = vm.board.get_state()
        vm.engine.save_devices(saved)
        got = saved["devices"]
        assert got["pic"] == devices["pic"] and got["elcr"] == devices["elcr"]
        assert got["ioapic"] == devices["ioapic"]
        channel = got["pit"]["channels"][1]
        assert (channel["mode"], channel["reload"], channel["rw"]) == (2, 1193, 3)
        lapic = saved["lapics"][0]
        expected = board["lapics"][0]
        assert {n: v for n, v in lapic.items() if n != "timer_start_ns"} == \
            {n: v for n, v in expected.items() if n != "timer_start_ns"}
        # KVM's count runs on host time (an hrtimer), the board clock only while the
        # vCPU runs: back as a start at most the host time since then earlier.
        assert now - 10**9 < lapic["timer_start_ns"] <= now
    finally:
        vm.close()
