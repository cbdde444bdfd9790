"""The PIIX3 ISA bridge and the PIIX4 power-management function.

PIIX3 (Intel 82371SB datasheet, order 290550): device 1 function 0,
8086:7000, a multi-function device.  PIRQRC[A:D] at 0x60-0x63 (§2.2.x
"PIRQRC") route the four PCI interrupt lines to ISA IRQs: bit 7 set means
"not routed", bits 3:0 the IRQ (0-2, 8 and 13 reserved); reset value 0x80.
The edge/level control registers ELCR1/ELCR2 at ports 0x4D0/0x4D1 (§4.x;
the 8259's ELCR) have reserved bits that read 0: IRQ 0, 1, 2, 8 and 13 are
always edge-triggered.  The reset control register ("RC - Reset Control
Register", I/O address 0CF9h, default 00h): bit 1 SRST selects a hard reset
(1: CPU and system reset) or a soft one (0: the CPU's INIT); bit 2 RCPU going
from 0 to 1 starts that reset.  Bits 7:3 and 0 are reserved.

PIIX4 PM (Intel 82371AB datasheet, order 290562, §3.4 "Power management
configuration", §7 "Power management registers"): device 1 function 3,
8086:7113.  PMBA (config 0x40, I/O, 64 bytes, bit 0 reads 1) is decoded
while PMREGMISC (config 0x80) bit 0 is set.  Registers at PMBA:

    +0x00 PMSTS  (16) status, write 1 to clear
    +0x02 PMEN   (16) enables
    +0x04 PMCNTRL(16) SCI_EN bit 0, SUS_TYP bits 12:10, SUS_EN bit 13 (write-only)
    +0x08 PMTMR  (32) 24-bit free-running counter at 3.579545 MHz (§7.1.7)

Writing SUS_EN with SUS_TYP 000b (soft off: the ACPI S5 state) powers the
machine off.  SMM is not modelled: DEVACTB (0x58) bit 25, "APMC enable",
reads as set from reset so firmware (SeaBIOS's smm.c) sees SMM as already
initialised, as QEMU does for a VM without SMM.
"""

from __future__ import annotations

from collections.abc import Callable

from pyvmm.devices.pci.config import CONFIG_SIZE, PciFunction
from pyvmm.machine.clock import VirtualClock
from pyvmm.schema import U8, U16, HexBytes, Record
from pyvmm.stats import Stats

VENDOR_INTEL = 0x8086
DEVICE_PIIX3_ISA = 0x7000
DEVICE_PIIX4_PM = 0x7113
CLASS_ISA_BRIDGE = 0x060100
CLASS_BRIDGE_OTHER = 0x068000

PIRQRC = 0x60
PIRQ_COUNT = 4
PIRQ_DISABLED = 0x80
PIRQ_RESERVED_IRQS = frozenset({0, 1, 2, 8, 13})

PORT_ELCR = 0x4D0
ELCR_MASKS = (0xF8, 0xDE)  # IRQ 0-2 / IRQ 8 and 13 are edge only

PMBA = 0x40
PMREGMISC = 0x80
PM_IO_ENABLE = 0x01
PM_IO_SIZE = 64
DEVACTB = 0x58
DEVACTB_APMC_EN_BYTE = 0x5B  # bit 25 of DEVACTB = bit 1 of byte 0x5B
SMBBA = 0x90
SMBHSTCFG = 0xD2

PM1_STATUS = 0x00
PM1_ENABLE = 0x02
PM1_CONTROL = 0x04
PM_TIMER = 0x08
PM1_CONTROL_SCI_EN = 1 << 0
PM1_CONTROL_SLP_TYP_SHIFT = 10
PM1_CONTROL_SLP_EN = 1 << 13
SLP_TYP_S5 = 0  # PIIX4 SUS_TYP 000b: soft off (the value the DSDT's \_S5 gives)
PM_TIMER_HZ = 3_579_545
PM_TIMER_BITS = 24

PORT_RESET_CONTROL = 0xCF9
RC_SRST = 1 << 1  # system reset: hard (1) or soft (0, INIT)
RC_RCPU = 1 << 2  # reset CPU: 0 -> 1 starts the reset SRST selects
RC_WRITABLE = RC_SRST | RC_RCPU

ELCR_STATE = Record({"registers": HexBytes(2)})
RESET_CONTROL_STATE = Record({"value": U8})
PM_REGISTERS_STATE = Record({"status": U16, "enable": U16, "control": U16})
PM_STATE = Record({"config": HexBytes(CONFIG_SIZE), "registers": PM_REGISTERS_STATE})


class Piix3IsaBridge(PciFunction):
    name = "piix3"

    def __init__(self) -> None:
        super().__init__(VENDOR_INTEL, DEVICE_PIIX3_ISA, CLASS_ISA_BRIDGE, multifunction=True)
        self.config[PIRQRC:PIRQRC + PIRQ_COUNT] = bytes([PIRQ_DISABLED] * PIRQ_COUNT)
        self.make_writable(PIRQRC, PIRQ_COUNT, 0x8F8F8F8F)
        # Called after PIRQRC[A:D] may have changed (a config write or a restore),
        # so that the board re-steers the PCI interrupt lines to the new IRQs.
        self.on_pirq_change: Callable[[], None] | None = None

    def config_written(self, offset: int, size: int) -> None:
        if offset < PIRQRC + PIRQ_COUNT and offset + size > PIRQRC and self.on_pirq_change:
            self.on_pirq_change()

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        if self.on_pirq_change is not None:
            self.on_pirq_change()

    def pirq_route(self, pirq: int) -> int | None:
        """The ISA IRQ PCI interrupt line PIRQ[A+pirq] drives, or None."""
        value = self.config[PIRQRC + pirq]
        irq = value & 0x0F
        if value & PIRQ_DISABLED or irq in PIRQ_RESERVED_IRQS:
            return None
        return irq


class ResetControl:
    """Port 0xCF9, the PIIX3's RC register: `on_reset(hard)` when RCPU goes 0 -> 1.

    A byte-wide register (a wider access uses its low byte).  It reads back
    SRST and RCPU as written; a reset returns it to 00h (its default).
    """

    def __init__(self, on_reset: Callable[[bool], None]) -> None:
        self.on_reset = on_reset
        self.value = 0

    def io_read(self, offset: int, size: int) -> int:
        return self.value

    def io_write(self, offset: int, size: int, value: int) -> None:
        old, self.value = self.value, value & RC_WRITABLE
        if self.value & RC_RCPU and not old & RC_RCPU:
            self.value = 0  # the reset returns RC to its default
            self.on_reset(bool(value & RC_SRST))

    def get_state(self) -> dict:
        return {"value": self.value}

    def set_state(self, state: dict) -> None:
        RESET_CONTROL_STATE.check(state)
        self.value = state["value"] & RC_WRITABLE


class Elcr:
    """Ports 0x4D0/0x4D1: one bit per IRQ, 1 = level-triggered."""

    def __init__(self) -> None:
        self.registers = bytearray(2)

    def io_read(self, offset: int, size: int) -> int:
        return int.from_bytes(self.registers[offset:offset + size], "little")

    def io_write(self, offset: int, size: int, value: int) -> None:
        for i in range(min(size, 2 - offset)):
            self.registers[offset + i] = (value >> (8 * i)) & ELCR_MASKS[offset + i]

    def level_triggered(self, irq: int) -> bool:
        return bool(self.registers[irq >> 3] >> (irq & 7) & 1)

    def get_state(self) -> dict:
        return {"registers": self.registers.hex()}

    def set_state(self, state: dict) -> None:
        ELCR_STATE.check(state)
        saved = bytes.fromhex(state["registers"])
        self.registers[:] = bytes(b & m for b, m in zip(saved, ELCR_MASKS, strict=True))


class PmRegisters:
    """The I/O block at PMBA (see the module docstring)."""

    def __init__(self, clock: VirtualClock, on_power_off: Callable[[], None],
                 stats: Stats) -> None:
        self.clock = clock
        self.on_power_off = on_power_off
        self.stats = stats
        self.status = 0
        self.enable = 0
        self.control = 0

    def timer(self) -> int:
        """PMTMR: guest time on the board's clock at 3.579545 MHz, 24 bits."""
        return (self.clock.now_ns() * PM_TIMER_HZ // 1_000_000_000) & ((1 << PM_TIMER_BITS) - 1)

    def _read_dword(self, register: int) -> int:
        if register == PM1_STATUS:
            return self.status | (self.enable << 16)
        if register == PM1_CONTROL:
            return self.control & ~PM1_CONTROL_SLP_EN
        if register == PM_TIMER:
            return self.timer()
        return 0

    def io_read(self, offset: int, size: int) -> int:
        register = offset & ~3
        value = self._read_dword(register) | (self._read_dword(register + 4) << 32)
        return (value >> (8 * (offset - register))) & ((1 << (8 * size)) - 1)

    def io_write(self, offset: int, size: int, value: int) -> None:
        for i in range(size):
            self._write_byte(offset + i, (value >> (8 * i)) & 0xFF)
        if offset <= PM1_CONTROL + 1 and offset + size > PM1_CONTROL:
            self._control_written()

    def _write_byte(self, offset: int, byte: int) -> None:
        if offset in (PM1_STATUS, PM1_STATUS + 1):
            self.status &= ~(byte << (8 * (offset - PM1_STATUS)))
        elif offset in (PM1_ENABLE, PM1_ENABLE + 1):
            shift = 8 * (offset - PM1_ENABLE)
            self.enable = (self.enable & ~(0xFF << shift)) | (byte << shift)
        elif offset in (PM1_CONTROL, PM1_CONTROL + 1):
            shift = 8 * (offset - PM1_CONTROL)
            self.control = (self.control & ~(0xFF << shift)) | (byte << shift)

    def _control_written(self) -> None:
        if self.control & PM1_CONTROL_SLP_EN:
            self.control &= ~PM1_CONTROL_SLP_EN
            sleep_type = (self.control >> PM1_CONTROL_SLP_TYP_SHIFT) & 7
            if sleep_type == SLP_TYP_S5:
                self.on_power_off()
            else:
                self.stats.count("pm", f"sleep type {sleep_type} ignored")

    def get_state(self) -> dict:
        return {"status": self.status, "enable": self.enable, "control": self.control}

    def set_state(self, state: dict) -> None:
        PM_REGISTERS_STATE.check(state)
        self.status, self.enable, self.control = state["status"], state["enable"], \
            state["control"]


class Piix4Pm(PciFunction):
    """The PM function: configuration registers; `registers` is its I/O block.

    `on_io_change(old_base, new_base)` moves the block on the port bus.
    """

    name = "piix4-pm"

    def __init__(self, clock: VirtualClock, on_power_off: Callable[[], None],
                 stats: Stats) -> None:
        super().__init__(VENDOR_INTEL, DEVICE_PIIX4_PM, CLASS_BRIDGE_OTHER, revision=0x03,
                         interrupt_pin=1)
        self.registers = PmRegisters(clock, on_power_off, stats)
        self.on_io_change: Callable[[int | None, int | None], None] | None = None
        self._decoded: int | None = None
        self._set(PMBA, 4, 1)
        self.make_writable(PMBA, 4, 0x0000FFC0)
        self.make_writable(PMREGMISC, 1, PM_IO_ENABLE)
        self.config[DEVACTB_APMC_EN_BYTE] = 0x02
        self.make_writable(DEVACTB, 4, 0xFDFFFFFF)
        self._set(SMBBA, 4, 1)
        self.make_writable(SMBBA, 4, 0x0000FFF0)
        self.make_writable(SMBHSTCFG, 1, 0x0F)

    def pm_base(self) -> int | None:
        if not self.config[PMREGMISC] & PM_IO_ENABLE:
            return None
        base = self._get(PMBA, 4) & 0xFFC0
        return base or None

    def config_written(self, offset: int, size: int) -> None:
        new = self.pm_base()
        if new != self._decoded:
            old, self._decoded = self._decoded, new
            if self.on_io_change is not None:
                self.on_io_change(old, new)

    def get_state(self) -> dict:
        return {"config": self.config.hex(), "registers": self.registers.get_state()}

    def set_state(self, state: dict) -> None:
        PM_STATE.check(state)
        self.restore_config(bytes.fromhex(state["config"]))
        self.registers.set_state(state["registers"])
        self.config_written(0, 0)
