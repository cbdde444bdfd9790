/*
 * The modern virtio-pci transport (Virtio 1.2 §4.1) for the polling drivers:
 * the block function (1af4:1042) found by PCI configuration mechanism #1
 * (PCI 3.0 §3.2.2.3.2) at 0xCF8, BAR 4 programmed by the driver itself (no
 * firmware has run), the vendor capabilities (§4.1.4) walked for the common
 * configuration, notification and ISR blocks, and §4.1.5.1 initialization of
 * one queue.  The MSI-X capability's offset and table are noted for drivers
 * that use them.
 */
#ifndef VIRTIO_PCI_H
#define VIRTIO_PCI_H
#include "virtio_common.h"

#define BAR_BASE 0xE0000000u

/* virtio_pci_common_cfg (§4.1.4.3) */
#define DEVICE_FEATURE_SELECT 0x00
#define DEVICE_FEATURE 0x04
#define DRIVER_FEATURE_SELECT 0x08
#define DRIVER_FEATURE 0x0C
#define DEVICE_STATUS 0x14
#define QUEUE_SELECT 0x16
#define QUEUE_SIZE 0x18
#define QUEUE_MSIX_VECTOR 0x1A
#define QUEUE_ENABLE 0x1C
#define QUEUE_NOTIFY_OFF 0x1E
#define QUEUE_DESC 0x20
#define QUEUE_DRIVER 0x28
#define QUEUE_DEVICE 0x30

static uint32_t common, notify, isr, notify_multiplier, msix_cap, msix_table;
static uint32_t pci_address, queue_notify_address;

static uint32_t cfg_read(uint32_t offset)
{
    outl(0xCF8, pci_address | (offset & 0xFC));
    return inl(0xCFC) >> (8 * (offset & 3));
}

static void cfg_write32(uint32_t offset, uint32_t value)
{
    outl(0xCF8, pci_address | offset);
    outl(0xCFC, value);
}

static void transport_notify(void)
{
    M16(queue_notify_address) = 0;  /* the queue's index, 16 bits (§4.1.5.2) */
}

static void transport_request_done(void)
{
}

static void find_device(void)
{
    for (uint32_t dev = 0; dev < 32; dev++) {
        pci_address = 0x80000000u | (dev << 11);
        if (cfg_read(0) == ((0x1040u + 2) << 16 | 0x1AF4u))
            return;
    }
    fail("no virtio-pci block device (1af4:1042) on bus 0");
}

static void map_capabilities(void)
{
    cfg_write32(0x10 + 4 * 4, BAR_BASE);
    if ((cfg_read(0x10 + 4 * 4) & 0x6) == 0x4) /* a 64-bit BAR (QEMU's): BAR 5 is its top */
        cfg_write32(0x10 + 5 * 4, 0);
    cfg_write32(0x04, 0x6); /* memory space, bus master */
    if (!(cfg_read(0x06) & 0x10))
        fail("no capability list");
    for (uint32_t at = cfg_read(0x34) & 0xFC; at; at = cfg_read(at + 1) & 0xFC) {
        uint32_t id = cfg_read(at) & 0xFF;
        if (id == 0x11) {
            msix_cap = at;
            msix_table = BAR_BASE + (cfg_read(at + 4) & ~7u);
        }
        if (id != 0x09 || (cfg_read(at + 4) & 0xFF) != 4)
            continue;
        uint32_t address = BAR_BASE + cfg_read(at + 8);
        switch (cfg_read(at + 3) & 0xFF) {
        case 1: common = address; break;
        case 2: notify = address; notify_multiplier = cfg_read(at + 16); break;
        case 3: isr = address; break;
        }
    }
    if (!common || !notify || !isr || !msix_cap)
        fail("a capability is missing");
}

static void transport_init(void)
{
    find_device();
    map_capabilities();
    M8(common + DEVICE_STATUS) = 0;
    M8(common + DEVICE_STATUS) = S_ACKNOWLEDGE;
    M8(common + DEVICE_STATUS) = S_ACKNOWLEDGE | S_DRIVER;
    M32(common + DEVICE_FEATURE_SELECT) = 1;
    if (!(M32(common + DEVICE_FEATURE) & F_VERSION_1))
        fail("device lacks VIRTIO_F_VERSION_1");
    M32(common + DEVICE_FEATURE_SELECT) = 0;
    if (!(M32(common + DEVICE_FEATURE) & F_FLUSH))
        fail("device lacks VIRTIO_BLK_F_FLUSH");
    M32(common + DRIVER_FEATURE_SELECT) = 1;
    M32(common + DRIVER_FEATURE) = F_VERSION_1;
    M32(common + DRIVER_FEATURE_SELECT) = 0;
    M32(common + DRIVER_FEATURE) = F_FLUSH;
    M8(common + DEVICE_STATUS) = S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK;
    if (!(M8(common + DEVICE_STATUS) & S_FEATURES_OK))
        fail("device refused the features");
    M16(common + QUEUE_SELECT) = 0;
    if (M16(common + QUEUE_SIZE) < QSIZE)
        fail("queue 0 too small");
    M16(common + QUEUE_SIZE) = QSIZE;
    M32(common + QUEUE_DESC) = (uint32_t)descs;
    M32(common + QUEUE_DESC + 4) = 0;
    M32(common + QUEUE_DRIVER) = (uint32_t)&avail_ring;
    M32(common + QUEUE_DRIVER + 4) = 0;
    M32(common + QUEUE_DEVICE) = (uint32_t)&used_ring;
    M32(common + QUEUE_DEVICE + 4) = 0;
    M16(common + QUEUE_ENABLE) = 1;
    queue_notify_address = notify + M16(common + QUEUE_NOTIFY_OFF) * notify_multiplier;
    M8(common + DEVICE_STATUS) = S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK;
}
#endif
