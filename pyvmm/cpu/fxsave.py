"""The FXSAVE image: the one engine-neutral form of the x87/MMX/SSE state.

Layout of the 512-byte area in its 64-bit (REX.W) form, SDM Vol. 2A
"FXSAVE", Table 3-53 (Vol. 1 §10.5.1): FCW at 0, FSW at 2, the abridged tag
byte at 4 (bit i = 1: physical register Ri is not empty), FOP at 6, FIP at 8
and FDP at 16 (64 bits each), MXCSR at 24, MXCSR_MASK at 28, ST(0)-ST(7) at
32 + 16i (80 bits each, in stack order), XMM0-XMM15 at 160 + 16i.  The
32-bit form differs only at 8-23 (FIP, FCS, FDP, FDS as 32+16 bits).
"""

from __future__ import annotations

import struct

FXSAVE_SIZE = 512
HEAD = struct.Struct("<HHBBHQQII")  # FCW FSW FTW rsvd FOP FIP FDP MXCSR MXCSR_MASK
ST0 = 32
XMM0 = 160

# State after FNINIT (SDM Vol. 1 §8.1.8 / Vol. 2A "FINIT": FCW 037FH, FSW 0, all
# tags empty) with MXCSR at its reset value 1F80H (Vol. 1 §10.2.3.1).
FCW_INIT = 0x037F
MXCSR_RESET = 0x1F80
# Bits of MXCSR the interpreter implements (FZ, RC, masks, DAZ, flags): SDM
# Vol. 1 §11.6.6 -- writing others with FXRSTOR/LDMXCSR is #GP.
MXCSR_MASK = 0xFFFF


def default_image() -> bytes:
    image = bytearray(FXSAVE_SIZE)
    HEAD.pack_into(image, 0, FCW_INIT, 0, 0, 0, 0, 0, 0, MXCSR_RESET, MXCSR_MASK)
    return bytes(image)


DEFAULT_IMAGE = default_image()


def st(image: bytes, i: int) -> int:
    """ST(i) as an 80-bit integer."""
    return int.from_bytes(image[ST0 + 16 * i:ST0 + 16 * i + 10], "little")


def xmm(image: bytes, i: int) -> int:
    """XMMi as a 128-bit integer."""
    return int.from_bytes(image[XMM0 + 16 * i:XMM0 + 16 * i + 16], "little")


def head(image: bytes) -> tuple[int, ...]:
    """(fcw, fsw, ftw, fop, fip, fdp, mxcsr, mxcsr_mask)."""
    fcw, fsw, ftw, _, fop, fip, fdp, mxcsr, mask = HEAD.unpack_from(image, 0)
    return fcw, fsw, ftw, fop, fip, fdp, mxcsr, mask


def build(fcw: int, fsw: int, ftw: int, fop: int, fip: int, fdp: int, mxcsr: int,
          st_regs: list[int], xmm_regs: list[int], base: bytes = DEFAULT_IMAGE) -> bytes:
    """An image with these fields (st_regs in stack order); other bytes from `base`."""
    image = bytearray(base)
    HEAD.pack_into(image, 0, fcw, fsw, ftw, 0, fop, fip, fdp, mxcsr, MXCSR_MASK)
    for i, value in enumerate(st_regs):
        image[ST0 + 16 * i:ST0 + 16 * i + 16] = value.to_bytes(16, "little")
    for i, value in enumerate(xmm_regs):
        image[XMM0 + 16 * i:XMM0 + 16 * i + 16] = value.to_bytes(16, "little")
    return bytes(image)
