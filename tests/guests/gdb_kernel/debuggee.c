/*
 * A freestanding multiboot v1 kernel for the GDB-stub tests: built with -g so
 * gdb can break at `bump`, read `counter` and watch it change.  It prints the
 * final count on the debug console (port 0xE9) and exits through port 0xF4.
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

volatile uint32_t counter;

static inline void outb(uint16_t port, uint8_t value)
{
    __asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port));
}

__attribute__((noinline)) void bump(uint32_t by)
{
    counter += by;
}

void kernel_main(void)
{
    for (uint32_t i = 1; i <= 5; i++)
        bump(i);
    uint32_t value = counter;
    char digits[11];
    int n = 0;
    do {
        digits[n++] = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    while (n)
        outb(0xE9, (uint8_t)digits[--n]);
    outb(0xE9, '\n');
    outb(0xF4, 0x10);
    for (;;)
        __asm__ volatile("hlt");
}

__attribute__((naked, noreturn)) void _start(void)
{
    __asm__ volatile(
        "mov $0x80000, %esp\n"
        "call kernel_main\n"
        "1: hlt\n"
        "jmp 1b\n");
}
