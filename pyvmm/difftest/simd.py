"""The MMX / SSE / SSE2 families of the differential tester.

The blocks use MM, XMM and 128-bit memory operands; both sides start from
the same FXSAVE image (random XMM and MM values, MXCSR with a random
rounding mode, FTZ, DAZ and sticky flags) and the comparison covers XMM0-15
(XMM0-7 outside 64-bit code), MM0-7 and MXCSR (SDM Vol. 2A "FXSAVE",
Table 3-53: MXCSR at byte 24, ST/MM at 32 + 16 i, XMM at 160 + 16 i).

Memory operands are mostly 16-byte aligned, sometimes not: the aligned forms'
#GP(0) is compared too.  Families: an encoding with an MM register is `mmx`
(MMX and the SSE integer instructions on MM registers), otherwise `sse` for
the SSE1 instructions and `sse2` for the rest.
"""

from __future__ import annotations

import random
import struct

from iced_x86 import (
    Code,
    CpuidFeature,
    Instruction,
    MemoryOperand,
    OpCodeInfo,
    OpCodeOperandKind,
    Register,
)
from iced_x86 import Mnemonic as M

from pyvmm.oracle.layout import DATA_BASE

K = OpCodeOperandKind
FAMILY_NAMES = ("mmx", "sse", "sse2", "ssefp", "sse2fp")

INTEGER = (M.PADDB, M.PADDW, M.PADDD, M.PADDQ, M.PSUBB, M.PSUBW, M.PSUBD, M.PSUBQ,
           M.PADDSB, M.PADDSW, M.PSUBSB, M.PSUBSW, M.PADDUSB, M.PADDUSW, M.PSUBUSB, M.PSUBUSW,
           M.PCMPEQB, M.PCMPEQW, M.PCMPEQD, M.PCMPGTB, M.PCMPGTW, M.PCMPGTD,
           M.PMINUB, M.PMAXUB, M.PMINSW, M.PMAXSW, M.PAVGB, M.PAVGW,
           M.PMULLW, M.PMULHW, M.PMULHUW, M.PMULUDQ, M.PMADDWD, M.PSADBW,
           M.PAND, M.PANDN, M.POR, M.PXOR,
           M.PSLLW, M.PSLLD, M.PSLLQ, M.PSRLW, M.PSRLD, M.PSRLQ, M.PSRAW, M.PSRAD,
           M.PSLLDQ, M.PSRLDQ,
           M.PUNPCKLBW, M.PUNPCKLWD, M.PUNPCKLDQ, M.PUNPCKLQDQ,
           M.PUNPCKHBW, M.PUNPCKHWD, M.PUNPCKHDQ, M.PUNPCKHQDQ,
           M.PACKSSWB, M.PACKSSDW, M.PACKUSWB, M.PSHUFD, M.PSHUFW, M.PSHUFLW, M.PSHUFHW,
           M.PINSRW, M.PEXTRW, M.PMOVMSKB, M.EMMS, M.MOVQ2DQ, M.MOVDQ2Q, M.MASKMOVQ,
           M.MOVNTQ, M.MASKMOVDQU, M.MOVNTDQ, M.MOVNTI, M.CLFLUSH, M.MOVD, M.MOVQ, M.MOVDQA,
           M.MOVDQU, M.MOVSD, M.MOVAPD, M.MOVUPD, M.MOVLPD, M.MOVHPD, M.MOVNTPD, M.MOVMSKPD,
           M.ANDPD, M.ANDNPD, M.ORPD, M.XORPD, M.SHUFPD, M.UNPCKLPD, M.UNPCKHPD)
SSE1 = (M.MOVAPS, M.MOVUPS, M.MOVSS, M.MOVLPS, M.MOVHPS, M.MOVHLPS, M.MOVLHPS, M.MOVNTPS,
        M.ANDPS, M.ANDNPS, M.ORPS, M.XORPS, M.SHUFPS, M.UNPCKLPS, M.UNPCKHPS, M.MOVMSKPS,
        M.LDMXCSR, M.STMXCSR)
# Floating point (MXCSR rounding, DAZ/FTZ, flags, #XM): families ssefp (SSE) and sse2fp.
# RCPPS/RCPSS/RSQRTPS/RSQRTSS are left out: their approximation is the vendor's own
# (tests/differential/test_sse_fp_vs_cpu.py checks them against the SDM bound).
_ARITH = ("ADD", "SUB", "MUL", "DIV", "SQRT", "MIN", "MAX", "CMP")
SSE1_FP = tuple(getattr(M, n + s) for n in _ARITH for s in ("PS", "SS")) + (
    M.COMISS, M.UCOMISS, M.CVTSI2SS, M.CVTSS2SI, M.CVTTSS2SI, M.CVTPI2PS, M.CVTPS2PI,
    M.CVTTPS2PI)
SSE2_FP = tuple(getattr(M, n + s) for n in _ARITH for s in ("PD", "SD")) + (
    M.COMISD, M.UCOMISD, M.CVTSI2SD, M.CVTSD2SI, M.CVTTSD2SI, M.CVTSS2SD, M.CVTSD2SS,
    M.CVTPS2PD, M.CVTPD2PS, M.CVTDQ2PS, M.CVTPS2DQ, M.CVTTPS2DQ, M.CVTDQ2PD, M.CVTPD2DQ,
    M.CVTTPD2DQ, M.CVTPI2PD, M.CVTPD2PI, M.CVTTPD2PI)
_SSE1_FP, _SSE2_FP = frozenset(SSE1_FP), frozenset(SSE2_FP)
MNEMONICS = INTEGER + SSE1 + SSE1_FP + SSE2_FP
_SSE1 = frozenset(SSE1)
_MNEMONIC_SET = frozenset(MNEMONICS)
_FEATURES = frozenset({CpuidFeature.MMX, CpuidFeature.SSE, CpuidFeature.SSE2,
                       CpuidFeature.CLFSH})
_BASE = frozenset({CpuidFeature.X64, CpuidFeature.INTEL386})
_MM_KINDS = frozenset({K.MM_REG, K.MM_RM, K.MM_OR_MEM})
VECTOR_KINDS = frozenset({K.XMM_REG, K.XMM_RM, K.XMM_OR_MEM}) | _MM_KINDS
SPECIAL = frozenset({M.MASKMOVDQU, M.MASKMOVQ})
PRELUDE_MNEMONICS = frozenset({M.LDMXCSR, M.MASKMOVDQU, M.MASKMOVQ})
ALIGNED_CHANCE = 0.85

FX_MXCSR, FX_MM, FX_XMM = 24, 32, 160
MXCSR_DEFAULT = 0x1F80


_CPUID_OF_CODE: dict[int, frozenset[int]] = {}


def _features(code: int) -> frozenset[int]:
    """The CPUID features of an encoding (iced reports them per decoded instruction)."""
    if code not in _CPUID_OF_CODE:
        instr = Instruction()
        instr.code = code
        _CPUID_OF_CODE[code] = frozenset(instr.cpuid_features())
    return _CPUID_OF_CODE[code]


def family_of(info: OpCodeInfo, mode: int) -> str | None:
    """The SIMD family of one encoding, or None if it is no MMX/SSE/SSE2 form
    (later extensions sharing a mnemonic, e.g. SSE4.1 PEXTRW m16, are left out)."""
    if not _features(info.code) & _FEATURES or _features(info.code) - _FEATURES - _BASE:
        return None
    kinds = {info.op_kind(i) for i in range(info.op_count)}
    if info.mnemonic in SPECIAL:
        if info.address_size not in (0, mode):
            return None
        return "mmx" if info.mnemonic == M.MASKMOVQ else "sse2"
    if kinds & {K.SEG_RDI}:
        return None
    if info.mnemonic in _SSE1_FP:
        return "ssefp"
    if info.mnemonic in _SSE2_FP:
        return "sse2fp" if kinds & VECTOR_KINDS else None  # CMPSD: the string form
    if kinds & _MM_KINDS or info.mnemonic in (M.EMMS, M.MOVNTQ):
        return "mmx"
    if not kinds & VECTOR_KINDS and info.mnemonic not in (M.LDMXCSR, M.STMXCSR, M.MOVNTI,
                                                          M.CLFLUSH, M.EMMS):
        return None  # MOVSD/MOVQ string or GPR forms of a shared mnemonic
    return "sse" if info.mnemonic in _SSE1 else "sse2"


def handles(mnemonic: int, kind: int) -> bool:
    return kind in VECTOR_KINDS or (kind == K.MEM and mnemonic in _MNEMONIC_SET)


def _vector_reg(gen, kind: int) -> Register:  # noqa: ANN001
    if kind in _MM_KINDS:
        return Register.MM0 + gen.rng.randrange(8)
    return Register.XMM0 + gen.rng.randrange(16 if gen.mode == 64 else 8)


def simd_mem(gen) -> MemoryOperand:  # noqa: ANN001
    """Mostly a 16-byte aligned operand inside the data area; else any data operand."""
    r = gen.rng
    if r.random() >= ALIGNED_CHANCE:
        return gen.data_mem()
    if gen.mode == 16:
        return MemoryOperand(displ=r.randrange(0x100, 0xFF00) & ~15, displ_size=2)
    from pyvmm.difftest.generator import PTR_HI, PTR_LO
    return MemoryOperand(displ=DATA_BASE + (r.randrange(PTR_LO, PTR_HI) & ~15), displ_size=4)


def operand(gen, info: OpCodeInfo, kind: int) -> tuple[str, object]:  # noqa: ANN001
    if kind in (K.XMM_REG, K.XMM_RM, K.MM_REG, K.MM_RM):
        return "reg", _vector_reg(gen, kind)
    if kind == K.MEM or gen.rng.random() < 0.5:
        return "mem", simd_mem(gen)
    return "reg", _vector_reg(gen, kind)


def build_special(gen, code: int) -> Instruction:  # noqa: ANN001
    """MASKMOVDQU / MASKMOVQ: the store goes to DS:rDI (the prelude points rDI there)."""
    info = OpCodeInfo(code)
    kind = K.MM_REG if info.mnemonic == M.MASKMOVQ else K.XMM_REG
    a, b = _vector_reg(gen, kind), _vector_reg(gen, kind)
    create = Instruction.create_maskmovq if info.mnemonic == M.MASKMOVQ else \
        Instruction.create_maskmovdqu
    return create(gen.mode, a, b, Register.NONE)


def prelude(gen, instr: Instruction) -> list[Instruction]:  # noqa: ANN001
    r = gen.rng
    if instr.mnemonic == M.LDMXCSR:
        value = random_mxcsr(r) if r.random() < 0.95 else r.getrandbits(32)
        return [Instruction.create_mem_u32(Code.MOV_RM32_IMM32, gen.last_mem, value)]
    # MASKMOVDQU/MASKMOVQ: rDI inside the data area (16-bit: any DI is).
    if gen.mode == 16 or gen.ptr == Register.RDI:
        return []
    if Register.RDI in gen.reserved:
        from pyvmm.difftest.generator import _Reject
        raise _Reject
    from pyvmm.difftest.generator import PTR_HI, PTR_LO
    return [gen.mov_imm(Register.RDI, DATA_BASE + r.randrange(PTR_LO, PTR_HI))]


def touches_simd(body: list[Instruction]) -> bool:
    return any(_FEATURES.intersection(i.cpuid_features()) for i in body)


def random_mxcsr(r: random.Random) -> int:
    """Random RC, FTZ, DAZ and sticky flags; every exception masked, or (one time in
    four) a random set of them unmasked, so the #XM rules are compared too."""
    masks = 0x3F if r.random() < 0.75 else r.getrandbits(6)
    return masks << 7 | r.getrandbits(6) | r.randrange(4) << 13 | r.getrandbits(1) << 15 \
        | r.getrandbits(1) << 6


# Floating-point lane formats: (exponent bits, fraction bits).
_FP_FORMATS = {32: (8, 23), 64: (11, 52)}


def fp_value(r: random.Random, bits: int) -> int:
    """A binary32/64 value, often a special one: +-0, denormals, +-inf, QNaN/SNaN,
    the extremes of the normal range, small integers, values near 1."""
    e_bits, f_bits = _FP_FORMATS[bits]
    e_max = (1 << e_bits) - 1
    bias = e_max >> 1
    sign = r.getrandbits(1) << (bits - 1)
    frac = r.getrandbits(f_bits)
    quiet = 1 << (f_bits - 1)
    pick = r.randrange(12)
    if pick == 0:
        return sign
    if pick == 1:
        return sign | (frac or 1)  # denormal
    if pick == 2:
        return sign | e_max << f_bits  # infinity
    if pick == 3:
        return sign | e_max << f_bits | quiet | (frac & (quiet - 1))  # QNaN
    if pick == 4:
        return sign | e_max << f_bits | ((frac & (quiet - 1)) or 1)  # SNaN
    if pick == 5:
        return sign | r.choice((1, 2, e_max - 1, e_max - 2)) << f_bits | frac  # extremes
    if pick == 6:  # a small integer (exact conversions, ties)
        n = r.randrange(1, 1 << 12)
        e = n.bit_length() - 1
        return sign | (bias + e) << f_bits | ((n << f_bits >> e) & ((1 << f_bits) - 1))
    if pick == 7:  # near the integer-conversion limits (2**31, 2**63)
        return sign | (bias + r.choice((30, 31, 32, 62, 63, 64))) << f_bits | frac
    if pick == 8:  # few significant bits: exact sums, halfway cases
        return sign | (bias + r.randrange(-4, 5)) << f_bits | (frac >> r.randrange(f_bits))
    if pick == 9:
        return sign | (bias + r.randrange(-30, 31)) << f_bits | frac
    return r.getrandbits(bits)


def _lane_value(r: random.Random, bits: int) -> int:
    mask = (1 << bits) - 1
    pick = r.random()
    if pick < 0.3:
        return r.choice((0, mask, mask >> 1, (mask >> 1) + 1, 1, 0x7F, 0x80, 0xFF))
    return r.getrandbits(bits)


def random_vector(r: random.Random, bits: int) -> int:
    """Integer lanes of 8-64 bits, or binary32/binary64 lanes (`fp_value`)."""
    lane = r.choice((8, 16, 32, 64, "f32", "f64", "f32", "f64"))
    if isinstance(lane, str):
        width = int(lane[1:])
        return sum(fp_value(r, width) << (width * k) for k in range(bits // width))
    value = 0
    for k in range(bits // lane):
        value |= _lane_value(r, lane) << (lane * k)
    return value


def initial_fxsave(r: random.Random, body: list[Instruction]) -> bytes:
    image = bytearray(512)
    struct.pack_into("<H", image, 0, 0x037F)
    struct.pack_into("<II", image, FX_MXCSR, random_mxcsr(r), 0xFFFF)
    for i in range(8):
        struct.pack_into("<QH", image, FX_MM + 16 * i, random_vector(r, 64), 0xFFFF)
    for i in range(16):
        image[FX_XMM + 16 * i:FX_XMM + 16 * i + 16] = random_vector(r, 128).to_bytes(16, "little")
    return bytes(image)


def mxcsr_of(image: bytes) -> int:
    return struct.unpack_from("<I", image, FX_MXCSR)[0]


def xmm_of(image: bytes, i: int) -> int:
    return int.from_bytes(image[FX_XMM + 16 * i:FX_XMM + 16 * i + 16], "little")


def mm_of(image: bytes, i: int) -> int:
    return struct.unpack_from("<Q", image, FX_MM + 16 * i)[0]


def state_image(mxcsr: int, mm: list[int], xmm: list[int]) -> bytes:
    """An FXSAVE image holding just what the comparison reads."""
    image = bytearray(512)
    struct.pack_into("<I", image, FX_MXCSR, mxcsr)
    for i, value in enumerate(mm):
        struct.pack_into("<Q", image, FX_MM + 16 * i, value)
    for i, value in enumerate(xmm):
        image[FX_XMM + 16 * i:FX_XMM + 16 * i + 16] = value.to_bytes(16, "little")
    return bytes(image)


def compare_state(mode: int, native: bytes, engine: bytes) -> list[tuple[str, str, str]]:
    """(what, native, engine) for every differing XMM, MM register and MXCSR."""
    out = []
    if mxcsr_of(native) != mxcsr_of(engine):
        out.append(("mxcsr", f"{mxcsr_of(native):#06x}", f"{mxcsr_of(engine):#06x}"))
    for i in range(8):
        if mm_of(native, i) != mm_of(engine, i):
            out.append((f"mm{i}", f"{mm_of(native, i):#018x}", f"{mm_of(engine, i):#018x}"))
    for i in range(16 if mode == 64 else 8):
        if xmm_of(native, i) != xmm_of(engine, i):
            out.append((f"xmm{i}", f"{xmm_of(native, i):#034x}", f"{xmm_of(engine, i):#034x}"))
    return out

