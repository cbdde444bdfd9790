/*
 * A block benchmark guest over virtio-pci (virtio_pci.h): REQUESTS reads of
 * DATA_SIZE bytes each, one in flight at a time, polled.  SEQUENTIAL reads
 * consecutive extents from sector 0 (wrapping at DISK_SECTORS); otherwise
 * each extent is DATA_SIZE-aligned at a pseudo-random place (a 32-bit LCG,
 * Numerical Recipes' constants).  Prints "blk_bench: N requests" and exits
 * 0x10.  The host times it; build with -DREQUESTS=... -DDATA_SIZE=...
 * -DDISK_SECTORS=... -DSEQUENTIAL=0|1.
 */
#define DRIVER_NAME "blk_bench"
#ifndef DATA_SIZE
#define DATA_SIZE 4096
#endif
#include "virtio_pci.h"

#ifndef REQUESTS
#define REQUESTS 1000
#endif
#ifndef DISK_SECTORS
#define DISK_SECTORS 65536u
#endif
#ifndef SEQUENTIAL
#define SEQUENTIAL 1
#endif

void kernel_main(void)
{
    const uint32_t per = DATA_SIZE / 512, extents = DISK_SECTORS / per;
    uint32_t seed = 12345, done = 0;
    transport_init();
    for (uint32_t i = 0; i < REQUESTS; i++) {
        uint32_t extent;
        if (SEQUENTIAL) {
            extent = i % extents;
        } else {
            seed = seed * 1664525u + 1013904223u;
            extent = (seed >> 8) % extents;
        }
        if (transfer_n(T_IN, (uint64_t)extent * per, DATA_SIZE, 1) != 0)
            fail("a read failed");
        done++;
    }
    puts_("blk_bench: ");
    putu(done);
    puts_(" requests\n");
    finish(0x10);
}
