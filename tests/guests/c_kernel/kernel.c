/*
 * A freestanding multiboot v1 kernel in C, built with the host's gcc and ld
 * (not with the bundled guests' NASM toolchain): the kind of test kernel a
 * user brings.  It prints its command line and a computed result on the
 * debug console (port 0xE9) and exits through isa-debug-exit (port 0xF4).
 */
#include <stdint.h>

#define MULTIBOOT_MAGIC 0x1BADB002u
#define MULTIBOOT_FLAGS 0x00000003u /* page-align modules, want memory info */

struct multiboot_header {
    uint32_t magic, flags, checksum;
};

__attribute__((section(".multiboot"), used, aligned(4)))
static const struct multiboot_header header = {
    MULTIBOOT_MAGIC, MULTIBOOT_FLAGS, -(MULTIBOOT_MAGIC + MULTIBOOT_FLAGS)
};

struct multiboot_info {
    uint32_t flags, mem_lower, mem_upper, boot_device, cmdline;
};

static inline void outb(uint16_t port, uint8_t value)
{
    __asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port));
}

static void puts_e9(const char *text)
{
    while (*text)
        outb(0xE9, (uint8_t)*text++);
}

static void put_decimal(uint32_t value)
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

void kernel_main(uint32_t magic, const struct multiboot_info *info)
{
    uint32_t sum = 0;
    if (magic != 0x2BADB002u) {
        puts_e9("bad magic\n");
        outb(0xF4, 0x11);
    }
    puts_e9("c-kernel: cmdline=");
    if (info->flags & (1u << 2))
        puts_e9((const char *)(uintptr_t)info->cmdline);
    puts_e9("\nc-kernel: mem_upper=");
    put_decimal(info->mem_upper);
    for (uint32_t i = 1; i <= 1000; i++)
        sum += i * i;
    puts_e9(" sum=");
    put_decimal(sum);
    puts_e9("\n");
    outb(0xF4, 0x10);
    for (;;)
        __asm__ volatile("hlt");
}

__attribute__((naked, noreturn)) void _start(void)
{
    __asm__ volatile(
        "mov $0x80000, %esp\n"
        "push %ebx\n"
        "push %eax\n"
        "call kernel_main\n"
        "1: hlt\n"
        "jmp 1b\n");
}
