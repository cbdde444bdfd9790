"""`--irqchip kernel`: KVM's in-kernel i8259 pair, I/O APIC, local APIC and PIT.

KVM_CREATE_IRQCHIP puts the PIC pair, the I/O APIC and one local APIC per
vCPU in the host kernel, KVM_CREATE_PIT2 the 8254 (KVM API,
Documentation/virt/kvm/api.rst).  Their port and MMIO accesses, EOIs, HLT
and interrupt delivery never leave the kernel; the Python devices that
remain (the UART, the RTC, the HPET, virtio, ...) raise their lines with
KVM_IRQ_LINE.

The board's wires keep their shape (pyvmm/board/gsi.py): each i8259 input
and each I/O APIC pin becomes one KVM GSI of its own, so a wire that reaches
both controllers on the board reaches both here, and a PIRQ steered to an
i8259 input, or an HPET route to an I/O APIC pin, reaches only that one:

    KVM GSI 48 + n -> i8259 input n         (PIC_INPUT_GSI)
    KVM GSI 24 + p -> I/O APIC pin p        (IOAPIC_PIN_GSI)
    KVM GSI 0      -> i8259 input 0 and the I/O APIC pin of ISA IRQ 0 (pin 2):
                      the in-kernel PIT's output, as QEMU routes it.
"""

from __future__ import annotations

from typing import Protocol

from pyvmm.engines.kvm import ioctls as k


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


def routes(wiring: Wiring) -> list[tuple[int, int, int]]:
    """(KVM GSI, chip, pin) for every route (KVM_SET_GSI_ROUTING)."""
    table = [(PIC_INPUT_GSI + irq, *_pic_chip(irq)) for irq in range(len(wiring.pic_inputs))]
    table += [(IOAPIC_PIN_GSI + pin, k.KVM_IRQCHIP_IOAPIC, pin)
              for pin in range(len(wiring.gsi_inputs))]
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


def create(vm_fd: int, wiring: Wiring) -> tuple[KvmLine, KvmLine]:
    """The in-kernel chips and routes; (sink for i8259 inputs, sink for I/O APIC pins).
    Must come before the first KVM_CREATE_VCPU (its local APIC is made with it)."""
    k.ioctl(vm_fd, k.KVM_CREATE_IRQCHIP, None, "KVM_CREATE_IRQCHIP")
    k.ioctl(vm_fd, k.KVM_CREATE_PIT2, k.kvm_pit_config(flags=k.KVM_PIT_SPEAKER_DUMMY),
            "KVM_CREATE_PIT2")
    table = routes(wiring)
    routing = k.kvm_irq_routing_with(len(table))()
    routing.nr = len(table)
    for entry, (gsi, chip, pin) in zip(routing.entries, table, strict=True):
        entry.gsi, entry.type = gsi, k.KVM_IRQ_ROUTING_IRQCHIP
        entry.u.irqchip.irqchip, entry.u.irqchip.pin = chip, pin
    k.ioctl(vm_fd, k.KVM_SET_GSI_ROUTING, routing, "KVM_SET_GSI_ROUTING")
    return KvmLine(vm_fd, PIC_INPUT_GSI), KvmLine(vm_fd, IOAPIC_PIN_GSI)
