/*
 * The virtio-mmio transport (Virtio 1.2 §4.2.2, §4.2.3.1) for the polling
 * drivers: the device at 0xFEB00000 (pyvmm's first virtio-mmio window), one
 * queue; the interrupt is acknowledged after each request.
 */
#ifndef VIRTIO_MMIO_H
#define VIRTIO_MMIO_H
#include "virtio_common.h"

#define MMIO_BASE 0xFEB00000u
#define REG(off) (*(volatile uint32_t *)(MMIO_BASE + (off)))
#define MAGIC 0x000
#define VERSION 0x004
#define DEVICE_ID 0x008
#define DEVICE_FEATURES 0x010
#define DEVICE_FEATURES_SEL 0x014
#define DRIVER_FEATURES 0x020
#define DRIVER_FEATURES_SEL 0x024
#define QUEUE_SEL 0x030
#define QUEUE_NUM_MAX 0x034
#define QUEUE_NUM 0x038
#define QUEUE_READY 0x044
#define QUEUE_NOTIFY 0x050
#define INTERRUPT_STATUS 0x060
#define INTERRUPT_ACK 0x064
#define STATUS 0x070
#define QUEUE_DESC_LOW 0x080
#define QUEUE_DESC_HIGH 0x084
#define QUEUE_DRIVER_LOW 0x090
#define QUEUE_DRIVER_HIGH 0x094
#define QUEUE_DEVICE_LOW 0x0A0
#define QUEUE_DEVICE_HIGH 0x0A4

static void transport_notify(void)
{
    REG(QUEUE_NOTIFY) = 0;
}

static void transport_request_done(void)
{
    REG(INTERRUPT_ACK) = REG(INTERRUPT_STATUS);
}

static void transport_init(void)
{
    if (REG(MAGIC) != 0x74726976u || REG(VERSION) != 2 || REG(DEVICE_ID) != 2)
        fail("no virtio-mmio block device at 0xFEB00000");
    REG(STATUS) = 0;
    REG(STATUS) = S_ACKNOWLEDGE;
    REG(STATUS) = S_ACKNOWLEDGE | S_DRIVER;
    REG(DEVICE_FEATURES_SEL) = 1;
    if (!(REG(DEVICE_FEATURES) & F_VERSION_1))
        fail("device lacks VIRTIO_F_VERSION_1");
    REG(DEVICE_FEATURES_SEL) = 0;
    if (!(REG(DEVICE_FEATURES) & F_FLUSH))
        fail("device lacks VIRTIO_BLK_F_FLUSH");
    REG(DRIVER_FEATURES_SEL) = 1;
    REG(DRIVER_FEATURES) = F_VERSION_1;
    REG(DRIVER_FEATURES_SEL) = 0;
    REG(DRIVER_FEATURES) = F_FLUSH;
    REG(STATUS) = S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK;
    if (!(REG(STATUS) & S_FEATURES_OK))
        fail("device refused the features");
    REG(QUEUE_SEL) = 0;
    if (REG(QUEUE_NUM_MAX) < QSIZE)
        fail("queue 0 too small");
    REG(QUEUE_NUM) = QSIZE;
    REG(QUEUE_DESC_LOW) = (uint32_t)descs;
    REG(QUEUE_DESC_HIGH) = 0;
    REG(QUEUE_DRIVER_LOW) = (uint32_t)&avail_ring;
    REG(QUEUE_DRIVER_HIGH) = 0;
    REG(QUEUE_DEVICE_LOW) = (uint32_t)&used_ring;
    REG(QUEUE_DEVICE_HIGH) = 0;
    REG(QUEUE_READY) = 1;
    REG(STATUS) = S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK;
}
#endif
