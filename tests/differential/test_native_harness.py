"""The native oracle alone, checked against architectural facts (Intel SDM Vol. 2)."""

from __future__ import annotations

import pytest
from iced_x86 import BlockEncoder, Code, Instruction, MemoryOperand, Register

from pyvmm.cpu.state import FLAG_CF, FLAG_DF, FLAG_OF, FLAG_RESERVED1, FLAG_SF, FLAG_ZF
from pyvmm.oracle.layout import CODE_BASE, DATA_BASE, DATA_SIZE
from pyvmm.oracle.native import USER_CS64

RAX, RCX, RDX, RBX, RSP = 0, 1, 2, 3, 4


def run(runner, mode: int, body: list[Instruction], gprs: dict[int, int] | None = None,
        rflags: int = FLAG_RESERVED1, data: bytes | None = None):
    """Encode `body` + the native trailer with iced and run it."""
    if mode == 64:
        trailer = Instruction.create_branch(Code.JMP_REL32_64, runner.info.exit_stub)
    else:
        trailer = Instruction.create_far_branch(Code.JMP_PTR1632, USER_CS64,
                                                runner.info.exit_stub)
    encoder = BlockEncoder(mode)
    encoder.add_many([*body, trailer])
    start = 0 if mode == 16 else CODE_BASE
    code = encoder.encode(start)
    regs = [0] * 16
    regs[RSP] = DATA_BASE + 0x8000 if mode != 16 else 0x8000
    for index, value in (gprs or {}).items():
        regs[index] = value
    return runner.run(mode, code, regs, rflags, data or bytes(DATA_SIZE), end_rip=-1)


def test_add_sets_result_carry_and_zero(native_runner):
    body = [Instruction.create_reg_reg(Code.ADD_R64_RM64, Register.RAX, Register.RBX)]
    out = run(native_runner, 64, body, {RAX: 2**64 - 1, RBX: 1})
    assert out.vector is None
    assert out.gprs[RAX] == 0
    assert out.rflags & (FLAG_CF | FLAG_ZF | FLAG_OF) == FLAG_CF | FLAG_ZF


def test_add_signed_overflow(native_runner):
    body = [Instruction.create_reg_reg(Code.ADD_R64_RM64, Register.RAX, Register.RBX)]
    out = run(native_runner, 64, body, {RAX: 2**63 - 1, RBX: 1})
    assert out.gprs[RAX] == 2**63
    assert out.rflags & (FLAG_CF | FLAG_OF | FLAG_SF) == FLAG_OF | FLAG_SF


def test_initial_flags_reach_the_code(native_runner):
    # ADC adds CF: the loaded RFLAGS must be live when the code starts.
    body = [Instruction.create_reg_i32(Code.ADC_RM64_IMM8, Register.RAX, 0)]
    assert run(native_runner, 64, body, {RAX: 5}, FLAG_RESERVED1 | FLAG_CF).gprs[RAX] == 6
    assert run(native_runner, 64, body, {RAX: 5}, FLAG_RESERVED1).gprs[RAX] == 5
    # DF survives to the end and is reported back.
    out = run(native_runner, 64, [], rflags=FLAG_RESERVED1 | FLAG_DF)
    assert out.rflags & FLAG_DF


def test_div_by_zero_raises_de_at_the_instruction(native_runner):
    body = [Instruction.create_reg_reg(Code.ADD_R64_RM64, Register.RAX, Register.RAX),
            Instruction.create_reg(Code.DIV_RM64, Register.RCX)]
    out = run(native_runner, 64, body, {RAX: 21, RCX: 0, RDX: 0})
    assert out.vector == 0  # #DE
    assert out.rip == CODE_BASE + 3  # the DIV, after the 3-byte ADD
    assert out.gprs[RAX] == 42  # the ADD before it completed


def test_idiv_overflow_raises_de(native_runner):
    body = [Instruction.create_reg(Code.IDIV_RM32, Register.ECX)]
    out = run(native_runner, 64, body, {RAX: 0x80000000, RDX: 0xFFFFFFFF, RCX: 0xFFFFFFFF})
    assert out.vector == 0


def test_memory_write_lands_in_the_data_area(native_runner):
    body = [Instruction.create_mem_reg(Code.MOV_RM64_R64, MemoryOperand(Register.RBX, displ=8,
                                                                      displ_size=1),
                                       Register.RAX)]
    out = run(native_runner, 64, body, {RAX: 0x1122334455667788, RBX: DATA_BASE + 0x100})
    assert out.data[0x108:0x110] == (0x1122334455667788).to_bytes(8, "little")
    assert out.data[:0x108] == bytes(0x108)


def test_unmapped_access_is_a_page_fault(native_runner):
    body = [Instruction.create_reg_mem(Code.MOV_R64_RM64, Register.RAX,
                                       MemoryOperand(displ=DATA_BASE + DATA_SIZE, displ_size=4))]
    out = run(native_runner, 64, body)
    assert out.vector == 14
    assert out.error_code is not None and out.error_code & 1 == 0  # not-present page


def test_32bit_code_runs_in_compatibility_mode(native_runner):
    # 48h is DEC EAX in 32-bit code but a REX.W prefix in 64-bit code (SDM Vol. 2A §2.2.1).
    body = [Instruction.create_reg(Code.DEC_R32, Register.EAX),
            Instruction.create_reg(Code.PUSH_R32, Register.EAX)]
    assert native_runner.supports(32)[0]
    out = run(native_runner, 32, body, {RAX: 0x100})
    assert out.vector is None
    assert out.gprs[RAX] & 0xFFFFFFFF == 0xFF
    assert out.gprs[RSP] & 0xFFFFFFFF == DATA_BASE + 0x8000 - 4  # a 4-byte push
    assert out.data[0x7FFC:0x8000] == (0xFF).to_bytes(4, "little")


def test_16bit_code_uses_16bit_segments(native_runner):
    ok, reason = native_runner.supports(16)
    if not ok:
        pytest.skip(reason)
    data = bytearray(DATA_SIZE)
    data[0x1234:0x1236] = b"\xcd\xab"
    body = [Instruction.create_reg_mem(Code.MOV_R16_RM16, Register.AX,
                                       MemoryOperand(Register.BX)),  # DS base = data area
            Instruction.create_reg(Code.INC_R16, Register.CX),  # 41h: INC CX, 16 bits only
            Instruction.create_reg(Code.PUSH_R16, Register.AX)]  # SP moves by 2
    out = run(native_runner, 16, body, {RBX: 0x1234, RCX: 0x1FFFF}, data=bytes(data))
    assert out.vector is None
    assert out.gprs[RAX] & 0xFFFF == 0xABCD
    assert out.gprs[RCX] & 0xFFFFFFFF == 0x10000  # CX wrapped, upper half kept
    assert out.gprs[RSP] & 0xFFFF == 0x7FFE
    assert out.data[0x7FFE:0x8000] == b"\xcd\xab"


def test_16bit_segment_limit_raises_gp(native_runner):
    ok, reason = native_runner.supports(16)
    if not ok:
        pytest.skip(reason)
    body = [Instruction.create_stosd(16)]  # ES:[DI], 4 bytes at 0xFFFE crosses the 0xFFFF limit
    out = run(native_runner, 16, body, {7: 0xFFFE})
    assert out.vector == 13
    assert out.rip == 0
