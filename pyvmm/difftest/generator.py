"""Random blocks of general integer instructions, built with the iced-x86 encoder.

Which instructions exist, in which modes and with which operand kinds comes
from iced's `OpCodeInfo` tables (never hand-assembled bytes).  A block is a
list of *groups*: an optional short prelude that makes the main instruction
meaningful (e.g. a count in CX before REP MOVS) followed by the instruction.
Branches only go forward, to the start of a later group or to the block's end.

Memory operands in 32/64-bit code address the data area through two
registers chosen per block, a pointer P (value inside the data area) and an
index X (small value), which no generated instruction may write; RSP is also
only moved by PUSH/POP.  In 16-bit code every offset lies inside the 64 KiB
data segment, so registers are unconstrained.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from iced_x86 import (
    Code,
    Encoder,
    Instruction,
    InstructionInfoFactory,
    MemoryOperand,
    Mnemonic,
    OpAccess,
    OpCodeInfo,
    OpCodeOperandKind,
    OpKind,
    Register,
    RegisterExt,
    RepPrefixKind,
)

from pyvmm.cpu.state import (
    FLAG_AF,
    FLAG_CF,
    FLAG_DF,
    FLAG_OF,
    FLAG_PF,
    FLAG_RESERVED1,
    FLAG_SF,
    FLAG_ZF,
)
from pyvmm.difftest import flags as flaginfo
from pyvmm.difftest import simd
from pyvmm.oracle.layout import CODE_BASE, DATA_BASE, DATA_SIZE

K = OpCodeOperandKind
M = Mnemonic

# Fake addresses used as branch labels while building (BlockEncoder relocates
# them).  They must fit the mode's IP width: 16-bit labels live in 0x8000-0xFFFF.
LABEL_BASE = {16: 0x8000, 32: 0x7000_0000, 64: 0x7000_0000}
LABEL_GROUP = 0x100  # label of group g = LABEL_BASE[mode] + g * LABEL_GROUP
LABEL_STEP = 8
MAX_GROUPS = 0x7F  # so 16-bit labels stay below 0x10000

# Pointer registers keep their values in [DATA_BASE + PTR_LO, DATA_BASE + PTR_HI);
# with index <= INDEX_MAX scaled by 8 and |disp| <= DISP_MAX every access stays inside.
PTR_LO, PTR_HI = 0x3000, 0xD000
INDEX_MAX = 0x100
DISP_MAX = 0x800
STACK_LO, STACK_HI = 0x6000, 0xA000
GUARD_PAGE = DATA_BASE + DATA_SIZE  # mapped on neither side: accesses there #PF
GUARD_CHANCE = 0.08
# --wrap: address arithmetic that wraps at the address size (SDM Vol. 1 §3.7.5: the
# effective address is truncated to the address size).  The index register starts at
# 2^32 - k (32-bit addressing: it acts as -k for every scale), or a 16-bit address wraps
# at 64 KiB, or a disp8 sits at the ends of its signed range (-0x80, 0x7F).
WRAP_CHANCE = 0.5
WRAP_K_MAX = 0x100
MAX_REP = 16
GUARD_STRING_CHANCE = 0.4  # with --guard: string instructions that run into the guard page

_WRITE_ACCESS = frozenset({OpAccess.WRITE, OpAccess.COND_WRITE, OpAccess.READ_WRITE,
                           OpAccess.READ_COND_WRITE})

GPR64 = (Register.RAX, Register.RCX, Register.RDX, Register.RBX, Register.RSP, Register.RBP,
         Register.RSI, Register.RDI, Register.R8, Register.R9, Register.R10, Register.R11,
         Register.R12, Register.R13, Register.R14, Register.R15)
GPR32 = (Register.EAX, Register.ECX, Register.EDX, Register.EBX, Register.ESP, Register.EBP,
         Register.ESI, Register.EDI, Register.R8D, Register.R9D, Register.R10D, Register.R11D,
         Register.R12D, Register.R13D, Register.R14D, Register.R15D)
GPR16 = (Register.AX, Register.CX, Register.DX, Register.BX, Register.SP, Register.BP,
         Register.SI, Register.DI, Register.R8W, Register.R9W, Register.R10W, Register.R11W,
         Register.R12W, Register.R13W, Register.R14W, Register.R15W)
GPR8 = (Register.AL, Register.CL, Register.DL, Register.BL, Register.SPL, Register.BPL,
        Register.SIL, Register.DIL, Register.R8L, Register.R9L, Register.R10L, Register.R11L,
        Register.R12L, Register.R13L, Register.R14L, Register.R15L)
GPR8_HIGH = (Register.AH, Register.CH, Register.DH, Register.BH)


def registers(size: int, mode: int) -> tuple[Register, ...]:
    """General registers of `size` bytes encodable in `mode`-bit code."""
    count = 16 if mode == 64 else 8
    if size == 1:
        return GPR8[:count] + GPR8_HIGH if mode == 64 else GPR8[:4] + GPR8_HIGH
    table = {2: GPR16, 4: GPR32, 8: GPR64}[size]
    return table[:count]


# Mnemonic families the generator draws from; each family is equally likely.
FAMILIES: dict[str, tuple[Mnemonic, ...]] = {
    "alu": (M.ADD, M.ADC, M.SUB, M.SBB, M.AND, M.OR, M.XOR, M.CMP, M.TEST),
    "unary": (M.INC, M.DEC, M.NEG, M.NOT),
    "shift": (M.SHL, M.SHR, M.SAR, M.ROL, M.ROR, M.RCL, M.RCR),
    "muldiv": (M.MUL, M.IMUL, M.DIV, M.IDIV),
    "move": (M.MOV, M.MOVZX, M.MOVSX, M.MOVSXD, M.LEA, M.XCHG, M.BSWAP),
    "atomic": (M.XADD, M.CMPXCHG),
    "bits": (M.BT, M.BTS, M.BTR, M.BTC, M.BSF, M.BSR),
    "setcc": (M.SETO, M.SETNO, M.SETB, M.SETAE, M.SETE, M.SETNE, M.SETBE, M.SETA, M.SETS,
              M.SETNS, M.SETP, M.SETNP, M.SETL, M.SETGE, M.SETLE, M.SETG),
    "cmovcc": (M.CMOVO, M.CMOVNO, M.CMOVB, M.CMOVAE, M.CMOVE, M.CMOVNE, M.CMOVBE, M.CMOVA,
               M.CMOVS, M.CMOVNS, M.CMOVP, M.CMOVNP, M.CMOVL, M.CMOVGE, M.CMOVLE, M.CMOVG),
    "convert": (M.CBW, M.CWDE, M.CDQE, M.CWD, M.CDQ, M.CQO, M.LAHF, M.SAHF),
    "flagops": (M.CLC, M.STC, M.CMC, M.CLD, M.STD),
    "stack": (M.PUSH, M.POP),
    "string": (M.MOVSB, M.MOVSW, M.MOVSD, M.MOVSQ, M.STOSB, M.STOSW, M.STOSD, M.STOSQ,
               M.LODSB, M.LODSW, M.LODSD, M.LODSQ, M.CMPSB, M.CMPSW, M.CMPSD, M.CMPSQ,
               M.SCASB, M.SCASW, M.SCASD, M.SCASQ),
    "branch": (M.JO, M.JNO, M.JB, M.JAE, M.JE, M.JNE, M.JBE, M.JA, M.JS, M.JNS, M.JP, M.JNP,
               M.JL, M.JGE, M.JLE, M.JG, M.JMP, M.LOOP, M.LOOPE, M.LOOPNE, M.JCXZ, M.JECXZ,
               M.JRCXZ),
    "frame": (M.ENTER, M.LEAVE, M.PUSHF, M.PUSHFD, M.PUSHFQ, M.POPF, M.POPFD, M.POPFQ,
              M.PUSHA, M.PUSHAD, M.POPA, M.POPAD),
    "bcd": (M.DAA, M.DAS, M.AAA, M.AAS, M.AAM, M.AAD),
    "cmpxchg8b": (M.CMPXCHG8B,),
    "dshift": (M.SHLD, M.SHRD),
    "xlat": (M.XLATB,),
    # A near CALL to a subroutine inside the block: CALL sub; JMP next; sub: insn; RET.
    "call": (M.CALL,),
    # MMX / SSE / SSE2 (pyvmm.difftest.simd): one mnemonic list; an encoding's family
    # follows from its registers (MM -> mmx) and its CPUID feature (SSE or SSE2).
    "mmx": simd.MNEMONICS, "sse": simd.MNEMONICS, "sse2": simd.MNEMONICS,
    "ssefp": simd.MNEMONICS, "sse2fp": simd.MNEMONICS,
}

# Encodings left out on purpose: BSWAP r16 has an undefined result (SDM Vol. 2A
# "BSWAP"); SAL /6 and TEST F6/F7 /1 are undocumented aliases; CMPXCHG486 (0F A6/A7) is
# an early-stepping 486 opcode, #UD on everything since.
EXCLUDED_CODES = frozenset({
    Code.BSWAP_R16,
    Code.CMPXCHG486_RM8_R8, Code.CMPXCHG486_RM16_R16, Code.CMPXCHG486_RM32_R32,
    Code.TEST_RM8_IMM8_F6R1, Code.TEST_RM16_IMM16_F7R1, Code.TEST_RM32_IMM32_F7R1,
    Code.TEST_RM64_IMM32_F7R1,
    Code.SAL_RM8_1, Code.SAL_RM16_1, Code.SAL_RM32_1, Code.SAL_RM64_1,
    Code.SAL_RM8_CL, Code.SAL_RM16_CL, Code.SAL_RM32_CL, Code.SAL_RM64_CL,
    Code.SAL_RM8_IMM8, Code.SAL_RM16_IMM8, Code.SAL_RM32_IMM8, Code.SAL_RM64_IMM8,
    Code.CMPXCHG16B_M128,  # needs CPUID.CX16, which the interpreter's model leaves clear
})

# Instructions that move the stack pointer themselves (RSP is reserved otherwise).
_STACK_MNEMONICS = frozenset({M.PUSH, M.POP, M.ENTER, M.LEAVE, M.PUSHF, M.PUSHFD, M.PUSHFQ,
                              M.POPF, M.POPFD, M.POPFQ, M.PUSHA, M.PUSHAD, M.POPA, M.POPAD,
                              M.CALL, M.RET})
# Flags POPF may load in the generated blocks: the status flags and DF.  IF, TF, IOPL, NT
# and AC would behave differently at the native side's CPL 3 (SDM Vol. 2B "POPF").
POPF_LOADABLE = 0xCD5
PUSHF_MASKED = 0x300  # IF and TF: IF is 1 natively (ring 3) and 0 in the engine
# CALL rel, RET (and RET imm16) by code-segment size.
_CALL_CODES = {16: Code.CALL_REL16, 32: Code.CALL_REL32_32, 64: Code.CALL_REL32_64}
_RET_CODES = {16: (Code.RETNW, Code.RETNW_IMM16), 32: (Code.RETND, Code.RETND_IMM16),
              64: (Code.RETNQ, Code.RETNQ_IMM16)}
_JMP_CODES = {16: Code.JMP_REL8_16, 32: Code.JMP_REL8_32, 64: Code.JMP_REL8_64}
# Families a subroutine body may come from: nothing that moves RSP or branches.
_SUBROUTINE_FAMILIES = ("alu", "unary", "shift", "muldiv", "move", "atomic", "bits", "setcc",
                        "cmovcc", "convert", "flagops", "bcd", "dshift", "xlat", "cmpxchg8b")

_REG_KINDS = {K.R8_REG: 1, K.R16_REG: 2, K.R32_REG: 4, K.R64_REG: 8, K.R8_OPCODE: 1,
              K.R16_OPCODE: 2, K.R32_OPCODE: 4, K.R64_OPCODE: 8}
_RM_KINDS = {K.R8_OR_MEM: 1, K.R16_OR_MEM: 2, K.R32_OR_MEM: 4, K.R64_OR_MEM: 8}
_FIXED_KINDS = {K.AL: Register.AL, K.AX: Register.AX, K.EAX: Register.EAX,
                K.RAX: Register.RAX, K.CL: Register.CL}
# Immediate kinds -> (low, high) of the signed value passed to iced.
_IMM_KINDS = {K.IMM8: (-0x80, 0x7F), K.IMM16: (-0x8000, 0x7FFF),
              K.IMM32: (-0x8000_0000, 0x7FFF_FFFF), K.IMM8SEX16: (-0x80, 0x7F),
              K.IMM8SEX32: (-0x80, 0x7F), K.IMM8SEX64: (-0x80, 0x7F),
              K.IMM32SEX64: (-0x8000_0000, 0x7FFF_FFFF), K.IMM8_CONST_1: (1, 1),
              K.IMM64: (-(1 << 63), (1 << 63) - 1)}
_BRANCH_KINDS = {K.BR16_1: 16, K.BR32_1: 32, K.BR64_1: 64}
_STRING_MNEMONICS = frozenset(FAMILIES["string"])
_STRING_KINDS = {K.ES_RDI, K.SEG_RSI, K.AL, K.AX, K.EAX, K.RAX}
_NO_SEGMENT_STRINGS = frozenset({M.STOSB, M.STOSW, M.STOSD, M.STOSQ, M.SCASB, M.SCASW,
                                 M.SCASD, M.SCASQ})
_NO_DESTINATION_STRINGS = frozenset({M.LODSB, M.LODSW, M.LODSD, M.LODSQ})
_COMPARE_STRINGS = frozenset({M.CMPSB, M.CMPSW, M.CMPSD, M.CMPSQ, M.SCASB, M.SCASW, M.SCASD,
                              M.SCASQ})
SUPPORTED_KINDS = (set(_REG_KINDS) | set(_RM_KINDS) | set(_FIXED_KINDS) | set(_IMM_KINDS)
                   | set(_BRANCH_KINDS) | {K.MEM, K.SEG_RBX_AL} | set(simd.VECTOR_KINDS))


def _code_table(mode: int) -> dict[str, list[list[int]]]:
    """Family -> list (one per mnemonic) of the iced Codes usable in `mode`."""
    by_mnemonic: dict[int, list[int]] = {}
    simd_codes: dict[str, list[int]] = {}
    families = {m: name for name, ms in FAMILIES.items() for m in ms}
    for code in range(Code.__dict__.get("INVALID", 0) + 1, 5000):
        try:
            info = OpCodeInfo(code)
        except (ValueError, TypeError):
            break
        if info.mnemonic not in families or code in EXCLUDED_CODES:
            continue
        if info.encoding != 0 or not info.is_available_in_mode(mode):
            continue
        kinds = [info.op_kind(i) for i in range(info.op_count)]
        if families[info.mnemonic] in simd.FAMILY_NAMES:
            family = simd.family_of(info, mode)
            if family is not None:
                if all(k in SUPPORTED_KINDS for k in kinds):
                    simd_codes.setdefault(family, []).append(code)
                continue
            if info.mnemonic not in _STRING_MNEMONICS:
                continue
        if info.mnemonic in _STRING_MNEMONICS:
            if info.address_size not in (0, mode) or not set(kinds) <= _STRING_KINDS:
                continue  # e.g. SSE2 MOVSD/CMPSD share the mnemonic
        elif any(k not in SUPPORTED_KINDS for k in kinds):
            continue
        # Branches: only rel8 forms whose operand size is the mode's (a 66h-prefixed
        # branch truncates IP, SDM Vol. 2A "Jcc"), and whose address size is the mode's.
        branch_sizes = [_BRANCH_KINDS[k] for k in kinds if k in _BRANCH_KINDS]
        if any(kind in (K.BR16_2, K.BR32_4, K.BR64_4) for kind in kinds):
            continue
        if families[info.mnemonic] == "call":
            continue  # built by BlockGenerator.call_group, not from the table
        if families[info.mnemonic] == "branch" and not branch_sizes:
            continue  # indirect JMP forms
        if branch_sizes and (branch_sizes[0] != mode or info.address_size not in (0, mode)):
            continue
        by_mnemonic.setdefault(info.mnemonic, []).append(code)
    table: dict[str, list[list[int]]] = {}
    for name, mnemonics in FAMILIES.items():
        lists = [by_mnemonic[m] for m in mnemonics if m in by_mnemonic]
        if lists:
            table[name] = lists
    table["call"] = [[_CALL_CODES[mode]]]
    for name in simd.FAMILY_NAMES:  # each encoding equally likely within its family
        if name in simd_codes:
            table[name] = [[code] for code in simd_codes[name]]
        else:
            table.pop(name, None)
    return table


_TABLES: dict[int, dict[str, list[list[int]]]] = {}


def code_table(mode: int) -> dict[str, list[list[int]]]:
    if mode not in _TABLES:
        _TABLES[mode] = _code_table(mode)
    return _TABLES[mode]


@dataclass
class TestCase:
    """One generated block and the machine state it starts from."""

    mode: int
    seed: int
    index: int
    body: list[Instruction]  # ip = label (see LABEL_BASE), not the final address
    gprs: list[int]
    rflags: int
    data: bytes
    groups: int  # number of instruction groups; branches may target group `groups` (the end)
    pointer_regs: tuple[Register, ...] = field(default_factory=tuple)
    families: tuple[str, ...] | None = None  # as generated (for the rerun command)
    guard: bool = False
    fxsave: bytes | None = None  # initial FP/SIMD state (FXSAVE image) when it is compared
    wrap: bool = False  # generated with --wrap
    compat: bool = False  # 32-bit code the engine runs in compatibility mode (MODE_NAMES)

    @property
    def mode_name(self) -> str:
        """The tester's name for the mode: "16", "32", "64" or "compat"."""
        return "compat" if self.compat else str(self.mode)

    @property
    def end_label(self) -> int:
        return LABEL_BASE[self.mode] + self.groups * LABEL_GROUP


class _Reject(Exception):
    """This random pick cannot be used; draw again."""


class BlockGenerator:
    """Builds one `TestCase` from a `random.Random`."""

    def __init__(self, mode: int, rng: random.Random,
                 families: tuple[str, ...] | None = None, guard: bool = False,
                 wrap: bool = False) -> None:
        self.mode = mode
        self.rng = rng
        self.wrap = wrap  # decided per case in initial_state (draws only when asked)
        self.wrap32 = False
        # guard: some memory operands address the unmapped page after the data area,
        # so the block ends in #PF and its error code (W/R bit) is compared.
        self.guard = guard
        self.table = code_table(mode)
        if families:
            unknown = set(families) - set(FAMILIES)
            if unknown:
                raise ValueError(f"unknown instruction families: {sorted(unknown)}")
            self.table = {k: v for k, v in self.table.items() if k in families}
        self.encoder_check = Encoder(mode)
        self.info_factory = InstructionInfoFactory()
        self.gsize = {16: 2, 32: 4, 64: 8}[mode]
        if mode == 16:
            self.ptr: Register | None = None
            self.idx: Register | None = None
        else:
            cands = [Register.RBX, Register.RBP, Register.R8, Register.R9, Register.R10,
                     Register.R11, Register.R12, Register.R13, Register.R14, Register.R15]
            if mode == 32:
                cands = [Register.RBX, Register.RBP]
            self.idx = rng.choice(cands)
            ptrs = [r for r in cands + [Register.RSI, Register.RDI] if r != self.idx]
            self.ptr = rng.choice(ptrs)
        self.last_mem = MemoryOperand()  # the data operand built last (for preludes)
        self.reserved = {Register.RSP} | ({self.ptr, self.idx} - {None})

    # -- values -------------------------------------------------------------
    def random_value(self, bits: int) -> int:
        r = self.rng
        pick = r.random()
        mask = (1 << bits) - 1
        if pick < 0.15:
            return r.choice((0, 1, 2, mask, mask >> 1, (mask >> 1) + 1, 0x80, 0x7F, 0xFF,
                             0x8000, 0xFFFF)) & mask
        if pick < 0.35:
            return r.randrange(0, 0x100)
        if pick < 0.45:
            return (mask - r.randrange(0, 0x100)) & mask
        return r.getrandbits(bits)

    def initial_state(self) -> tuple[list[int], int]:
        r = self.rng
        bits = 64 if self.mode == 64 else 32
        gprs = [self.random_value(bits) for _ in range(16)]
        if self.mode != 64:
            gprs[8:] = [0] * 8
        if self.mode == 16:
            gprs[4] = r.randrange(0, 0x10000) & ~1 if r.random() < 0.9 else r.randrange(0x10000)
        else:
            gprs[4] = DATA_BASE + (r.randrange(STACK_LO, STACK_HI) & ~(self.gsize - 1))
            assert self.ptr is not None and self.idx is not None
            gprs[GPR64.index(self.ptr)] = DATA_BASE + r.randrange(PTR_LO, PTR_HI)
            gprs[GPR64.index(self.idx)] = r.randrange(0, INDEX_MAX)
            if self.wrap and r.random() < WRAP_CHANCE:
                # idx = 2^32 - k: [ptr + idx*scale + disp] wraps past 4 GiB back into the
                # data area with 32-bit addressing (64-bit mode: the 67h forms below).
                self.wrap32 = True
                gprs[GPR64.index(self.idx)] = (1 << 32) - r.randrange(1, WRAP_K_MAX)
        rflags = FLAG_RESERVED1
        for bit in (FLAG_CF, FLAG_PF, FLAG_AF, FLAG_ZF, FLAG_SF, FLAG_OF, FLAG_DF):
            if r.random() < 0.5:
                rflags |= bit
        return gprs, rflags

    # -- operands -----------------------------------------------------------
    def reg(self, size: int) -> Register:
        return self.rng.choice(registers(size, self.mode))

    def data_mem(self) -> MemoryOperand:
        """A memory operand that addresses the data area."""
        r = self.rng
        if self.mode == 16:
            if self.guard and r.random() < GUARD_CHANCE:
                # 1..7 bytes below the segment limit: a wider access #GPs (or #SS).
                return MemoryOperand(displ=0x10000 - r.randrange(1, 8), displ_size=2)
            if self.wrap and r.random() < 0.3:
                # bx + si + disp16 past 0xFFFF: the 16-bit offset wraps (SDM Vol. 1 §3.7.5).
                return MemoryOperand(Register.BX, Register.SI, 1,
                                     r.randrange(0x8000, 0x10000) - 0x10000, 2)
            bases = [(Register.BX, Register.SI), (Register.BX, Register.DI),
                     (Register.BP, Register.SI), (Register.BP, Register.DI),
                     (Register.SI, Register.NONE), (Register.DI, Register.NONE),
                     (Register.BP, Register.NONE), (Register.BX, Register.NONE),
                     (Register.NONE, Register.NONE)]
            base, index = r.choice(bases)
            if base == Register.NONE:
                return MemoryOperand(displ=r.randrange(0x10000), displ_size=2)
            size = r.choice((0, 1, 2))
            displ = {0: 0, 1: r.randrange(-0x80, 0x80), 2: r.randrange(-0x8000, 0x8000)}[size]
            if base == Register.BP and index == Register.NONE and size == 0:
                size, displ = 1, 0  # [bp] needs a displacement byte
            return MemoryOperand(base, index, 1, displ, size)
        assert self.ptr is not None and self.idx is not None
        if self.guard and r.random() < GUARD_CHANCE:
            return MemoryOperand(displ=guard_displacement(r), displ_size=4)
        wide = self.mode == 64 and not self.wrap32  # wrap32: 32-bit addressing (67h)
        ptr = self.ptr if wide else RegisterExt.full_register32(self.ptr)
        idx = self.idx if wide else RegisterExt.full_register32(self.idx)
        off = r.randrange(PTR_LO, PTR_HI)
        form = r.randrange(8 if wide else 7)
        disp = r.randrange(-DISP_MAX, DISP_MAX)
        if self.wrap and r.random() < 0.2:
            disp = r.choice((-0x80, 0x7F))  # the ends of a sign-extended disp8
        scale = r.choice((1, 2, 4, 8))
        if form == 0:
            return MemoryOperand(ptr)
        if form == 1:
            return MemoryOperand(ptr, displ=disp, displ_size=1 if -0x80 <= disp < 0x80 else 4)
        if form == 2:
            return MemoryOperand(ptr, idx, scale)
        if form == 3:
            return MemoryOperand(ptr, idx, scale, disp, 4)
        if form == 4:
            if self.wrap32:  # -k*scale + disp32: stays inside the data area
                return MemoryOperand(Register.NONE, idx, scale, DATA_BASE + off + 0x800, 4)
            return MemoryOperand(Register.NONE, idx, scale, DATA_BASE + off, 4)
        if form == 5:
            return MemoryOperand(idx, ptr, 1, disp, 4)  # swapped roles
        if form == 6:
            return MemoryOperand(displ=DATA_BASE + off, displ_size=4)
        return MemoryOperand(Register.RIP, displ=DATA_BASE + off)

    def lea_mem(self) -> MemoryOperand:
        """Any address expression: LEA computes it without touching memory."""
        r = self.rng
        if self.mode == 16:
            return self.data_mem()
        size = 8 if self.mode == 64 else 4
        regs = registers(size, self.mode)
        base = r.choice(regs + (Register.NONE,))
        index = r.choice([x for x in regs if RegisterExt.full_register(x) != Register.RSP]
                         + [Register.NONE])
        disp = r.choice((0, r.randrange(-0x80, 0x80), r.getrandbits(32) - (1 << 31)))
        if base == Register.NONE and index == Register.NONE:
            return MemoryOperand(displ=disp & 0xFFFFFFFF, displ_size=4)
        return MemoryOperand(base, index, r.choice((1, 2, 4, 8)), disp,
                             0 if disp == 0 else (1 if -0x80 <= disp < 0x80 else 4))

    # -- building one instruction -------------------------------------------
    def build(self, code: int, target_label: int) -> Instruction:
        info = OpCodeInfo(code)
        kinds = [info.op_kind(i) for i in range(info.op_count)]
        ops: list[tuple[str, object]] = []
        if info.mnemonic in simd.SPECIAL:
            return simd.build_special(self, code)
        for kind in kinds:
            if simd.handles(info.mnemonic, kind):
                vec = simd.operand(self, info, kind)
                if vec[0] == "mem":
                    self.last_mem = vec[1]  # type: ignore[assignment]
                ops.append(vec)
            elif kind in _REG_KINDS:
                ops.append(("reg", self.reg(_REG_KINDS[kind])))
            elif kind in _RM_KINDS:
                if self.rng.random() < 0.55:
                    ops.append(("reg", self.reg(_RM_KINDS[kind])))
                else:
                    self.last_mem = self.data_mem()
                    ops.append(("mem", self.last_mem))
            elif kind == K.MEM:
                if info.mnemonic == M.CMPXCHG8B:
                    self.last_mem = self.data_mem()
                    ops.append(("mem", self.last_mem))
                else:
                    ops.append(("mem", self.lea_mem()))
            elif kind == K.SEG_RBX_AL:  # XLAT: [rBX + AL] at the mode's address size
                base = {16: Register.BX, 32: Register.EBX, 64: Register.RBX}[self.mode]
                return Instruction.create_mem(code, MemoryOperand(base, Register.AL))
            elif kind in _FIXED_KINDS:
                ops.append(("reg", _FIXED_KINDS[kind]))
            elif kind in _IMM_KINDS:
                lo, hi = _IMM_KINDS[kind]
                value = self.rng.randint(lo, hi)
                if info.mnemonic in flaginfo._SHIFTS and self.rng.random() < 0.6:
                    value = self.rng.randrange(0, 70) if kind == K.IMM8 else value
                if info.mnemonic in (M.SHLD, M.SHRD):
                    value = self.double_shift_count(_RM_KINDS[kinds[0]])
                if info.mnemonic == M.ENTER:
                    value = (self.rng.choice((0, 0, 1, 2, 3, 4, 0x21)) if len(ops) == 1 else
                             self.rng.choice((0, 0x10, self.rng.randrange(0, 0x200))))
                ops.append(("i64" if kind == K.IMM64 else "i32", value))
            elif kind in _BRANCH_KINDS:
                return Instruction.create_branch(code, target_label)
            else:  # pragma: no cover - filtered by _code_table
                raise _Reject
        name = "create" + "".join("_" + kind for kind, _ in ops)
        factory: Callable[..., Instruction] = getattr(Instruction, name)
        return factory(code, *(value for _, value in ops))

    def build_string(self, code: int) -> Instruction:
        info = OpCodeInfo(code)
        name = "create_" + Mnemonic_name(info.mnemonic).lower()
        rep = RepPrefixKind.NONE
        roll = self.rng.random()
        if roll < 0.5:
            rep = RepPrefixKind.REPE
        elif roll < 0.7 and info.mnemonic in (M.CMPSB, M.CMPSW, M.CMPSD, M.CMPSQ, M.SCASB,
                                              M.SCASW, M.SCASD, M.SCASQ):
            rep = RepPrefixKind.REPNE
        if info.mnemonic in _NO_SEGMENT_STRINGS:  # ES:rDI only: no segment override
            return getattr(Instruction, name)(self.mode, rep)
        return getattr(Instruction, name)(self.mode, Register.NONE, rep)

    def written_registers(self, instr: Instruction) -> tuple[set[Register], set[Register]]:
        """(explicitly, implicitly) written full 64-bit registers."""
        info = self.info_factory.info(instr)
        explicit_regs = set()
        for i in range(instr.op_count):
            if instr.op_kind(i) == OpKind.REGISTER and info.op_access(i) in _WRITE_ACCESS:
                explicit_regs.add(RegisterExt.full_register(instr.op_register(i)))
        written = {RegisterExt.full_register(u.register) for u in info.used_registers()
                   if u.access in _WRITE_ACCESS and RegisterExt.is_gpr(u.register)}
        return explicit_regs, written - explicit_regs

    def check_reserved(self, instr: Instruction, string_op: bool) -> None:
        explicit_regs, implicit = self.written_registers(instr)
        if explicit_regs & self.reserved:
            raise _Reject
        if instr.mnemonic in (M.POPA, M.POPAD):
            return  # its prelude is the matching PUSHA: every register gets its value back
        for reg in implicit & self.reserved:
            if reg == Register.RSP and instr.mnemonic in _STACK_MNEMONICS:
                continue
            if string_op and reg in (Register.RSI, Register.RDI):
                continue
            raise _Reject

    def encodable(self, instr: Instruction) -> None:
        try:
            self.encoder_check.encode(instr, CODE_BASE)
        except ValueError as error:
            raise _Reject from error

    # -- preludes -------------------------------------------------------------
    def mov_imm(self, reg64: Register, value: int) -> Instruction:
        """MOV of a small signed constant into the whole register (sign-extended)."""
        if self.mode == 16:
            return Instruction.create_reg_u32(Code.MOV_R16_IMM16, _sized(reg64, 2),
                                              value & 0xFFFF)
        if self.mode == 64:
            return Instruction.create_reg_i32(Code.MOV_RM64_IMM32, reg64, value)
        return Instruction.create_reg_u32(Code.MOV_R32_IMM32, _sized(reg64, 4),
                                          value & 0xFFFFFFFF)

    def double_shift_count(self, size: int) -> int:
        """SHLD/SHRD count: a 16-bit operand shifted by more than 16 is undefined
        (SDM Vol. 2B "SHLD"), so 16-bit counts stay in 0..16 after masking."""
        if size == 2:
            return self.rng.randrange(0, 17) | self.rng.choice((0, 0, 0x20, 0x40))
        return self.rng.randrange(0, 0x100 if self.rng.random() < 0.3 else size * 8)

    def free_reg(self, size: int) -> Register:
        """A register of `size` bytes that is not reserved (never RSP)."""
        choices = [x for x in registers(size, self.mode) if x not in GPR8_HIGH
                   and RegisterExt.full_register(x) not in self.reserved]
        if not choices:
            raise _Reject
        return self.rng.choice(choices)

    def frame_pointer_prelude(self, low: int, high: int) -> list[Instruction]:
        """rBP = rSP + d (d in [low, high), stack-slot aligned): ENTER/LEAVE need a frame
        pointer inside the data area in 32/64-bit code; 16-bit offsets all lie in it."""
        if Register.RBP in self.reserved:
            raise _Reject
        if self.mode == 16:
            if self.rng.random() < 0.5:
                return []
            return [Instruction.create_reg_reg(Code.MOV_R16_RM16, Register.BP, Register.SP)]
        d = self.rng.randrange(low, high) & ~(self.gsize - 1)
        if self.mode == 64:
            code, bp, sp = Code.LEA_R64_M, Register.RBP, Register.RSP
        else:
            code, bp, sp = Code.LEA_R32_M, Register.EBP, Register.ESP
        return [Instruction.create_reg_mem(code, bp, MemoryOperand(
            sp, displ=d, displ_size=1 if -0x80 <= d < 0x80 else 4))]

    def frame_prelude(self, instr: Instruction) -> list[Instruction]:
        r = self.rng
        m = instr.mnemonic
        if m == M.ENTER:
            return self.frame_pointer_prelude(0, 0x80)
        if m == M.LEAVE:
            return self.frame_pointer_prelude(-0x100, 0x100)
        if m in (M.POPF, M.POPFD, M.POPFQ):
            value = (r.getrandbits(32) & POPF_LOADABLE) | 0x2
            code = {Code.POPFW: Code.PUSH_IMM16, Code.POPFD: Code.PUSHD_IMM32,
                    Code.POPFQ: Code.PUSHQ_IMM32}[instr.code]
            if code == Code.PUSH_IMM16:
                return [Instruction.create_u32(code, value)]
            return [Instruction.create_i32(code, value)]
        if m in (M.POPA, M.POPAD):
            size = 2 if instr.code == Code.POPAW else 4
            out = [Instruction.create(Code.PUSHAW if size == 2 else Code.PUSHAD)]
            if r.random() < 0.5:  # POPA must undo this
                out.append(self.mov_imm(RegisterExt.full_register(self.free_reg(size)),
                                        r.randrange(-0x80, 0x80)))
            return out
        return []

    def postlude_for(self, instr: Instruction) -> list[Instruction]:
        """PUSHF: clear IF and TF in the pushed image (they differ between the sides)."""
        if instr.mnemonic not in (M.PUSHF, M.PUSHFD, M.PUSHFQ):
            return []
        size = {Code.PUSHFW: 2, Code.PUSHFD: 4, Code.PUSHFQ: 8}[instr.code]
        reg = self.free_reg(size)
        pop, push, and_ = {2: (Code.POP_R16, Code.PUSH_R16, Code.AND_RM16_IMM16),
                           4: (Code.POP_R32, Code.PUSH_R32, Code.AND_RM32_IMM32),
                           8: (Code.POP_R64, Code.PUSH_R64, Code.AND_RM64_IMM32)}[size]
        return [Instruction.create_reg(pop, reg),
                Instruction.create_reg_i32(and_, reg, ~PUSHF_MASKED & (0xFFFF if size == 2
                                                                       else -1)),
                Instruction.create_reg(push, reg)]

    def prelude_for(self, instr: Instruction) -> list[Instruction]:
        r = self.rng
        m = instr.mnemonic
        out: list[Instruction] = []
        if m in _STACK_MNEMONICS:
            return self.frame_prelude(instr)
        if m in simd.PRELUDE_MNEMONICS:
            return simd.prelude(self, instr)
        if m == M.CMPXCHG8B:
            # Half the time run it twice: the first loads EDX:EAX, the second then matches.
            return [copy.copy(instr)] if r.random() < 0.5 else []
        if m == M.XLATB and self.mode != 16:
            if self.ptr == Register.RBX:
                return []
            if Register.RBX in self.reserved:
                raise _Reject
            return [self.mov_imm(Register.RBX, DATA_BASE + r.randrange(PTR_LO, PTR_HI))]
        if m in (M.SHLD, M.SHRD) and instr.op2_kind == OpKind.REGISTER:
            if Register.RCX in self.reserved:
                raise _Reject
            size = RegisterExt.size(instr.op1_register)
            return [Instruction.create_reg_i32(Code.MOV_R8_IMM8, Register.CL,
                                               self.double_shift_count(size))]
        if m in _STRING_MNEMONICS:
            if self.guard and r.random() < GUARD_STRING_CHANCE:
                return self.string_into_guard(instr)
            if instr.has_rep_prefix or instr.has_repne_prefix:
                out.append(self.mov_imm(Register.RCX, r.randrange(0, MAX_REP + 1)))
            if self.mode != 16:
                out.append(self.mov_imm(Register.RSI, DATA_BASE + r.randrange(PTR_LO, PTR_HI)))
                out.append(self.mov_imm(Register.RDI, DATA_BASE + r.randrange(PTR_LO, PTR_HI)))
        elif m in (M.BSF, M.BSR):
            # A zero source leaves the destination undefined (SDM Vol. 2A "BSF"): set a bit.
            size = 2 if instr.code in (Code.BSF_R16_RM16, Code.BSR_R16_RM16) else (
                8 if instr.code in (Code.BSF_R64_RM64, Code.BSR_R64_RM64) else 4)
            bit = 1 << r.randrange(0, 15 if size == 2 else 31)
            code = {2: Code.OR_RM16_IMM16, 4: Code.OR_RM32_IMM32, 8: Code.OR_RM64_IMM32}[size]
            if instr.op1_kind == OpKind.REGISTER:
                src = instr.op1_register
                if RegisterExt.full_register(src) in self.reserved:
                    raise _Reject
                out.append(Instruction.create_reg_i32(code, src, bit))
            else:
                out.append(Instruction.create_mem_i32(code, self.last_mem, bit))
        elif m in (M.BT, M.BTS, M.BTR, M.BTC) and instr.op0_kind == OpKind.MEMORY \
                and instr.op1_kind == OpKind.REGISTER:
            # A register bit offset reaches memory outside the operand (SDM Vol. 2A "BT").
            reg = RegisterExt.full_register(instr.op1_register)
            if reg in self.reserved:
                raise _Reject
            out.append(self.mov_imm(reg, r.randrange(-0x200, 0x400)))
        elif m in (M.DIV, M.IDIV) and r.random() < 0.6:
            size = RegisterExt.size(instr.op0_register) if instr.op0_kind == OpKind.REGISTER \
                else _mem_size(instr)
            if m == M.IDIV:
                out.append(Instruction.create({1: Code.CBW, 2: Code.CWD, 4: Code.CDQ,
                                               8: Code.CQO}[size]))
            elif size == 1:
                out.append(Instruction.create_reg_i32(Code.MOV_R8_IMM8, Register.AH, 0))
            else:
                reg = {2: Register.DX, 4: Register.EDX, 8: Register.EDX}[size]
                code = Code.XOR_R16_RM16 if size == 2 else Code.XOR_R32_RM32
                out.append(Instruction.create_reg_reg(code, reg, reg))
        return out

    def string_into_guard(self, instr: Instruction) -> list[Instruction]:
        """Prelude that makes a string instruction run into an inaccessible byte part-way.

        The operand it walks (RDI for STOS/SCAS, else RSI or RDI) starts a few elements
        before the boundary and a REP count reaches past it, so the fault comes on a later
        iteration (or a straddling element): registers keep their progress, a #PF's CR2
        is the first byte it could not reach, and a REPE/REPNE compare restores EFLAGS
        (SDM Vol. 2B "REP").  Forward (CLD) the boundary is the unmapped page after the
        data area; backward (STD) the unmapped page below the code area, for an operand
        that is only read (writes there would hit code) and is not the block's pointer
        or index register (later operands would address code).  In 16-bit code it is the data
        segments' limit, 0FFFFH, both ways (offsets wrap: a straddling element #GPs).
        """
        r = self.rng
        size = _mem_size(instr)
        walks_si = instr.mnemonic not in _NO_SEGMENT_STRINGS
        walks_di = instr.mnemonic not in _NO_DESTINATION_STRINGS
        reads_di = instr.mnemonic in _COMPARE_STRINGS
        far = r.randrange(PTR_LO, PTR_HI) + (0 if self.mode == 16 else DATA_BASE)
        si, di = far, far
        on_si = walks_si and (not walks_di or r.random() < 0.5)
        walked = Register.RSI if on_si else Register.RDI
        # Backward, the walked register is left pointing at code, which differs between
        # the sides past the block: not the block's pointer or index register.
        backward = r.random() < 0.5 and (self.mode == 16 or (on_si or reads_di)
                                         and walked not in self.reserved)
        if self.mode == 16:
            # An element at 0FFFFH - k (k < size) crosses the limit: reached after q
            # elements; a byte never crosses, it wraps (64 KiB offsets).
            step = size * r.randrange(0, 4) + (r.randrange(1, size) if size > 1 else 0)
            near = step if backward else (0x10000 - step) & 0xFFFF
        else:
            step = r.randrange(1, 4 * size + 1)
            near = GUARD_PAGE - step if not backward else CODE_BASE + step - 1
        if on_si:
            si = near
        else:
            di = near
        out = [Instruction.create(Code.STD if backward else Code.CLD)]
        if instr.has_rep_prefix or instr.has_repne_prefix:
            out.append(self.mov_imm(Register.RCX, r.randrange(4, 4 + MAX_REP)))
        out.append(self.mov_imm(Register.RSI, si))
        out.append(self.mov_imm(Register.RDI, di))
        return out

    def flag_definer(self) -> Instruction:
        """A CMP between two random registers: defines all six status flags."""
        size = 2 if self.mode == 16 and self.rng.random() < 0.5 else 4
        code = Code.CMP_R16_RM16 if size == 2 else Code.CMP_R32_RM32
        return Instruction.create_reg_reg(code, self.reg(size), self.reg(size))

    # -- the block ------------------------------------------------------------
    def subroutine_body(self) -> Instruction:
        """The instruction a generated CALL's subroutine runs before its RET."""
        table = code_table(self.mode)
        family = self.rng.choice([f for f in _SUBROUTINE_FAMILIES if f in table])
        code = self.rng.choice(self.rng.choice(table[family]))
        instr = self.build(code, 0)
        self.encodable(instr)
        self.check_reserved(instr, False)
        return instr

    def call_group(self, label: int, next_label: int, body: Instruction
                   ) -> list[Instruction]:
        """CALL sub; JMP next; sub: body; RET [n] (SDM Vol. 2A "CALL", Vol. 2B "RET").

        The subroutine sits after the CALL so every branch still goes forward.
        """
        call = Instruction.create_branch(_CALL_CODES[self.mode], label + 2 * LABEL_STEP)
        jmp = Instruction.create_branch(_JMP_CODES[self.mode], next_label)
        plain, with_imm = _RET_CODES[self.mode]
        if self.rng.random() < 0.3:
            ret = Instruction.create_u32(with_imm, self.rng.choice((0, 1, 2, 4)) * self.gsize)
        else:
            ret = Instruction.create(plain)
        return [call, jmp, body, ret]

    def pick(self, group: int, groups: int) -> Instruction:
        r = self.rng
        family = r.choice(list(self.table))
        self.last_family = family
        if family == "call":
            return self.subroutine_body()
        code = r.choice(r.choice(self.table[family]))
        if family == "string":
            instr = self.build_string(code)
        else:
            target = group + 1 + min(r.randrange(0, 3), groups - group - 1)
            instr = self.build(code, LABEL_BASE[self.mode] + target * LABEL_GROUP)
        if instr.flow_control == 0 or family != "branch":  # not a branch: check encoding
            self.encodable(instr)
        self.check_reserved(instr, family == "string")
        return instr

    def generate(self, length: int) -> tuple[list[Instruction], int]:
        if not 1 <= length <= MAX_GROUPS:
            raise ValueError(f"block length must be 1..{MAX_GROUPS} groups")
        body: list[Instruction] = []
        pending: dict[int, int] = {}  # label -> maybe-undefined flags arriving by branch
        state: int | None = 0
        for group in range(length):
            label = LABEL_BASE[self.mode] + group * LABEL_GROUP
            arrived = pending.pop(label, None)
            if state is None:
                state = arrived or 0
            elif arrived is not None:
                state |= arrived
            for _attempt in range(200):
                try:
                    instr = self.pick(group, length)
                    prelude = self.prelude_for(instr)
                    for p in prelude:
                        self.encodable(p)
                    break
                except _Reject:
                    continue
            else:  # pragma: no cover - would need 200 unusable draws
                raise RuntimeError("generator could not find an instruction")
            s = state
            for p in prelude:
                s = flaginfo.transfer(p, s)
            read, _defined, _undef = flaginfo.effect(instr)
            if read & s & flaginfo.STATUS_FLAGS:
                definer = self.flag_definer()
                prelude.append(definer)
                s = flaginfo.transfer(definer, s)
            if self.last_family == "call":
                next_label = LABEL_BASE[self.mode] + (group + 1) * LABEL_GROUP
                first = len(prelude)
                group_instrs = prelude + self.call_group(label + first * LABEL_STEP,
                                                         next_label, instr)
                for k, ins in enumerate(group_instrs):
                    ins.ip = label + k * LABEL_STEP
                group_instrs[first].near_branch64 = group_instrs[first + 2].ip
                body.extend(group_instrs)
                state = flaginfo.transfer(instr, s)
                continue
            postlude = self.postlude_for(instr)
            group_instrs = prelude + [instr] + postlude
            for k, ins in enumerate(group_instrs):
                ins.ip = label + k * LABEL_STEP
            body.extend(group_instrs)
            for post in postlude:  # the group's flags are those after its last instruction
                s = flaginfo.transfer(instr, s)
                instr = post
            after = flaginfo.transfer(instr, s)
            target = flaginfo.branch_target(instr)
            if target is not None:
                pending[target] = pending.get(target, 0) | after
            state = after if flaginfo.falls_through(instr) else None
        return body, length


def guard_displacement(rng: random.Random) -> int:
    """An address on or just below the guard page: half the draws end 1..7 bytes before
    it, so an access of 2, 4 or 8 bytes there straddles the mapped/unmapped boundary
    (the #PF then reports the guard page's first byte in CR2, SDM Vol. 3A §4.7)."""
    if rng.random() < 0.5:
        return GUARD_PAGE - rng.randrange(1, 8)
    return GUARD_PAGE + rng.randrange(0, 0x100)


def _sized(reg64: Register, size: int) -> Register:
    table = {1: GPR8, 2: GPR16, 4: GPR32, 8: GPR64}[size]
    return table[GPR64.index(reg64)]


def _mem_size(instr: Instruction) -> int:
    from iced_x86 import MemorySizeExt
    return MemorySizeExt.size(instr.memory_size)


_MNEMONIC_NAMES = {v: k for k, v in vars(Mnemonic).items() if k.isupper()}


def Mnemonic_name(mnemonic: int) -> str:  # noqa: N802 - mirrors iced naming
    return _MNEMONIC_NAMES[mnemonic]


# The tester's modes: name -> (code size in bits, run by the engine in compatibility
# mode).  The native side runs all 32-bit code in a 32-bit code segment of a 64-bit
# Linux process, i.e. in compatibility mode (SDM Vol. 3A §5.2.1); the engine runs "32"
# in legacy protected mode with 32-bit paging and "compat" in IA-32e mode with a code
# segment of L=0, D=1 (Vol. 3A §9.8.5), so both engine set-ups meet the same CPU.
MODE_NAMES = {"16": (16, False), "32": (32, False), "64": (64, False), "compat": (32, True)}


def case_rng(seed: int, mode: int | str, index: int) -> random.Random:
    """The random stream of one case: reproducible from (seed, mode name, index) alone."""
    return random.Random(f"pyvmm-difftest:{seed}:{mode}:{index}")


def generate_case(mode: int, seed: int, index: int, length: int = 8,
                  families: tuple[str, ...] | None = None, guard: bool = False,
                  wrap: bool = False, compat: bool = False) -> TestCase:
    """Block `index` of `seed` in `mode`; `families` limits the FAMILIES drawn from;
    `guard` puts some memory operands on the unmapped page after the data area; `wrap`
    makes address arithmetic wrap at the address size (WRAP_CHANCE); `compat` (mode 32
    only) draws a block of its own for the engine's compatibility mode."""
    if compat and mode != 32:
        raise ValueError("compatibility mode runs 32-bit code")
    rng = case_rng(seed, "compat" if compat else mode, index)
    gen = BlockGenerator(mode, rng, families, guard, wrap)
    gprs, rflags = gen.initial_state()
    body, groups = gen.generate(length)
    data = rng.randbytes(DATA_SIZE)
    fxsave = simd.initial_fxsave(rng, body) if simd.touches_simd(body) else None
    return TestCase(mode, seed, index, body, gprs, rflags, data, groups,
                    tuple(r for r in (gen.ptr, gen.idx) if r is not None), families, guard,
                    fxsave, wrap, compat)
