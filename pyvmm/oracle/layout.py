"""Where test code and data live, for the native runner and the emulator alike.

Both sides use the same numbers: linear addresses on the host process, and
guest-physical = guest-linear (identity mapping) in the emulated PC.  Both
areas are below 4 GiB (32-bit code must reach them) and above the kernel's
mmap_min_addr; in the PC they sit in extended RAM, above 1 MiB.
"""

from __future__ import annotations

CODE_BASE = 0x00200000  # executable area; a test's code starts here
CODE_SIZE = 0x10000
DATA_BASE = 0x00210000  # data area: memory operands and the stack point here
DATA_SIZE = 0x10000  # 64 KiB: a whole 16-bit segment, so 16-bit offsets never leave it

MODES = (16, 32, 64)  # code size (CS.D / CS.L) a test runs in
