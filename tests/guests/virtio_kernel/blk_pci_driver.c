/*
 * A polling virtio-blk driver over the modern virtio-pci transport
 * (virtio_pci.h; Virtio 1.2 §4.1, §2.7, §5.2).
 *
 * It reads sector 1 with MSI-X disabled and checks that the ISR status says
 * "queue interrupt" once (a read clears it, §4.1.4.5); it prints the sector on
 * the debug console (0xE9); then it enables MSI-X (PCI 3.0 §6.8.2) with the
 * queue's vector aimed at the local APIC (SDM Vol. 3A "Message Signalled
 * Interrupts": address 0xFEE00000, data = vector 0x40, fixed, edge), writes
 * sector 0, flushes, and checks that the vector becomes pending in the local
 * APIC's IRR (the message follows the used-ring update, §2.7.13: polled,
 * bounded).  A read past the end must fail.  Exit through port 0xF4 with
 * 0x10 (0x11 on any failure, after printing what failed).
 */
#define DRIVER_NAME "blk_pci_driver"
#include "virtio_pci.h"

#define LAPIC 0xFEE00000u
#define VECTOR 0x40u

static void enable_msix(void)
{
    M32(LAPIC + 0xF0) = 0x1FF; /* software-enable the local APIC */
    M32(msix_table + 16 + 0) = LAPIC; /* entry 1: destination APIC 0, physical */
    M32(msix_table + 16 + 4) = 0;
    M32(msix_table + 16 + 8) = VECTOR; /* fixed, edge */
    M32(msix_table + 16 + 12) = 0; /* unmask */
    outl(0xCF8, pci_address | msix_cap);
    outl(0xCFC, inl(0xCFC) | (0x8000u << 16)); /* MSI-X enable */
    M16(common + QUEUE_SELECT) = 0;
    M16(common + QUEUE_MSIX_VECTOR) = 1;
    if (M16(common + QUEUE_MSIX_VECTOR) != 1)
        fail("the device refused MSI-X vector 1 for queue 0");
}

static int vector_pending(void)
{
    for (uint32_t tries = 0; tries < 1000000u; tries++)
        if (M32(LAPIC + 0x200 + 0x10 * (VECTOR / 32)) & (1u << (VECTOR % 32)))
            return 1;
    return 0;
}

static const char written[] = "written by the guest through virtio-blk";

void kernel_main(void)
{
    transport_init();
    if (transfer(T_IN, 1, 1, 1) != 0)
        fail("read of sector 1 failed");
    if (M8(isr) != 1 || M8(isr) != 0)
        fail("the ISR status did not say 'queue interrupt' once");
    data[sizeof data - 1] = 0;
    puts_((const char *)data);
    puts_("\n");
    enable_msix();
    for (unsigned i = 0; i < sizeof data; i++)
        data[i] = i < sizeof written ? (uint8_t)written[i] : 0;
    if (transfer(T_OUT, 0, 1, 0) != 0)
        fail("write of sector 0 failed");
    if (transfer(T_FLUSH, 0, 0, 0) != 0)
        fail("flush failed");
    if (!vector_pending())
        fail("the MSI-X message is not pending in the local APIC");
    if (M8(isr) != 0)
        fail("the ISR status was set with MSI-X enabled");
    if (transfer(T_IN, 1u << 30, 1, 1) != 1)
        fail("a read past the end did not fail");
    puts_("blk_pci_driver: done\n");
    finish(0x10);
}
