"""`--irqchip kernel`: KVM's in-kernel i8259 pair, I/O APIC and local APIC (and PIT).

KVM_CREATE_IRQCHIP puts the PIC pair, the I/O APIC and one local APIC per
vCPU in the host kernel, and with `--kvm-pit` KVM_CREATE_PIT2 the 8254 (KVM
API, Documentation/virt/kvm/api.rst).  Their port and MMIO accesses, EOIs,
HLT and interrupt delivery never leave the kernel; the Python devices that
remain (the board's PIT without --kvm-pit, the UART, the RTC, the HPET,
virtio, ...) raise their lines with KVM_IRQ_LINE.

The board's wires keep their shape (pyvmm/board/gsi.py): each i8259 input
and each I/O APIC pin becomes one KVM GSI of its own, so a wire that reaches
both controllers on the board reaches both here, and a PIRQ steered to an
i8259 input, or an HPET route to an I/O APIC pin, reaches only that one:

    KVM GSI 48 + n -> i8259 input n         (PIC_INPUT_GSI)
    KVM GSI 24 + p -> I/O APIC pin p        (IOAPIC_PIN_GSI)
    KVM GSI 0      -> i8259 input 0 and the I/O APIC pin of ISA IRQ 0 (pin 2):
                      the in-kernel PIT's output, as QEMU routes it (--kvm-pit).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from pyvmm.cpu.state import MSR_IA32_APIC_BASE
from pyvmm.devices.lapic import MSR_IA32_TSC_DEADLINE
from pyvmm.engines.kvm import chipstate as cs
from pyvmm.engines.kvm import ioctls as k
from pyvmm.engines.kvm.state import msrs_struct
from pyvmm.engines.kvm.tsc import BOARD_KHZ, convert


class Wiring(Protocol):
    """What this module needs of the board's wiring (pyvmm/board/gsi.py)."""

    pic_inputs: list
    gsi_inputs: list

    def isa_pin(self, irq: int) -> int | None: ...


IOAPIC_PIN_GSI = 24
PIC_INPUT_GSI = 48
PIT_GSI = 0  # what KVM's PIT raises


def _pic_chip(irq: int) -> tuple[int, int]:
    return (k.KVM_IRQCHIP_PIC_MASTER, irq) if irq < 8 else (k.KVM_IRQCHIP_PIC_SLAVE, irq - 8)


def routes(wiring: Wiring, kvm_pit: bool) -> list[tuple[int, int, int]]:
    """(KVM GSI, chip, pin) for every route (KVM_SET_GSI_ROUTING); `kvm_pit`: with
    the in-kernel PIT's GSI 0."""
    table = [(PIC_INPUT_GSI + irq, *_pic_chip(irq)) for irq in range(len(wiring.pic_inputs))]
    table += [(IOAPIC_PIN_GSI + pin, k.KVM_IRQCHIP_IOAPIC, pin)
              for pin in range(len(wiring.gsi_inputs))]
    if not kvm_pit:
        return table
    table.append((PIT_GSI, *_pic_chip(0)))
    pit_pin = wiring.isa_pin(0)
    if pit_pin is not None:
        table.append((PIT_GSI, k.KVM_IRQCHIP_IOAPIC, pit_pin))
    return table


class KvmLine:
    """An IrqSink: input `n` raises KVM GSI `base + n` (KVM_IRQ_LINE)."""

    def __init__(self, vm_fd: int, base: int) -> None:
        self.vm_fd = vm_fd
        self.base = base

    def set_irq(self, irq: int, level: bool) -> None:
        k.ioctl(self.vm_fd, k.KVM_IRQ_LINE, k.kvm_irq_level(self.base + irq, int(level)),
                "KVM_IRQ_LINE")


MSI_WINDOW = 0xFEE  # address bits 31:20 of an interrupt message (SDM Vol. 3A, "MSI")


class KvmMsi:
    """The board's `msi_target` while KVM's local APICs serve the vCPUs: a PCI
    function's message goes to them with KVM_SIGNAL_MSI (KVM API).  True when it
    was an interrupt message KVM delivered, as lapic.ApicBus.deliver_msi answers."""

    def __init__(self, vm_fd: int) -> None:
        self.vm_fd = vm_fd

    def __call__(self, address: int, data: int) -> bool:
        if (address >> 20) & 0xFFF != MSI_WINDOW:
            return False
        msi = k.kvm_msi(address_lo=address & 0xFFFFFFFF, address_hi=address >> 32,
                        data=data & 0xFFFFFFFF)
        return k.ioctl(self.vm_fd, k.KVM_SIGNAL_MSI, msi, "KVM_SIGNAL_MSI") > 0


def create(vm_fd: int, wiring: Wiring, kvm_pit: bool) -> tuple[KvmLine, KvmLine]:
    """The in-kernel chips (`kvm_pit`: KVM's PIT too) and routes; (sink for i8259
    inputs, sink for I/O APIC pins).  Must come before the first KVM_CREATE_VCPU (its
    local APIC is made with it)."""
    k.ioctl(vm_fd, k.KVM_CREATE_IRQCHIP, None, "KVM_CREATE_IRQCHIP")
    if kvm_pit:
        k.ioctl(vm_fd, k.KVM_CREATE_PIT2, k.kvm_pit_config(flags=k.KVM_PIT_SPEAKER_DUMMY),
                "KVM_CREATE_PIT2")
    table = routes(wiring, kvm_pit)
    routing = k.kvm_irq_routing_with(len(table))()
    routing.nr = len(table)
    for entry, (gsi, chip, pin) in zip(routing.entries, table, strict=True):
        entry.gsi, entry.type = gsi, k.KVM_IRQ_ROUTING_IRQCHIP
        entry.u.irqchip.irqchip, entry.u.irqchip.pin = chip, pin
    k.ioctl(vm_fd, k.KVM_SET_GSI_ROUTING, routing, "KVM_SET_GSI_ROUTING")
    return KvmLine(vm_fd, PIC_INPUT_GSI), KvmLine(vm_fd, IOAPIC_PIN_GSI)


class KernelChips:
    """The in-kernel chips' state in and out of a board state dict (PcBoard.get_state
    shape: devices "pic", "elcr", "ioapic", "pit", "port61" and "lapics"), through
    KVM_GET/SET_IRQCHIP, KVM_GET/SET_PIT2, KVM_GET/SET_LAPIC and the vCPU's
    IA32_APIC_BASE and IA32_TSC_DEADLINE (KVM_GET/SET_MSRS); conversions in
    chipstate.py.  `now_ns` reads the board clock, `guest_tsc` the vCPU's TSC;
    `pit`: KVM runs the PIT (--kvm-pit), else "pit" and "port61" are the board's."""

    def __init__(self, vm_fd: int, vcpu_fd: int, now_ns: Callable[[], int],
                 guest_tsc: Callable[[], int], tsc_khz: int, pit: bool) -> None:
        self.vm_fd, self.vcpu_fd = vm_fd, vcpu_fd
        self.now_ns, self.guest_tsc, self.tsc_khz = now_ns, guest_tsc, tsc_khz
        self.pit = pit

    def _chip(self, chip_id: int) -> k.kvm_irqchip:
        chip = k.kvm_irqchip(chip_id=chip_id)
        k.ioctl(self.vm_fd, k.KVM_GET_IRQCHIP, chip, "KVM_GET_IRQCHIP")
        return chip

    def _pit(self) -> k.kvm_pit_state2:
        pit = k.kvm_pit_state2()
        k.ioctl(self.vm_fd, k.KVM_GET_PIT2, pit, "KVM_GET_PIT2")
        return pit

    def _lapic(self) -> k.kvm_lapic_state:
        regs = k.kvm_lapic_state()
        k.ioctl(self.vcpu_fd, k.KVM_GET_LAPIC, regs, "KVM_GET_LAPIC")
        return regs

    def _msrs(self, indices: tuple[int, ...]) -> dict[int, int]:
        msrs = msrs_struct(dict.fromkeys(indices, 0))
        k.ioctl(self.vcpu_fd, k.KVM_GET_MSRS, msrs, "KVM_GET_MSRS")
        return {msrs.entries[i].index: msrs.entries[i].data for i in range(msrs.nmsrs)}

    def save(self, board: dict) -> None:
        """Overwrite the board state's entries for the chips KVM runs."""
        devices = board["devices"]
        master = self._chip(k.KVM_IRQCHIP_PIC_MASTER).chip.pic
        slave = self._chip(k.KVM_IRQCHIP_PIC_SLAVE).chip.pic
        devices["pic"] = {"master": cs.pic_from_kvm(master, True),
                          "slave": cs.pic_from_kvm(slave, False)}
        devices["elcr"] = cs.elcr_from_kvm(master, slave)
        devices["ioapic"] = cs.ioapic_from_kvm(self._chip(k.KVM_IRQCHIP_IOAPIC).chip.ioapic)
        now = self.now_ns()
        if self.pit:
            channels, devices["port61"] = cs.pit_from_kvm(self._pit(), now,
                                                          time.monotonic_ns(),
                                                          devices["port61"])
            devices["pit"] = {**devices["pit"], "channels": channels}
        msrs = self._msrs((MSR_IA32_APIC_BASE, MSR_IA32_TSC_DEADLINE))
        regs = self._lapic()
        deadline = msrs.get(MSR_IA32_TSC_DEADLINE, 0)
        if deadline:  # as a board time: the same distance from now
            distance = max(0, deadline - self.guest_tsc())
            deadline = now + convert(distance, self.tsc_khz, BOARD_KHZ)
        board["lapics"] = [cs.lapic_from_kvm(regs, msrs[MSR_IA32_APIC_BASE], now, deadline)]

    def load(self, board: dict) -> None:
        """Put a board state's chips into KVM (after the board's set_state)."""
        devices = board["devices"]
        elcr = cs.elcr_bytes(devices["elcr"])
        for chip_id, name, bits in ((k.KVM_IRQCHIP_PIC_MASTER, "master", elcr[0]),
                                    (k.KVM_IRQCHIP_PIC_SLAVE, "slave", elcr[1])):
            chip = self._chip(chip_id)
            cs.pic_into_kvm(devices["pic"][name], bits, chip.chip.pic)
            k.ioctl(self.vm_fd, k.KVM_SET_IRQCHIP, chip, "KVM_SET_IRQCHIP (i8259)")
        chip = self._chip(k.KVM_IRQCHIP_IOAPIC)
        cs.ioapic_into_kvm(devices["ioapic"], chip.chip.ioapic)
        k.ioctl(self.vm_fd, k.KVM_SET_IRQCHIP, chip, "KVM_SET_IRQCHIP (I/O APIC)")
        if self.pit:
            pit = self._pit()
            cs.pit_into_kvm(devices["pit"]["channels"], devices["port61"], pit)
            k.ioctl(self.vm_fd, k.KVM_SET_PIT2, pit, "KVM_SET_PIT2")
        lapics = board.get("lapics")
        if not lapics:
            return
        state = lapics[0]
        base = msrs_struct({MSR_IA32_APIC_BASE: state["apic_base"]})
        k.ioctl(self.vcpu_fd, k.KVM_SET_MSRS, base, "KVM_SET_MSRS (IA32_APIC_BASE)")
        now = self.now_ns()
        regs = self._lapic()
        cs.lapic_into_kvm(state, now, regs)
        k.ioctl(self.vcpu_fd, k.KVM_SET_LAPIC, regs, "KVM_SET_LAPIC")
        if state["tsc_deadline"]:  # after the LVT: KVM takes it in TSC-deadline mode only
            distance = max(0, state["tsc_deadline"] - now)
            value = self.guest_tsc() + convert(distance, BOARD_KHZ, self.tsc_khz)
            msrs = msrs_struct({MSR_IA32_TSC_DEADLINE: value})
            k.ioctl(self.vcpu_fd, k.KVM_SET_MSRS, msrs, "KVM_SET_MSRS (IA32_TSC_DEADLINE)")
