/*
 * What the bundled polling virtio-blk drivers share: a freestanding multiboot
 * v1 kernel (32-bit, no paging, IF=0), the debug console (port 0xE9) and
 * debug-exit (port 0xF4), one split virtqueue of QSIZE entries (Virtio 1.2
 * §2.7: descriptor table, driver and device areas) and one block request at a
 * time (§5.2.6: header, data, status byte).
 *
 * A driver defines DRIVER_NAME and includes one transport header
 * (virtio_mmio.h or virtio_pci.h), which provides transport_init() (§3.1.1
 * device initialization with VIRTIO_F_VERSION_1 and VIRTIO_BLK_F_FLUSH) and
 * transport_notify() (the queue-notify write); then kernel_main().
 */
#ifndef VIRTIO_COMMON_H
#define VIRTIO_COMMON_H
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

#define S_ACKNOWLEDGE 1
#define S_DRIVER 2
#define S_DRIVER_OK 4
#define S_FEATURES_OK 8

#define F_FLUSH (1u << 9)       /* VIRTIO_BLK_F_FLUSH, feature word 0 */
#define F_VERSION_1 (1u << 0)   /* VIRTIO_F_VERSION_1 = bit 32: word 1, bit 0 */

#define T_IN 0
#define T_OUT 1
#define T_FLUSH 4

#ifndef DATA_SIZE
#define DATA_SIZE 512
#endif

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
static uint8_t data[DATA_SIZE] __attribute__((aligned(16)));
static volatile uint8_t status_byte;
static uint16_t next_avail, seen_used;

static inline void outb(uint16_t port, uint8_t value)
{
    __asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port));
}

static inline void outl(uint16_t port, uint32_t value)
{
    __asm__ volatile("outl %0, %1" : : "a"(value), "Nd"(port));
}

static inline uint32_t inl(uint16_t port)
{
    uint32_t value;
    __asm__ volatile("inl %1, %0" : "=a"(value) : "Nd"(port));
    return value;
}

#define M8(a) (*(volatile uint8_t *)(a))
#define M16(a) (*(volatile uint16_t *)(a))
#define M32(a) (*(volatile uint32_t *)(a))

static void puts_(const char *text)
{
    while (*text)
        outb(0xE9, (uint8_t)*text++);
}

static __attribute__((unused)) void putu(uint32_t value)
{
    char digits[11];
    int n = 0;
    do {
        digits[n++] = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    while (n)
        outb(0xE9, (uint8_t)digits[--n]);
}

static __attribute__((noreturn)) void finish(uint8_t code)
{
    outb(0xF4, code);
    for (;;)
        __asm__ volatile("hlt");
}

static __attribute__((noreturn)) void fail(const char *why)
{
    puts_(DRIVER_NAME ": ");
    puts_(why);
    puts_("\n");
    finish(0x11);
}

static void transport_notify(void);
static void transport_request_done(void);

/* One request: header, optionally `length` bytes of data, status (§5.2.6); the
 * driver polls the used ring.  Returns the status byte. */
static uint8_t transfer_n(uint32_t type, uint64_t sector, uint32_t length, int device_writes)
{
    request.type = type;
    request.reserved = 0;
    request.sector = sector;
    status_byte = 0xFF;
    int n = 0;
    descs[n] = (struct desc){(uint32_t)&request, sizeof request, D_NEXT, (uint16_t)(n + 1)};
    n++;
    if (length) {
        descs[n] = (struct desc){(uint32_t)data, length,
                                 (uint16_t)(D_NEXT | (device_writes ? D_WRITE : 0)),
                                 (uint16_t)(n + 1)};
        n++;
    }
    descs[n] = (struct desc){(uint32_t)&status_byte, 1, D_WRITE, 0};
    avail_ring.ring[next_avail % QSIZE] = 0;
    __asm__ volatile("" ::: "memory");   /* the ring entry before the index (§2.7.13) */
    avail_ring.idx = ++next_avail;
    __asm__ volatile("" ::: "memory");
    transport_notify();
    for (uint32_t spins = 0; *(volatile uint16_t *)&used_ring.idx == seen_used; spins++)
        if (spins > 100000000u)
            fail("no answer from the device");
    seen_used++;
    transport_request_done();
    return status_byte;
}

static __attribute__((unused)) uint8_t transfer(uint32_t type, uint64_t sector, int with_data,
                                               int device_writes)
{
    return transfer_n(type, sector, with_data ? 512 : 0, device_writes);
}

void kernel_main(void);

__attribute__((naked, noreturn)) void _start(void)
{
    __asm__ volatile(
        "mov $0x80000, %esp\n"
        "call kernel_main\n"
        "1: hlt\n"
        "jmp 1b\n");
}
#endif
