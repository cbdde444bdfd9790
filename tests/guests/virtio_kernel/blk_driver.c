/*
 * A polling virtio-blk driver over virtio-mmio (virtio_mmio.h; Virtio 1.2
 * §4.2.3.1, §2.7, §5.2).  It reads sector 1 and prints it (up to its first
 * NUL) on the debug console, writes a known text to sector 0, flushes, checks
 * that a read past the end fails, and exits through port 0xF4 with 0x10
 * (0x11 on any failure, after printing what failed).
 */
#define DRIVER_NAME "blk_driver"
#include "virtio_mmio.h"

static const char written[] = "written by the guest through virtio-blk";

void kernel_main(void)
{
    transport_init();
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
