"""The interpreter's live x87 register file, and its FXSAVE conversion.

SDM Vol. 1 §8.1: eight 80-bit physical data registers R0-R7 used as a stack
whose top is FSW.TOP (ST(i) = R[(TOP + i) mod 8]); the control word FCW,
the status word FSW (TOP kept separately in `top`), the tag word, the last
instruction opcode FOP (11 bits) and the last instruction/data pointers.

Tags: like the processor's own FXSAVE/FXRSTOR (Vol. 1 §10.5.1.1), only
"empty" or "not empty" is kept (`valid`, bit i for Ri); the full two-bit
tags of FSTENV/FSAVE are computed from the register contents (§8.1.7).

MMX registers alias the significands of R0-R7 (§9.2): every MMX instruction
sets TOP to 0 and all tags to valid (§9.5.1, Table 9-2); a write also sets
the exponent/sign bits 79-64 to all ones.
"""

from __future__ import annotations

from pyvmm.cpu import fxsave

MASK64 = (1 << 64) - 1

# FSW bits (SDM Vol. 1 §8.1.3, Figure 8-4).
SW_IE, SW_DE, SW_ZE, SW_OE, SW_UE, SW_PE = (1 << i for i in range(6))
SW_SF = 1 << 6
SW_ES = 1 << 7
SW_C0 = 1 << 8
SW_C1 = 1 << 9
SW_C2 = 1 << 10
SW_TOP_SHIFT = 11
SW_C3 = 1 << 14
SW_B = 1 << 15

# Full tag values (§8.1.7, Figure 8-7).
TAG_VALID, TAG_ZERO, TAG_SPECIAL, TAG_EMPTY = 0, 1, 2, 3


def tag_of(value: int) -> int:
    """The 2-bit tag of a non-empty register from its contents."""
    exponent = (value >> 64) & 0x7FFF
    if exponent == 0:
        return TAG_ZERO if value & MASK64 == 0 else TAG_SPECIAL
    if exponent == 0x7FFF or not value >> 63 & 1:
        return TAG_SPECIAL
    return TAG_VALID


class Fpu:
    """x87 state: `regs` are the physical registers R0-R7 as 80-bit ints."""

    __slots__ = ("regs", "fcw", "fsw", "top", "valid", "fop", "fip", "fcs", "fdp", "fds")

    def __init__(self) -> None:
        self.regs = [0] * 8
        self.finit()
        self.fip = self.fcs = self.fdp = self.fds = 0

    def finit(self) -> None:
        """FNINIT (SDM Vol. 2A "FINIT/FNINIT"): FCW 037FH, FSW 0, all tags empty,
        FOP/FIP/FDP cleared; the data registers keep their contents."""
        self.fcw = fxsave.FCW_INIT
        self.fsw = 0
        self.top = 0
        self.valid = 0
        self.fop = 0
        self.fip = self.fcs = self.fdp = self.fds = 0

    # -- stack -----------------------------------------------------------------
    def phys(self, i: int) -> int:
        return (self.top + i) & 7

    def st(self, i: int) -> int:
        return self.regs[(self.top + i) & 7]

    def set_st(self, i: int, value: int) -> None:
        p = (self.top + i) & 7
        self.regs[p] = value
        self.valid |= 1 << p

    def is_empty(self, i: int) -> bool:
        return not self.valid >> ((self.top + i) & 7) & 1

    def free(self, i: int) -> None:
        self.valid &= ~(1 << ((self.top + i) & 7))

    def push(self, value: int) -> None:
        self.top = (self.top - 1) & 7
        self.regs[self.top] = value
        self.valid |= 1 << self.top

    def pop(self) -> None:
        self.valid &= ~(1 << self.top)
        self.top = (self.top + 1) & 7

    @property
    def status(self) -> int:
        """FSW as FNSTSW stores it, TOP included."""
        return (self.fsw & ~(7 << SW_TOP_SHIFT)) | (self.top << SW_TOP_SHIFT)

    @status.setter
    def status(self, value: int) -> None:
        self.top = (value >> SW_TOP_SHIFT) & 7
        self.fsw = value & 0xFFFF & ~(7 << SW_TOP_SHIFT)

    def tag_word(self) -> int:
        """The full 16-bit tag word (FSTENV/FSAVE), two bits per physical register."""
        word = 0
        for p in range(8):
            tag = tag_of(self.regs[p]) if self.valid >> p & 1 else TAG_EMPTY
            word |= tag << (2 * p)
        return word

    def set_tag_word(self, word: int) -> None:
        """FLDENV/FRSTOR: only empty (11) versus not empty is taken (§8.1.7)."""
        self.valid = sum(1 << p for p in range(8) if (word >> (2 * p)) & 3 != TAG_EMPTY)

    # -- MMX aliasing ------------------------------------------------------------
    def mmx_read(self, i: int) -> int:
        """MMi (64 bits): the significand of physical register Ri; TOP=0, tags valid."""
        self.top = 0
        self.valid = 0xFF
        return self.regs[i] & MASK64

    def mmx_write(self, i: int, value: int) -> None:
        """Write MMi: Ri = FFFFh:value (§9.5.1); TOP=0, tags valid."""
        self.top = 0
        self.valid = 0xFF
        self.regs[i] = (0xFFFF << 64) | (value & MASK64)

    def emms(self) -> None:
        """EMMS: all tags empty (SDM Vol. 2A "EMMS")."""
        self.valid = 0

    # -- FXSAVE image ------------------------------------------------------------
    def to_image(self, xmm: list[int], mxcsr: int, base: bytes = fxsave.DEFAULT_IMAGE) -> bytes:
        st_regs = [self.st(i) for i in range(8)]
        return fxsave.build(self.fcw, self.status, self.valid, self.fop, self.fip, self.fdp,
                            mxcsr, st_regs, xmm, base)

    def load_image(self, image: bytes) -> tuple[list[int], int]:
        """Take the x87 part of `image`; return (xmm, mxcsr) for the caller to keep."""
        fcw, fsw, ftw, fop, fip, fdp, mxcsr, _ = fxsave.head(image)
        self.fcw = fcw
        self.status = fsw
        self.valid = ftw
        self.fop = fop & 0x7FF
        self.fip, self.fdp = fip, fdp
        self.fcs = self.fds = 0
        for i in range(8):
            self.regs[(self.top + i) & 7] = fxsave.st(image, i)
        return [fxsave.xmm(image, i) for i in range(16)], mxcsr
