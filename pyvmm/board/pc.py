"""The PC board: wires memory, buses, interrupt lines and devices together.

This is the one place that knows the PC's fixed facts: where RAM and the
holes are, which port each device answers on and which IRQ it raises.  The
board is engine-neutral; every engine runs the guest on the same board.

Physical layout (the classic PC/AT map):

    0x00000000-0x0009FFFF  conventional RAM ("ram-low")
    0x000A0000-0x000FFFFF  hole: VGA window and option/BIOS ROM (ROM when --bios)
    0x00100000-RAM end     extended RAM ("ram-high")
    4 GiB - ROM size       the BIOS ROM again (reset vector at 0xFFFFFFF0)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from pyvmm.board.gsi import InterruptWiring
from pyvmm.board.irq_routing import (
    ISA_IRQS,
    PIRQ_FLAGS,
    SOURCE_OVERRIDES,
    isa_gsi,
    pci_pirq,
    pirq_gsi,
)
from pyvmm.board.table import DeviceRow, Range
from pyvmm.board.virtio import VIRTIO_MMIO_BASE, VirtioSpec, cmdline_fragments, virtio_rows
from pyvmm.cpu.cpuid import cpuid_lookup, interpreter_cpuid_table, with_apic_status
from pyvmm.devices import hpet
from pyvmm.devices.cmos import REG_CENTURY, CmosRtc
from pyvmm.devices.debug import DebugConsole, DebugExit
from pyvmm.devices.fw_cfg import (
    FW_CFG_DMA_PORTS,
    FW_CFG_PORTS,
    MAX_CPUS,
    NB_CPUS,
    PORT_FW_CFG,
    PORT_FW_CFG_DMA,
    RAM_SIZE,
    FwCfg,
    FwCfgDma,
)
from pyvmm.devices.hpet import DEFAULT_BASE as HPET_BASE
from pyvmm.devices.hpet import MMIO_SIZE as HPET_MMIO_SIZE
from pyvmm.devices.hpet import Hpet
from pyvmm.devices.i8042 import I8042, SystemControlPortA
from pyvmm.devices.ioapic import DEFAULT_BASE as IOAPIC_BASE
from pyvmm.devices.ioapic import IOAPIC_VERSION, IoApic
from pyvmm.devices.ioapic import MMIO_SIZE as IOAPIC_MMIO_SIZE
from pyvmm.devices.ioapic import PINS as IOAPIC_PINS
from pyvmm.devices.lapic import APIC_VERSION, ApicBus, LocalApic
from pyvmm.devices.lapic import DEFAULT_BASE as LAPIC_BASE
from pyvmm.devices.lapic import MMIO_SIZE as LAPIC_MMIO_SIZE
from pyvmm.devices.pci.bus import CONFIG_PORTS, PORT_CONFIG_ADDRESS, ConfigMechanism1, PciBus
from pyvmm.devices.pci.config import INTERRUPT_PIN, PciFunction
from pyvmm.devices.pci.i440fx import PAM_SEGMENTS, I440fxHostBridge, PamMode
from pyvmm.devices.pci.piix import (
    PM_IO_SIZE,
    PORT_ELCR,
    SLP_TYP_S5,
    Elcr,
    Piix3IsaBridge,
    Piix4Pm,
    ResetControl,
)
from pyvmm.devices.pic8259 import Pic8259Pair
from pyvmm.devices.pit8254 import Pit8254, SystemControlPortB
from pyvmm.devices.uart16550 import Uart16550
from pyvmm.errors import ConfigError
from pyvmm.firmware.acpi import build_acpi, io_register
from pyvmm.firmware.description import (
    IoApicInfo,
    IsaOverride,
    PciInterrupt,
    PlatformDescription,
)
from pyvmm.firmware.loader import fw_cfg_files
from pyvmm.machine.bus import MmioBus, PortBus
from pyvmm.machine.clock import ClockSource, VirtualClock
from pyvmm.machine.events import HostEvents
from pyvmm.machine.host_timer import HostTimerService
from pyvmm.machine.interrupts import GatedLine, IrqLine, SharedLine
from pyvmm.machine.memory import GuestMemory, allocate_backing
from pyvmm.machine.stop import StopKind, StopReason
from pyvmm.paravirt.abi import HYPERCALL_PORT, IRQ_PV_EVENT, HypercallCpu
from pyvmm.paravirt.hypercall import HypercallDevice
from pyvmm.schema import U8, U32, Choice, Int, ListOf, Maybe, Object, Record, StateError, Str
from pyvmm.stats import Stats

MIB = 1 << 20
LOW_RAM_END = 0xA0000
HIGH_RAM_START = 0x100000
MIN_RAM = 2 * MIB
MAX_RAM = 3 * 1024 * MIB  # below the 32-bit PCI/ROM hole
# The part of that hole the host bridge forwards to PCI, where BARs are placed
# (by SeaBIOS, or by Linux from the DSDT's _CRS): from the top of the largest
# RAM up to the virtio-mmio windows, which sit below the I/O APIC.
PCI_MMIO_WINDOW = (MAX_RAM, VIRTIO_MMIO_BASE - 1)

# Port assignments (IBM PC/AT Technical Reference; QEMU's pc machine agrees).
PORT_PIC_MASTER = 0x20
PORT_PIT = 0x40
PORT_KBD_DATA = 0x60
PORT_SYSTEM_CONTROL_B = 0x61
PORT_KBD_COMMAND = 0x64
PORT_CMOS = 0x70
PORT_SYSTEM_CONTROL_A = 0x92
PORT_PIC_SLAVE = 0xA0
PORT_DEBUGCON = 0xE9
PORT_DEBUGCON_FIRMWARE = 0x402  # SeaBIOS's and OVMF's debug port on QEMU
PORT_DEBUG_EXIT = 0xF4
PORT_COM1 = 0x3F8

# ISA IRQ numbers.
IRQ_PIT = 0
IRQ_CASCADE = 2
IRQ_COM1 = 4
IRQ_RTC = 8
IRQ_SCI = 9  # the PIIX4 PM function's SCI (SeaBIOS and QEMU hard-wire it to 9)
VCPUS = 1  # local APICs (one per vCPU); the wiring is shaped for several

# What an access to unmapped physical memory does (see _unclaimed_access).
UNMAPPED_POLICIES = ("stop", "ignore")

# PCI slots of the chipset functions (QEMU's pc machine agrees).
PCI_SLOT_HOST_BRIDGE = (0, 0)
PCI_SLOT_ISA_BRIDGE = (1, 0)
PCI_SLOT_PM = (1, 3)
# The shadow RAM behind the i440FX PAM segments (0xC0000-0xFFFFF).
SHADOW_START = 0xC0000
SHADOW_SIZE = HIGH_RAM_START - SHADOW_START
SERCON_PORT_FILE = "etc/sercon-port"  # SeaBIOS prints its screen output on this port
# The PIIX4 PM I/O base: SeaBIOS programs PMBA to 0x600 when fw_cfg offers
# "etc/table-loader" (QEMU's value); direct kernel boot programs the same.
PM_IO_BASE = 0x600
KBD_RESET_VALUE = 0xFE  # i8042 command "pulse output port bit 0": CPU reset
# How long SeaBIOS waits after "No bootable device." before it reboots, in ms
# (QEMU's -boot reboot-timeout: -1 never, at most 65535; SeaBIOS's own default 60 s).
BOOT_FAIL_WAIT_FILE = "etc/boot-fail-wait"
REBOOT_TIMEOUT_NEVER = -1
REBOOT_TIMEOUT_MAX = 0xFFFF

E820_RAM = 1
E820_RESERVED = 2


# Snapshot shape of the board's own part; each device checks its own state.
BOARD_STATE = Record({
    "clock": Object(), "devices": Object(), "lapics": ListOf(Object(), 1, 1 << 8),
    "stop_request": Maybe(Record({
        "kind": Choice(frozenset(kind.name for kind in StopKind)), "message": Str(),
        "guest_status": Maybe(Int(0, 1 << 16)), "vector": Maybe(U8), "error_code": Maybe(U32)})),
}, optional=frozenset({"stop_request", "lapics"}))


@dataclass
class E820Entry:
    base: int
    length: int
    type: int


class _NullWriter:
    def write(self, data: bytes) -> int:
        return len(data)

    def flush(self) -> None:
        pass


class _CountingIrqLine(IrqLine):
    """A timer's source on IRQ0: counts each of its rising edges as one timer interrupt."""

    __slots__ = ("stats",)

    def __init__(self, sink: SharedLine, irq: int, stats: Stats) -> None:
        super().__init__(sink, irq)
        self.stats = stats

    def set(self, level: bool) -> None:
        if level and not self.level:
            self.stats.count("timer", "interrupts delivered")
        super().set(level)


def _fw_cfg(board: PcBoard, lines: list[IrqLine]) -> FwCfg:
    """fw_cfg with the PC's items: RAM size, CPU count, e820 map, SeaBIOS's serial port."""
    fw_cfg = FwCfg(board.memory, board.stats)
    fw_cfg.add_u64(RAM_SIZE, board.ram_size)
    fw_cfg.add_u16(NB_CPUS, 1)
    fw_cfg.add_u16(MAX_CPUS, 1)
    fw_cfg.add_file("etc/e820", b"".join(
        e.base.to_bytes(8, "little") + e.length.to_bytes(8, "little")
        + e.type.to_bytes(4, "little") for e in board.e820_map()))
    fw_cfg.add_file(SERCON_PORT_FILE, PORT_COM1.to_bytes(2, "little"))
    fw_cfg.add_file("bootorder", b"")
    if board.reboot_timeout is not None:  # QEMU's -boot reboot-timeout: 32-bit LE, -1 never
        fw_cfg.add_file(BOOT_FAIL_WAIT_FILE, (board.reboot_timeout & 0xFFFFFFFF).to_bytes(
            4, "little"))
    for name, data in fw_cfg_files(build_acpi(board.platform_description())).items():
        fw_cfg.add_file(name, data)
    return fw_cfg


def _pm(board: PcBoard, lines: list[IrqLine]) -> Piix4Pm:
    pm = Piix4Pm(board.clock, board._power_off, board.stats)
    pm.on_io_change = board._pm_io_moved
    return pm


def _isa_bridge(board: PcBoard, lines: list[IrqLine]) -> Piix3IsaBridge:
    """The PIIX3, whose PIRQRC registers steer the PCI interrupt wires."""
    bridge = Piix3IsaBridge()
    board.wiring.steering = bridge
    bridge.on_pirq_change = board.wiring.steering_changed
    return bridge


def _hpet(board: PcBoard, lines: list[IrqLine]) -> Hpet:
    hpet = Hpet(board.clock, board.irq_line, board.gsi_line, board.stats)
    hpet.on_legacy_change = board._legacy_replacement
    return hpet


def _hypercall(board: PcBoard, lines: list[IrqLine]) -> HypercallDevice:
    timer, event = lines
    return HypercallDevice(
        board.memory, board.clock, timer, event, board.serial_output, board.events,
        board.stats, cpu_access=lambda: board.cpu_access,
        switch_lookup=lambda: (getattr(board, "switch", None), getattr(board, "vm_id", 0)))


def _port(base: int, length: int, name: str,
          part: Callable[[Any], object] | None = None) -> tuple[Range, ...]:
    return (Range(base, length, name, part),)


# The PC's devices, in restore order: the PIC first, because the PIT, CMOS and
# hypercall device re-drive their IRQ lines in set_state.  Ports: IBM PC/AT
# Technical Reference; QEMU's pc machine agrees.  The i8259 pair is built by
# the board itself (every interrupt line is wired to it) and only listed here.
PC_DEVICES: tuple[DeviceRow, ...] = (
    DeviceRow("pic", "pic", lambda b, _: b.pic,
              ports=(Range(PORT_PIC_MASTER, 2, "pic-master", lambda p: p.master),
                     Range(PORT_PIC_SLAVE, 2, "pic-slave", lambda p: p.slave))),
    DeviceRow("ioapic", "ioapic", lambda b, _: b.ioapic,
              mmio=(Range(IOAPIC_BASE, IOAPIC_MMIO_SIZE, "ioapic"),)),
    # The PIT's and RTC's outputs pass through the HPET's legacy-replacement switch.
    DeviceRow("pit", "pit", lambda b, irq: Pit8254(b.clock, b._legacy_gate(*irq)),
              ports=_port(PORT_PIT, 4, "pit"), irqs=(IRQ_PIT,)),
    DeviceRow("port61", "system_control_b", lambda b, _: SystemControlPortB(b.pit),
              ports=_port(PORT_SYSTEM_CONTROL_B, 1, "port61")),
    # The MC146818 is battery-backed: its time and NVRAM outlive a reset.
    DeviceRow("cmos", "cmos", lambda b, irq: CmosRtc(b.clock, b.ram_size, b._legacy_gate(*irq)),
              ports=_port(PORT_CMOS, 2, "cmos"), irqs=(IRQ_RTC,), survive_reset=True),
    DeviceRow("com1", "uart", lambda b, irq: Uart16550(*irq, b.serial_output),
              ports=_port(PORT_COM1, 8, "com1"), irqs=(IRQ_COM1,)),
    DeviceRow("i8042", "i8042",
              lambda b, _: I8042(lambda: b.reset_requested("the keyboard controller's reset "
                                                            "line (port 0x64)")),
              ports=(Range(PORT_KBD_DATA, 1, "i8042", lambda k: k.data_port),
                     Range(PORT_KBD_COMMAND, 1, "i8042", lambda k: k.command_port))),
    DeviceRow("port92", "system_control_a",
              lambda b, _: SystemControlPortA(lambda: b.reset_requested("port 0x92 (fast "
                                                                        "reset)")),
              ports=_port(PORT_SYSTEM_CONTROL_A, 1, "port92")),
    DeviceRow("debug-exit", "debug_exit", lambda b, _: DebugExit(b._debug_exit),
              ports=_port(PORT_DEBUG_EXIT, 1, "debug-exit")),
    DeviceRow("debugcon", "debugcon", lambda b, _: DebugConsole(b.debugcon_output),
              ports=(Range(PORT_DEBUGCON, 1, "debugcon"),
                     Range(PORT_DEBUGCON_FIRMWARE, 1, "debugcon"))),
    DeviceRow("hypercall", "hypercall", _hypercall,
              ports=_port(HYPERCALL_PORT, 4, "hypercall"), irqs=(IRQ_PIT, IRQ_PV_EVENT)),
    # The PIIX3's reset control register answers the byte port 0xCF9 inside
    # the configuration mechanism's range (ConfigMechanism1 forwards it).
    DeviceRow("reset-control", "reset_control", lambda b, _: ResetControl(b._reset_control)),
    DeviceRow("pci-config", "pci_config",
              lambda b, _: ConfigMechanism1(b.pci, b.reset_control),
              ports=_port(PORT_CONFIG_ADDRESS, CONFIG_PORTS, "pci-config")),
    DeviceRow("i440fx", "host_bridge", lambda b, _: I440fxHostBridge(b._pam_changed),
              pci=PCI_SLOT_HOST_BRIDGE),
    DeviceRow("piix3", "isa_bridge", _isa_bridge, pci=PCI_SLOT_ISA_BRIDGE),
    DeviceRow("elcr", "elcr", lambda b, _: Elcr(), ports=_port(PORT_ELCR, 2, "elcr")),
    DeviceRow("piix4-pm", "pm", _pm, pci=PCI_SLOT_PM),
    DeviceRow("fw_cfg", "fw_cfg", _fw_cfg,
              ports=(Range(PORT_FW_CFG, FW_CFG_PORTS, "fw_cfg"),
                     Range(PORT_FW_CFG_DMA, FW_CFG_DMA_PORTS, "fw_cfg-dma", FwCfgDma))),
    # The HPET's I/O APIC routes drive GSIs directly; legacy replacement drives
    # ISA IRQ0 and IRQ8 and cuts the PIT and the RTC from them.
    DeviceRow("hpet", "hpet", _hpet,
              mmio=(Range(HPET_BASE, HPET_MMIO_SIZE, "hpet"),)),
)


class PcBoard:
    """One virtual PC.  Nothing here is shared with any other board."""

    DEVICES: tuple[DeviceRow, ...] = PC_DEVICES  # what this board is built from

    def __init__(self, ram_size: int = 64 * MIB, serial_output: BinaryIO | None = None,
                 debugcon_output: BinaryIO | None = None,
                 clock_source: ClockSource = ClockSource.VCPU,
                 unmapped: str = "stop", virtio: tuple[VirtioSpec, ...] = (),
                 reboot_timeout: int | None = None) -> None:
        if ram_size < MIN_RAM or ram_size > MAX_RAM:
            raise ConfigError(f"memory size must be between {MIN_RAM // MIB} MiB and "
                              f"{MAX_RAM // MIB} MiB, not {ram_size // MIB} MiB")
        if ram_size % (1 << 12):
            raise ConfigError("memory size must be a multiple of 4 KiB")
        self.stats = Stats()
        self.ram_size = ram_size
        self.memory = GuestMemory()
        self._ram = allocate_backing(ram_size)
        self.memory.add_region("ram-low", 0, LOW_RAM_END, self._ram, 0)
        self.memory.add_region("ram-high", HIGH_RAM_START, ram_size - HIGH_RAM_START,
                               self._ram, HIGH_RAM_START)
        self.ports = PortBus(self.stats)
        self.mmio = MmioBus(self.stats)
        if unmapped not in UNMAPPED_POLICIES:
            raise ConfigError(f"unmapped-access policy must be one of "
                              f"{', '.join(UNMAPPED_POLICIES)}, not {unmapped!r}")
        self.unmapped_policy = unmapped
        if reboot_timeout is not None and not REBOOT_TIMEOUT_NEVER <= reboot_timeout \
                <= REBOOT_TIMEOUT_MAX:
            raise ConfigError(f"reboot timeout must be between {REBOOT_TIMEOUT_NEVER} "
                              f"(never) and {REBOOT_TIMEOUT_MAX} ms, not {reboot_timeout}")
        self.reboot_timeout = reboot_timeout
        self.mmio.on_unclaimed = self._unclaimed_access
        # The default (VCPU) stands still until an engine runs the VM, so guest
        # time is exactly 0 at the first instruction whichever engine takes it.
        self.clock = VirtualClock(clock_source)
        self.events = HostEvents()
        self.stop_request: StopReason | None = None
        self.bios_loaded = False
        # Set by the hypervisor (docs/HYPERVISOR.md): this VM's id, the virtual
        # switch its paravirtual devices reach, and the host timer service a
        # host-clocked engine registers its wake-ups with (None: its own).
        self.vm_id: int = 0
        self.switch: object | None = None
        self.host_timer: HostTimerService | None = None

        self.serial_output = serial_output if serial_output is not None else _NullWriter()
        self.debugcon_output = debugcon_output if debugcon_output is not None else _NullWriter()
        # Para-virtual devices (docs/PARAVIRT.md).  The engine sets `cpu_access`
        # (the calling vCPU's registers); a hypervisor sets `vm_id` and `switch`.
        self.cpu_access: HypercallCpu | None = None

        # Interrupts (docs/ARCHITECTURE.md "Interrupts"): the i8259 pair and the
        # I/O APIC take the wires; one local APIC per vCPU takes the APIC bus and
        # asks the i8259 pair through ExtINT (LINT0 in virtual-wire mode).
        self.pic = Pic8259Pair()
        self.apic_bus = ApicBus()
        self.ioapic = IoApic(self.apic_bus, self.stats)
        self.wiring = InterruptWiring(self.pic, self.ioapic)
        self.msi_target: Callable[[int, int], bool] = self.apic_bus.deliver_msi
        self.irqs = self.wiring.isa
        self.lapics = [LocalApic(self.clock, self.apic_bus, apic_id=cpu, bsp=cpu == 0,
                                 extint=self.pic, stats=self.stats) for cpu in range(VCPUS)]
        for lapic in self.lapics:
            lapic.on_base_change = lambda base, lapic=lapic: self._lapic_moved(lapic, base)
        self._lapic_mapped: dict[int, int] = {}  # id(lapic) -> base its page is decoded at
        self._shadow = allocate_backing(SHADOW_SIZE)
        self._bios_low_backing = None
        self.pci = PciBus(self.stats)
        self._legacy_gates: list[GatedLine] = []  # the PIT's and RTC's outputs
        self.virtio_specs = tuple(virtio)
        self._build_devices(self.DEVICES + virtio_rows(self.virtio_specs))
        for lapic in self.lapics[:1]:  # one MMIO page: vCPU 0's (one vCPU today)
            self._lapic_moved(lapic, lapic.base if lapic.enabled else None)
        self.events.register_input("serial", self.uart.enqueue_input)
        self.reset_hard = True  # what the pending RESET stop asks for (reset_requested)
        self._power_on = self._power_on_states()

    # -- wiring -------------------------------------------------------------
    def _build_devices(self, rows: tuple[DeviceRow, ...]) -> None:
        """Build and wire every device of `rows` (see pyvmm/board/table.py)."""
        self.devices: dict[str, object] = {}
        self.device_rows = rows
        self.part_of: dict[int, str] = {}  # id(part answering a range) -> its row's name
        for row in rows:
            device = row.build(self, [self.irq_line(irq) for irq in row.irqs])
            setattr(self, row.attr, device)
            self.devices[row.name] = device
            for bus, ranges in ((self.ports, row.ports), (self.mmio, row.mmio)):
                for r in ranges:
                    target = device if r.part is None else r.part(device)
                    self.part_of[id(target)] = row.name
                    bus.register(r.base, r.length, target, r.name)
            if row.pci is not None:
                self.pci.add(*row.pci, device)
                device.on_bar_change = self._bar_moved

    def _pam_changed(self, base: int, size: int, mode: PamMode) -> None:
        """Map one PAM segment (82441FX §3.2.14): shadow RAM, read-only shadow RAM,
        or what the PCI side has there (the BIOS ROM alias, else a hole).
        Write-only shadowing (reads from ROM, writes to RAM) cannot be one region;
        it is mapped like "disabled" and counted."""
        for name in (f"shadow-{base:05x}", f"bios-low-{base:05x}"):
            if any(r.name == name for r in self.memory.regions):
                self.memory.remove_region(name)
        if mode in (PamMode.READ_ONLY, PamMode.READ_WRITE):
            self.memory.add_region(f"shadow-{base:05x}", base, size, self._shadow,
                                   base - SHADOW_START, readonly=mode is PamMode.READ_ONLY)
            return
        if mode is PamMode.WRITE_ONLY:
            self.stats.count("pci", "PAM write-only mapped as ROM")
        self._map_rom_segment(base, size)

    def _map_rom_segment(self, base: int, size: int) -> None:
        if self._bios_low_backing is None:
            return
        backing, low = self._bios_low_backing
        start = max(base, HIGH_RAM_START - low)  # a ROM under 128 KiB covers part of one
        if start < base + size:
            self.memory.add_region(f"bios-low-{base:05x}", start, base + size - start, backing,
                                   len(backing) - (HIGH_RAM_START - start), readonly=True)

    def _pm_io_moved(self, old: int | None, new: int | None) -> None:
        if old is not None:
            self.ports.unregister(old, self.pm.registers)
        if new is not None:
            self._claim_ports(new, PM_IO_SIZE, self.pm.registers, "acpi-pm")

    def _bar_moved(self, function: PciFunction, index: int, old: int | None,
                   new: int | None) -> None:
        """Move BAR `index` of `function`; a BAR programmed over RAM or another
        device is left undecoded and counted (the guest's mistake, not a crash)."""
        bar = function.bars[index]
        bus = self.ports if bar.io else self.mmio
        name = f"{function.name}-bar{index}"
        if old is not None:
            bus.unregister(old, function)
        if new is None:
            return
        if not bar.io and any(r.gpa < new + bar.size and new < r.end
                              for r in self.memory.regions):
            self.stats.count("pci", "BAR over RAM refused")
            return
        self._claim_ports(new, bar.size, function, name, bus)

    def _claim_ports(self, base: int, length: int, device: object, name: str,
                     bus: PortBus | MmioBus | None = None) -> None:
        bus = self.ports if bus is None else bus
        try:
            bus.register(base, length, device, name)
        except ValueError:
            self.stats.count("pci", "range over another device refused")

    def _power_off(self) -> None:
        self.request_stop(StopReason(StopKind.POWER_OFF, "the guest entered S5 through "
                                     "the PIIX4 PM1 control register"))

    def irq_line(self, irq: int) -> IrqLine:
        """A new source on ISA IRQ `irq`; the IRQ's level is the OR of its sources.
        IRQ0's sources (the PIT, the PV timer) count their rising edges as timer
        interrupts in `--stats`."""
        if irq == IRQ_PIT:
            return self.wiring.isa_line(irq, _CountingIrqLine, self.stats)
        return self.wiring.isa_line(irq)

    def deliver_msi(self, address: int, data: int) -> None:
        """A PCI function's message-signalled interrupt: a DWORD write of `data` at
        `address` (PCI 3.0 §6.8).  An address in the local APICs' 0xFEExxxxx
        window is an interrupt message (lapic.ApicBus.deliver_msi); one elsewhere
        is not modelled as a memory write: dropped and counted.  An engine whose
        local APICs live elsewhere (KVM's in-kernel irqchip) replaces
        `msi_target` with its own delivery, as InterruptWiring.retarget does
        for the wires."""
        if not self.msi_target(address, data):
            self.stats.count("pci", "MSI not accepted by any local APIC")

    def _legacy_gate(self, line: IrqLine) -> GatedLine:
        """`line` behind the switch the HPET's legacy replacement opens."""
        gate = GatedLine(line)
        self._legacy_gates.append(gate)
        return gate

    def _legacy_replacement(self, active: bool) -> None:
        """LEG_RT_CNF changed: cut (or reconnect) the PIT's and RTC's outputs."""
        for gate in self._legacy_gates:
            gate.connect(not active)
        self.stats.count("hpet", "legacy replacement on" if active else
                         "legacy replacement off")

    def gsi_line(self, gsi: int) -> IrqLine:
        """A new source wired to I/O APIC pin `gsi` only (the HPET's routes)."""
        return self.wiring.gsi_line(gsi)

    @property
    def interrupt_controller(self) -> LocalApic:
        """vCPU 0's local APIC; it asks the i8259 pair for ExtINT interrupts."""
        return self.lapics[0]

    def _lapic_moved(self, lapic: LocalApic, base: int | None) -> None:
        """IA32_APIC_BASE moved the APIC page, or disabled it (then it is not decoded).
        A page over RAM or another device is left undecoded and counted."""
        old = self._lapic_mapped.pop(id(lapic), None)
        if old is not None:
            self.mmio.unregister(old, lapic)
        if base is None:
            return
        if any(r.gpa < base + LAPIC_MMIO_SIZE and base < r.end for r in self.memory.regions):
            self.stats.count("lapic", "base over RAM refused")
            return
        try:
            self.mmio.register(base, LAPIC_MMIO_SIZE, lapic, "lapic")
        except ValueError:
            self.stats.count("lapic", "base over another device refused")
            return
        self._lapic_mapped[id(lapic)] = base

    def request_stop(self, reason: StopReason) -> None:
        """Ask the engine to stop the VM after the current instruction/exit."""
        if self.stop_request is None:
            self.stop_request = reason

    def _unclaimed_access(self, address: int, size: int, is_write: bool) -> None:
        """Physical memory that is neither RAM, ROM nor a device.

        The legacy hole below 1 MiB (VGA window, option-ROM space) reads as
        open bus, as on a real PC, because firmware and kernels probe it.
        Anywhere else it is almost always a guest bug, so by default the VM
        stops and says where ("--unmapped ignore" gives open-bus reads instead).
        """
        if self.unmapped_policy == "ignore" or LOW_RAM_END <= address < HIGH_RAM_START:
            return
        verb = "write to" if is_write else "read of"
        self.request_stop(StopReason(
            StopKind.UNMAPPED_ACCESS,
            f"{size}-byte {verb} physical address {address:#x}, outside RAM "
            f"({self.ram_size // MIB} MiB) and every device"))

    def _debug_exit(self, value: int) -> None:
        self.request_stop(StopReason(StopKind.DEBUG_EXIT, "", (value << 1) | 1))

    # -- reset --------------------------------------------------------------
    def reset_requested(self, source: str, hard: bool = True) -> None:
        """A reset line was asserted: the engine stops with RESET and the VM decides
        (pyvmm/vm.py) whether the machine restarts.  `hard`: CPU and devices; else
        the CPU's INIT alone (SDM Vol. 3A §9.1, Table 9-1)."""
        self.reset_hard = hard
        what = "hard reset" if hard else "soft reset (INIT)"
        self.request_stop(StopReason(StopKind.RESET, f"{what} through {source}"))

    def _reset_control(self, hard: bool) -> None:
        self.reset_requested("the PIIX3 reset control register (port 0xCF9)", hard)

    def _power_on_states(self) -> dict[str, object]:
        """The state of every device as built, and of each local APIC: a reset's target."""
        states: dict[str, object] = {row.name: self.devices[row.name].get_state()
                                     for row in self.device_rows if not row.survive_reset}
        states["lapics"] = [lapic.get_state() for lapic in self.lapics]
        return states

    def reset(self) -> None:
        """A hard reset: every device back to the state it was built in (the PAM
        registers too, so the ROM is decoded below 1 MiB again), the local APICs
        to their reset state (SDM Vol. 3A §11.4.7.1), the pending stop cleared.
        RAM keeps its contents and guest time runs on, as on a PC; the RTC and
        its NVRAM survive (battery-backed)."""
        for lapic, state in zip(self.lapics, self._power_on["lapics"], strict=True):
            lapic.set_state(state)
        for row in self.device_rows:
            if not row.survive_reset:
                self.devices[row.name].set_state(self._power_on[row.name])
        self.stop_request = None
        self.reset_hard = True
        self.stats.count("reset", "hard resets")

    def init_cpu(self) -> None:
        """A soft reset: the CPU's INIT only; every device keeps its state."""
        self.stop_request = None
        self.reset_hard = True
        self.stats.count("reset", "soft resets (INIT)")

    # -- firmware -----------------------------------------------------------
    def map_bios(self, image: bytes) -> None:
        """Map a BIOS ROM at the top of 4 GiB and its last 128 KiB below 1 MiB."""
        size = len(image)
        backing = allocate_backing(size)
        backing[:] = image
        self.memory.add_region("bios", (1 << 32) - size, size, backing, 0, readonly=True)
        low = min(size, 128 * 1024)
        self._bios_low_backing = (backing, low)
        # The alias below 1 MiB is one region per PAM segment, so that the
        # host bridge can shadow each separately.
        for _, _, base, length in PAM_SEGMENTS:
            if self.host_bridge.pam_mode(base) in (PamMode.DISABLED, PamMode.WRITE_ONLY):
                self._map_rom_segment(base, length)
        self.bios_loaded = True

    def e820_map(self) -> list[E820Entry]:
        """The memory map a loader reports to the guest (ACPI spec §15, INT 15h E820h)."""
        return [
            E820Entry(0, LOW_RAM_END, E820_RAM),
            E820Entry(0xF0000, 0x10000, E820_RESERVED),
            E820Entry(HIGH_RAM_START, self.ram_size - HIGH_RAM_START, E820_RAM),
        ]

    def platform_description(self) -> PlatformDescription:
        """The facts the firmware tables (ACPI, MP) state about this board; the
        interrupt routing comes from pyvmm/board/irq_routing.py."""
        cpu_signature, _, _, cpu_features = with_apic_status(
            1, cpuid_lookup(interpreter_cpuid_table(), 1), True)  # the APIC as at reset
        overrides = tuple(IsaOverride(o.isa_irq, o.gsi, o.flags) for o in SOURCE_OVERRIDES)
        return PlatformDescription(
            apic_ids=tuple(a.s.apic_id for a in self.lapics), cpu_signature=cpu_signature,
            cpu_features=cpu_features, lapic_address=LAPIC_BASE,
            lapic_version=APIC_VERSION & 0xFF,
            ioapics=(IoApicInfo(0, IOAPIC_BASE, 0, IOAPIC_PINS, IOAPIC_VERSION & 0xFF),),
            isa_irqs=tuple(irq for irq in range(ISA_IRQS) if isa_gsi(irq) is not None),
            overrides=overrides, pm_base=PM_IO_BASE, sci_irq=IRQ_SCI,
            s5_sleep_type=SLP_TYP_S5, reset=io_register(PORT_KBD_COMMAND, 1),
            reset_value=KBD_RESET_VALUE, century_cmos_index=REG_CENTURY, has_i8042=True,
            hpet_address=hpet.DEFAULT_BASE, hpet_block_id=hpet.CAPABILITIES & 0xFFFFFFFF,
            hpet_min_tick=hpet.MIN_PERIODIC_TICKS, pci_interrupts=self._pci_interrupts(),
            pci_config_ports=(PORT_CONFIG_ADDRESS, CONFIG_PORTS),
            pci_mmio_window=PCI_MMIO_WINDOW)

    def _pci_interrupts(self) -> tuple[PciInterrupt, ...]:
        """Each (device, INTx pin) of the table's PCI functions, and the GSI its PIRQ
        drives (irq_routing: the PIIX3 swizzle, PIRQ A-D -> GSI 16-19)."""
        found: dict[tuple[int, int], PciInterrupt] = {}
        # Rows not built yet are skipped: fw_cfg builds its ACPI tables (which
        # state no PCI interrupts) while the device table is still being built.
        for row in self.device_rows:
            function = self.devices.get(row.name)
            if row.pci is None or function is None:
                continue
            pin = function.config[INTERRUPT_PIN]
            if pin:
                slot = row.pci[0]
                found.setdefault((slot, pin - 1), PciInterrupt(
                    slot, pin - 1, pirq_gsi(pci_pirq(slot, pin - 1)), PIRQ_FLAGS))
        return tuple(found[key] for key in sorted(found))

    # -- snapshot -----------------------------------------------------------
    def snapshot_devices(self) -> list[tuple[str, object]]:
        """(name, device) of the saved rows of the device table, in its order,
        which is the restore order (PC_DEVICES says why the PIC comes first)."""
        return [(row.name, self.devices[row.name]) for row in self.device_rows if row.saved]

    def get_state(self) -> dict:
        """Clock, every device and a pending stop: all of the board but RAM."""
        stop = self.stop_request
        return {
            "clock": self.clock.get_state(),
            "devices": {name: device.get_state() for name, device in self.snapshot_devices()},
            "lapics": [lapic.get_state() for lapic in self.lapics],
            "stop_request": None if stop is None else {
                "kind": stop.kind.name, "message": stop.message,
                "guest_status": stop.guest_status, "vector": stop.vector,
                "error_code": stop.error_code},
        }

    def restore_layout(self, state: dict) -> None:
        """Before memory is restored: the i440FX PAM registers, which decide which
        segments of 0xC0000-0xFFFFF are shadow RAM regions (set_state applies
        them again, unchanged).  A shadow segment that was not mapped when the
        snapshot was taken is not saved."""
        devices = state.get("devices") if isinstance(state, dict) else None
        if not isinstance(devices, dict) or "i440fx" not in devices:
            raise StateError("devices.i440fx", "missing")
        try:
            self.host_bridge.set_state(devices["i440fx"])
        except StateError as error:
            raise error.within("devices.i440fx") from None

    def set_state(self, state: dict) -> None:
        """The clock first (devices re-arm timers at absolute guest times), then
        the devices in `snapshot_devices` order."""
        BOARD_STATE.check(state)
        try:
            self.clock.set_state(state["clock"])
        except StateError as error:
            raise error.within("clock") from None
        lapics = state.get("lapics")  # absent from snapshots older than the LAPIC
        if lapics is not None:
            if len(lapics) != len(self.lapics):
                raise StateError("lapics", f"{len(lapics)} entries, not {len(self.lapics)}")
            for index, (lapic, saved) in enumerate(zip(self.lapics, lapics, strict=True)):
                try:
                    lapic.set_state(saved)
                except StateError as error:
                    raise error.within(f"lapics.{index}") from None
        devices = state["devices"]
        for name, device in self.snapshot_devices():
            if name not in devices:
                raise StateError(f"devices.{name}", "missing")
            try:
                device.set_state(devices[name])
            except StateError as error:
                raise error.within(f"devices.{name}") from None
        stop = state.get("stop_request")
        self.stop_request = None if stop is None else StopReason(
            StopKind[stop["kind"]], stop["message"], stop["guest_status"], stop["vector"],
            stop["error_code"])

    def serial_input(self, data: bytes) -> None:
        """Thread-safe: bytes typed at the host terminal for COM1."""
        self.events.post_input("serial", data)

    def _disks(self) -> list:  # noqa: ANN202 - RawImage
        return [image for index in range(len(self.virtio_specs))
                if (image := getattr(self.devices[f"virtio{index}"].device, "image", None))
                is not None]

    def virtio_transports(self) -> list[tuple[str, object]]:
        """(row name, transport) of every virtio device (VirtioPci or VirtioMmio)."""
        return [(name, self.devices[name]) for name in
                (f"virtio{index}" for index in range(len(self.virtio_specs)))]

    def flush_disks(self) -> None:
        """fsync every virtio-blk image (before a snapshot)."""
        for image in self._disks():
            image.flush()

    def virtio_cmdline(self) -> str:
        """The `virtio_mmio.device=` options a Linux kernel needs for this board."""
        return " ".join(cmdline_fragments(self.virtio_specs))

    def close(self) -> None:
        for image in self._disks():
            image.close()
        self.memory.close()
