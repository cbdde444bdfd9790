/*
 * Durability of an acknowledged flush (Virtio 1.2 §5.2.6.2: a FLUSH
 * completes once every write before it is on stable storage).  Over
 * virtio-pci (virtio_pci.h) it writes a known text to sector 2, issues
 * FLUSH, and after both are acknowledged prints "blk_kill: flushed" on the
 * debug console; then it spins (IF=0, no HLT: the VM keeps running) until the
 * host kills pyvmm.
 */
#define DRIVER_NAME "blk_kill"
#include "virtio_pci.h"

static const char text[] = "acknowledged before the kill";

void kernel_main(void)
{
    transport_init();
    for (unsigned i = 0; i < sizeof data; i++)
        data[i] = i < sizeof text ? (uint8_t)text[i] : (uint8_t)i;
    if (transfer(T_OUT, 2, 1, 0) != 0)
        fail("write of sector 2 failed");
    if (transfer(T_FLUSH, 0, 0, 0) != 0)
        fail("flush failed");
    puts_("blk_kill: flushed\n");
    for (;;)
        __asm__ volatile("pause");
}
