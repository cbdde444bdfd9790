/*
 * A freestanding multiboot v1 kernel with a polling virtio-blk driver over
 * virtio-mmio (Virtio 1.2 §4.2.3.1 device initialization, §2.7 split
 * virtqueues, §5.2 block device).  No paging, no interrupts: the driver
 * polls the used ring.
 *
 * It reads sector 1 and prints it (up to its first NUL) on the debug console
 * (port 0xE9), writes a known text to sector 0, flushes, and exits through
 * port 0xF4 with 0x10 (0x11 on any failure, after printing what failed).
 */
#include <stdint.h>

#define MULTIBOOT_MAGIC 0x1BADB002u
#define MULTIBOOT_FLAGS 0x00000003u

struct multiboot_header {
    uint32_t magic, flags, checksum;
};

__attribute__((section(".multiboot"), used, aligned(4)))
static const struct multiboot_header header = {
    MULTIBOOT_MAGIC, MULTIBOOT_FLAGS, -(MULTIBOOT_MAGIC + MULTIBOOT_FLAGS)
};

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

#define S_ACKNOWLEDGE 1
#define S_DRIVER 2
#define S_DRIVER_OK 4
#define S_FEATURES_OK 8

#define F_FLUSH (1u << 9)       /* VIRTIO_BLK_F_FLUSH, feature word 0 */
#define F_VERSION_1 (1u << 0)   /* VIRTIO_F_VERSION_1 = bit 32: word 1, bit 0 */

#define T_IN 0
#define T_OUT 1
#define T_FLUSH 4

#define QSIZE 8
#define D_NEXT 1
#define D_WRITE 2

struct desc { uint64_t addr; uint32_t len; uint16_t flags, next; };
struct avail { uint16_t flags, idx, ring[QSIZE], used_event; };
struct used_elem { uint32_t id, len; };
struct used { uint16_t flags, idx; struct used_elem ring[QSIZE]; uint16_t avail_event; };
struct req { uint32_t type, reserved; uint64_t sector; };

static struct desc descs[QSIZE] __attribute__((aligned(16)));
static struct avail avail_ring __attribute__((aligned(2)));
static struct used used_ring __attribute__((aligned(4)));
static struct req request;
static uint8_t data[512];
static volatile uint8_t status_byte;
static uint16_t next_avail, seen_used;

static inline void outb(uint16_t port, uint8_t value)
{
    __asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port));
}

static void puts_(const char *text)
{
    while (*text)
        outb(0xE9, (uint8_t)*text++);
}

static __attribute__((noreturn)) void finish(uint8_t code)
{
    outb(0xF4, code);
    for (;;)
        __asm__ volatile("hlt");
}

static __attribute__((noreturn)) void fail(const char *why)
{
    puts_("blk_driver: ");
    puts_(why);
    puts_("\n");
    finish(0x11);
}

/* One request: header, optional data, status.  Returns the status byte. */
static uint8_t transfer(uint32_t type, uint64_t sector, int with_data, int device_writes)
{
    request.type = type;
    request.reserved = 0;
    request.sector = sector;
    status_byte = 0xFF;
    int n = 0;
    descs[n] = (struct desc){(uint32_t)&request, sizeof request, D_NEXT, (uint16_t)(n + 1)};
    n++;
    if (with_data) {
        descs[n] = (struct desc){(uint32_t)data, sizeof data,
                                 (uint16_t)(D_NEXT | (device_writes ? D_WRITE : 0)),
                                 (uint16_t)(n + 1)};
        n++;
    }
    descs[n] = (struct desc){(uint32_t)&status_byte, 1, D_WRITE, 0};
    avail_ring.ring[next_avail % QSIZE] = 0;
    __asm__ volatile("" ::: "memory");
    avail_ring.idx = ++next_avail;
    __asm__ volatile("" ::: "memory");
    REG(QUEUE_NOTIFY) = 0;
    for (uint32_t spins = 0; *(volatile uint16_t *)&used_ring.idx == seen_used; spins++)
        if (spins > 100000000u)
            fail("no answer from the device");
    seen_used++;
    REG(INTERRUPT_ACK) = REG(INTERRUPT_STATUS);
    return status_byte;
}

static void init(void)
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

static const char written[] = "written by the guest through virtio-blk";

void kernel_main(void)
{
    init();
    if (transfer(T_IN, 1, 1, 1) != 0)
        fail("read of sector 1 failed");
    data[sizeof data - 1] = 0;
    puts_((const char *)data);
    puts_("\n");
    for (unsigned i = 0; i < sizeof data; i++)
        data[i] = i < sizeof written ? (uint8_t)written[i] : 0;
    if (transfer(T_OUT, 0, 1, 0) != 0)
        fail("write of sector 0 failed");
    if (transfer(T_FLUSH, 0, 0, 0) != 0)
        fail("flush failed");
    if (transfer(T_IN, 1u << 30, 1, 1) != 1)  /* past the end: VIRTIO_BLK_S_IOERR */
        fail("a read past the end did not fail");
    puts_("blk_driver: done\n");
    finish(0x10);
}

__attribute__((naked, noreturn)) void _start(void)
{
    __asm__ volatile(
        "mov $0x80000, %esp\n"
        "call kernel_main\n"
        "1: hlt\n"
        "jmp 1b\n");
}
