/*
 * A freestanding multiboot v1 kernel with a polling virtio-blk driver over the
 * modern virtio-pci transport (Virtio 1.2 §4.1: the vendor capabilities,
 * §4.1.5.1 device initialization, §2.7 split virtqueues, §5.2 block device),
 * found by PCI configuration mechanism #1 (PCI 3.0 §3.2.2.3.2) at 0xCF8.  No
 * firmware has run: the driver programs BAR 4 itself.  No paging, IF=0.
 *
 * It reads sector 1 with MSI-X disabled and checks that the ISR status says
 * "queue interrupt" once (a read clears it, §4.1.4.5); it prints the sector on
 * the debug console (0xE9); then it enables MSI-X (PCI 3.0 §6.8.2) with the
 * queue's vector aimed at the local APIC (SDM Vol. 3A "Message Signalled
 * Interrupts": address 0xFEE00000, data = vector 0x40, fixed, edge), writes
 * sector 0, flushes, and checks that the vector is pending in the local
 * APIC's IRR.  A read past the end must fail.  Exit through port 0xF4 with
 * 0x10 (0x11 on any failure, after printing what failed).
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

#define BAR_BASE 0xE0000000u
#define LAPIC 0xFEE00000u
#define VECTOR 0x40u

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

#define S_ACKNOWLEDGE 1
#define S_DRIVER 2
#define S_DRIVER_OK 4
#define S_FEATURES_OK 8

#define F_FLUSH (1u << 9)
#define F_VERSION_1 (1u << 0) /* bit 32: word 1, bit 0 */

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
static uint32_t common, notify, isr, notify_multiplier, msix_cap, msix_table;
static uint32_t pci_address;

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

#define M8(a) (*(volatile uint8_t *)(a))
#define M16(a) (*(volatile uint16_t *)(a))
#define M32(a) (*(volatile uint32_t *)(a))

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
    puts_("blk_pci_driver: ");
    puts_(why);
    puts_("\n");
    finish(0x11);
}

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
    M16(notify + M16(common + QUEUE_NOTIFY_OFF) * notify_multiplier) = 0;
    for (uint32_t spins = 0; *(volatile uint16_t *)&used_ring.idx == seen_used; spins++)
        if (spins > 100000000u)
            fail("no answer from the device");
    seen_used++;
    return status_byte;
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

static void init(void)
{
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
    M8(common + DEVICE_STATUS) = S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK;
}

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

static const char written[] = "written by the guest through virtio-blk";

void kernel_main(void)
{
    find_device();
    map_capabilities();
    init();
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
    if (!(M32(LAPIC + 0x200 + 0x10 * (VECTOR / 32)) & (1u << (VECTOR % 32))))
        fail("the MSI-X message is not pending in the local APIC");
    if (M8(isr) != 0)
        fail("the ISR status was set with MSI-X enabled");
    if (transfer(T_IN, 1u << 30, 1, 1) != 1)
        fail("a read past the end did not fail");
    puts_("blk_pci_driver: done\n");
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
