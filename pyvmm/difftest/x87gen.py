"""The `x87` family: random x87 FPU sequences (64-bit code).

A block is FNINIT; FLDCW (a random control word: every rounding control,
every precision control, all exceptions masked or some unmasked), then
random x87 instructions, then FNSAVE of the whole x87 state (control, status
with C0-C3/TOP/ES/SF, full tag word, last opcode/pointers and ST(0)-ST(7);
SDM Vol. 1 Figure 8-10) into the data area, which the comparison covers.
Memory operands address, through RBX, a pool of values biased toward
denormals, NaNs, infinities, zeros and values near the format limits in
every memory format (m32fp, m64fp, m80fp, m16/m32/m64int, m80bcd); stores
go to the pool too.  An unmasked exception ends the block in #MF at the
next waiting x87 instruction on both sides (CR0.NE=1 in the engine;
SIGFPE, trap 16, natively).  FNSAVE's two selector words are environment
numbers and are overwritten before the comparison (see FCS_OFFSET).

Which instructions exist comes from iced's `OpCodeInfo` tables.
"""

from __future__ import annotations

import random
import struct

from iced_x86 import Code, Instruction, MemoryOperand, MemorySize, Mnemonic, OpCodeInfo, Register
from iced_x86 import OpCodeOperandKind as K

from pyvmm.difftest.generator import LABEL_BASE, LABEL_GROUP, LABEL_STEP, TestCase, case_rng
from pyvmm.oracle.layout import DATA_BASE, DATA_SIZE

M = Mnemonic
POOL_SIZE = 0x1000  # operands live at DATA_BASE .. +POOL_SIZE
SAVE_OFFSET = 0x2000  # FNSAVE image (108 bytes)
# FNSAVE's FCS (offset 16) and FDS (offset 24) hold the CS and operand-segment selectors
# (SDM Vol. 1 §8.1.8, Figure 8-9). They are the environment's selector numbers (0x33/0x2B
# for the Linux user-mode oracle, the tester's own GDT in the engine), not x87 state, so
# the block overwrites both words after FNSAVE; every other byte of the image is compared.
FCS_OFFSET, FDS_OFFSET = 16, 24
SELECTOR_FILL = 0x5A5A
# FOP (offset 18, 11 bits) and FDP (offset 20): the last non-control instruction's opcode
# and data pointer (§8.1.8-9).  A processor with CPUID.(EAX=07H,ECX=0):EBX[6]
# (FDP_EXCPTN_ONLY) updates FDP only for an instruction with an unmasked exception, and
# with the FOP compatibility mode off (§8.1.9.1, IA32_MISC_ENABLE[2], the default) FOP
# likewise; the engine's P6-class CPU updates both every time.  `unrecorded_pointers`
# measures the host; the words it leaves alone are overwritten like FCS/FDS.
FOP_OFFSET, FDP_OFFSET = 18, 20

MNEMONICS = (
    M.FLD, M.FILD, M.FBLD, M.FLDZ, M.FLD1, M.FLDPI, M.FLDL2E, M.FLDL2T, M.FLDLG2, M.FLDLN2,
    M.FST, M.FSTP, M.FIST, M.FISTP, M.FISTTP, M.FBSTP,
    M.FADD, M.FADDP, M.FIADD, M.FSUB, M.FSUBP, M.FISUB, M.FSUBR, M.FSUBRP, M.FISUBR,
    M.FMUL, M.FMULP, M.FIMUL, M.FDIV, M.FDIVP, M.FIDIV, M.FDIVR, M.FDIVRP, M.FIDIVR,
    M.FCHS, M.FABS, M.FSQRT, M.FRNDINT, M.FPREM, M.FPREM1, M.FSCALE, M.FXTRACT,
    M.FCOM, M.FCOMP, M.FCOMPP, M.FUCOM, M.FUCOMP, M.FUCOMPP, M.FICOM, M.FICOMP,
    M.FCOMI, M.FCOMIP, M.FUCOMI, M.FUCOMIP, M.FTST, M.FXAM,
    M.FXCH, M.FCMOVB, M.FCMOVE, M.FCMOVBE, M.FCMOVU, M.FCMOVNB, M.FCMOVNE, M.FCMOVNBE,
    M.FCMOVNU, M.FFREE, M.FINCSTP, M.FDECSTP, M.FNOP,
    M.FNSTSW, M.FNSTCW, M.FLDCW, M.FNCLEX, M.WAIT,
)
# FCOMI/FCOMIP/FUCOMI/FUCOMIP: the SDM (Vol. 2A "FCOMI/FCOMIP/FUCOMI/FUCOMIP") sets
# C1 to 0 and, with #IA unmasked, leaves ZF/PF/CF alone; the AMD oracle keeps C1 and
# sets ZF/PF/CF to 111 either way.  The engine follows the SDM.  So the family draws
# them only while IM=1, and follows each with FXCH ST(0), which both define as C1 := 0,
# leaving the rest compared.  Likewise FCOM/FUCOM/FICOM/FTST with #IA or #D unmasked:
# the SDM leaves C3/C2/C0 alone, the AMD oracle writes the comparison.  So no compare is
# drawn while IM or DM is 0 (FLDZ instead).
_EFLAGS_COMPARES = {M.FCOMI, M.FCOMIP, M.FUCOMI, M.FUCOMIP}
_COMPARES = _EFLAGS_COMPARES | {M.FCOM, M.FCOMP, M.FCOMPP, M.FUCOM, M.FUCOMP, M.FUCOMPP,
                                M.FICOM, M.FICOMP, M.FTST}
IM, DM = 1, 2  # FCW bits 0, 1: invalid-operation and denormal-operand masks
# FLD m32fp/m64fp of a denormal with #D unmasked: the SDM (Vol. 1 §8.5.2) leaves TOP and
# the stack unchanged; the host CPUs measured (AMD; Intel Xeon, 2026-12-08) load the value
# anyway.  The engine follows the SDM; the family loads only m80fp or a register while
# DM=0 (`_codes_for`).
_FLD_M32_M64 = {Code.FLD_M32FP, Code.FLD_M64FP}
# Loads are drawn more often so the stack is usually populated.
_LOADS = (M.FLD, M.FILD, M.FLDZ, M.FLD1, M.FLDPI)
_SUPPORTED = {K.ST0, K.STI_OPCODE, K.MEM, K.AX}


def _codes() -> dict[int, list[int]]:
    wanted = set(MNEMONICS)
    out: dict[int, list[int]] = {}
    for code in range(1, 5000):
        try:
            info = OpCodeInfo(code)
        except (ValueError, TypeError):
            break
        if info.mnemonic not in wanted or info.encoding != 0 or not info.is_available_in_mode(64):
            continue
        kinds = [info.op_kind(i) for i in range(info.op_count)]
        if any(k not in _SUPPORTED for k in kinds):
            continue
        if info.mnemonic == M.FNSTSW and info.op_count and kinds[0] == K.AX:
            pass
        out.setdefault(info.mnemonic, []).append(code)
    return out


_CODES = _codes()


def _codes_for(m: int, cw: int) -> list[int]:
    """The encodings of `m` the family draws under control word `cw` (see _FLD_M32_M64)."""
    if m == M.FLD and not cw & DM:
        return [c for c in _CODES[m] if c not in _FLD_M32_M64]
    return _CODES[m]


def random_extended(rng: random.Random) -> int:
    sign = rng.getrandbits(1) << 79
    kind = rng.randrange(12)
    sig = rng.getrandbits(64) | (1 << 63)
    if kind == 0:
        return sign | rng.getrandbits(rng.choice((8, 40, 63)))  # denormal or zero
    if kind == 1:
        return sign | (0x7FFF << 64) | (1 << 63) | rng.choice(
            [0, 1 << 62, rng.getrandbits(62), (1 << 62) | rng.getrandbits(62)])
    if kind == 2:
        return sign | (rng.choice([1, 2, 0x7FFE, 0x7FFD, 0x3F81, 0x3C01, 0x407F, 0x43FE])
                       << 64) | sig
    if kind == 3:
        return sign | (rng.randrange(0x3FFF, 0x403E) << 64) | (sig & ~((1 << 40) - 1))
    if kind == 4:
        return sign  # zero
    return sign | (rng.randrange(0x3F00, 0x4100) << 64) | sig


def _random_bits(rng: random.Random, exp_bits: int, frac_bits: int) -> int:
    sign = rng.getrandbits(1) << (exp_bits + frac_bits)
    emax = (1 << exp_bits) - 1
    kind = rng.randrange(8)
    frac = rng.getrandbits(frac_bits)
    if kind == 0:
        e = 0
    elif kind == 1:
        e = emax
        frac = rng.choice([0, frac, 1 << (frac_bits - 1), 1])
    elif kind == 2:
        e = rng.choice([1, 2, emax - 1])
    else:
        e = rng.randrange((emax >> 1) - 40, (emax >> 1) + 40)
    return sign | (e << frac_bits) | frac


def pool_data(rng: random.Random) -> bytearray:
    data = bytearray(rng.randbytes(DATA_SIZE))
    for off in range(0, POOL_SIZE, 16):
        choice = rng.randrange(7)
        if choice == 0:
            value = random_extended(rng).to_bytes(10, "little")
        elif choice == 1:
            value = struct.pack("<Q", _random_bits(rng, 11, 52))
        elif choice == 2:
            value = struct.pack("<I", _random_bits(rng, 8, 23))
        elif choice == 3:
            value = rng.choice([0, 1, -1, 2**15 - 1, -2**15, 2**31 - 1, -2**31, 2**63 - 1,
                                -2**63, rng.randrange(-2**63, 2**63)]).to_bytes(
                8, "little", signed=True)
        elif choice == 4:  # packed BCD: 18 digits and a sign
            digits = rng.randrange(10 ** rng.randrange(1, 19))
            bcd = sum(int(d) << (4 * i) for i, d in enumerate(reversed(str(digits))))
            value = (bcd | (rng.getrandbits(1) << 79)).to_bytes(10, "little")
        else:
            value = rng.randbytes(10)
        data[off:off + len(value)] = value
    return data


def random_cw(rng: random.Random) -> int:
    masks = 0x3F if rng.random() < 0.75 else rng.getrandbits(6)
    pc = rng.choice((0, 2, 3))
    return 0x40 | masks | (pc << 8) | (rng.randrange(4) << 10)


def _mem(disp: int) -> MemoryOperand:
    return MemoryOperand(Register.RBX, displ=disp, displ_size=8)


def _build(rng: random.Random, code: int) -> Instruction:
    info = OpCodeInfo(code)
    kinds = [info.op_kind(i) for i in range(info.op_count)]
    if not kinds:
        return Instruction.create(code)
    if K.MEM in kinds:
        disp = rng.randrange(0, POOL_SIZE, 16)
        if info.mnemonic == M.FLDCW:
            disp = POOL_SIZE + 2 * rng.randrange(16)  # a control word table
        return Instruction.create_mem(code, _mem(disp))
    if kinds == [K.AX]:
        return Instruction.create_reg(code, Register.AX)
    regs = [Register.ST0 if k == K.ST0 else Register.ST0 + rng.randrange(8) for k in kinds]
    if len(regs) == 1:
        return Instruction.create_reg(code, regs[0])
    return Instruction.create_reg_reg(code, regs[0], regs[1])


def unrecorded_pointers(runner) -> tuple[tuple[int, int], ...]:  # noqa: ANN001
    """(offset, size) of FOP and FDP in the FNSAVE image when the host CPU leaves them 0
    after a masked FLD m32fp (see FOP_OFFSET); () when it records both."""
    from pyvmm.difftest.encode import encode_case
    from pyvmm.difftest.native_side import run_native
    data = bytearray(DATA_SIZE)
    struct.pack_into("<f", data, 0x10, 1.0)
    body = [Instruction.create(Code.FNINIT), Instruction.create_mem(Code.FLD_M32FP, _mem(0x10)),
            Instruction.create_mem(Code.FNSAVE_M108BYTE, _mem(SAVE_OFFSET))]
    for k, ins in enumerate(body):
        ins.ip = LABEL_BASE[64] + k * LABEL_STEP
    gprs = [0] * 16
    gprs[3], gprs[4] = DATA_BASE, DATA_BASE + DATA_SIZE - 0x100
    case = TestCase(64, 0, 0, body, gprs, 0x2, bytes(data), 1, (Register.RBX,), ("x87",))
    image = run_native(runner, encode_case(case, runner.info.exit_stub)).data[SAVE_OFFSET:]
    fop = struct.unpack_from("<H", image, FOP_OFFSET)[0] & 0x7FF
    fdp = struct.unpack_from("<I", image, FDP_OFFSET)[0]
    return tuple(field for field, value in (((FOP_OFFSET, 2), fop), ((FDP_OFFSET, 4), fdp))
                 if value == 0)


def generate_x87_case(mode: int, seed: int, index: int, length: int = 8,
                      blank: tuple[tuple[int, int], ...] = ()) -> TestCase:
    """Block `index` of `seed`; `blank`: (offset, size) of FNSAVE fields to overwrite
    besides FCS/FDS (`unrecorded_pointers`)."""
    if mode != 64:
        raise ValueError("the x87 family runs in 64-bit code")
    rng = case_rng(seed, mode, index)
    data = pool_data(rng)
    cws = [random_cw(rng) for _ in range(16)]
    for i, cw in enumerate(cws):
        struct.pack_into("<H", data, POOL_SIZE + 2 * i, cw)
    slot = rng.randrange(16)
    cw = cws[slot]  # the control word in force (FLDCW only reads the table)
    body = [Instruction.create(Code.FNINIT),
            Instruction.create_mem(Code.FLDCW_M2BYTE, _mem(POOL_SIZE + 2 * slot))]
    for _ in range(rng.randrange(1, 4)):
        body.append(_build(rng, rng.choice(_codes_for(rng.choice(_LOADS), cw))))
    mnemonics = [m for m in MNEMONICS if m in _CODES]
    for _ in range(length * 2):
        m = rng.choice(_LOADS) if rng.random() < 0.25 else rng.choice(mnemonics)
        if m in _COMPARES and cw & (IM | DM) != IM | DM:
            m = M.FLDZ  # unmasked #IA/#D: the compare's result is vendor-specific (above)
        ins = _build(rng, rng.choice(_codes_for(m, cw)))
        body.append(ins)
        if m == M.FLDCW:
            cw = cws[(ins.memory_displacement - POOL_SIZE) // 2]
        elif m in _EFLAGS_COMPARES:
            # FXCH ST(0): C1 := 0
            body.append(Instruction.create_reg_reg(Code.FXCH_ST0_STI, Register.ST0, Register.ST0))
    body.append(Instruction.create_mem(Code.FNSAVE_M108BYTE, _mem(SAVE_OFFSET)))
    for field, size in ((FCS_OFFSET, 2), (FDS_OFFSET, 2), *blank):
        mov = Code.MOV_RM16_IMM16 if size == 2 else Code.MOV_RM32_IMM32
        body.append(Instruction.create_mem_u32(mov, _mem(SAVE_OFFSET + field), SELECTOR_FILL))
    for k, ins in enumerate(body):
        ins.ip = LABEL_BASE[mode] + k * LABEL_STEP
    groups = (len(body) * LABEL_STEP) // LABEL_GROUP + 1
    gprs = [rng.getrandbits(64) for _ in range(16)]
    gprs[3] = DATA_BASE  # RBX
    gprs[4] = DATA_BASE + DATA_SIZE - 0x100  # RSP inside the data area
    rflags = 0x2 | (rng.getrandbits(12) & 0x8D5)
    return TestCase(mode, seed, index, body, gprs, 0x2 | (rflags & 0xCD5), bytes(data), groups,
                    (Register.RBX,), ("x87",))


__all__ = ["generate_x87_case", "MemorySize"]
