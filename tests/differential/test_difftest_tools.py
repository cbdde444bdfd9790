"""The generator, flag analysis and comparison, checked without any engine."""

from __future__ import annotations

import pytest
from iced_x86 import Code, Decoder, Instruction, Register

from pyvmm.cpu.state import FLAG_AF, FLAG_CF, FLAG_OF, FLAG_PF, FLAG_SF, FLAG_ZF
from pyvmm.difftest import flags as flaginfo
from pyvmm.difftest.compare import compare
from pyvmm.difftest.encode import encode_case
from pyvmm.difftest.generator import FAMILIES, GPR64, generate_case
from pyvmm.difftest.native_side import run_native
from pyvmm.oracle.layout import DATA_BASE
from pyvmm.oracle.result import ExecResult


def decode(mode: int, body: list[Instruction]) -> tuple[list[Instruction], int]:
    from iced_x86 import BlockEncoder
    encoder = BlockEncoder(mode)
    encoder.add_many(body)
    raw = encoder.encode(0x1000)
    decoder = Decoder(mode, raw, ip=0x1000)
    return list(decoder), 0x1000 + len(raw)


def test_mul_leaves_sf_zf_af_pf_undefined_until_add_redefines():
    mul = Instruction.create_reg(Code.MUL_RM64, Register.RBX)
    add = Instruction.create_reg_reg(Code.ADD_R64_RM64, Register.RAX, Register.RAX)
    instrs, end = decode(64, [mul])
    assert flaginfo.analyse(instrs, end)[1] == FLAG_SF | FLAG_ZF | FLAG_AF | FLAG_PF
    instrs, end = decode(64, [mul, add])
    assert flaginfo.analyse(instrs, end)[1] == 0


def test_shift_by_cl_cannot_be_trusted_to_redefine():
    div = Instruction.create_reg(Code.DIV_RM32, Register.ECX)  # all six undefined
    shl = Instruction.create_reg_reg(Code.SHL_RM32_CL, Register.EAX, Register.CL)
    instrs, end = decode(64, [div, shl])
    assert flaginfo.analyse(instrs, end)[1] & flaginfo.STATUS_FLAGS == flaginfo.STATUS_FLAGS
    shl1 = Instruction.create_reg_i32(Code.SHL_RM32_1, Register.EAX, 1)
    instrs, end = decode(64, [div, shl1])
    assert flaginfo.analyse(instrs, end)[1] & (FLAG_CF | FLAG_ZF | FLAG_SF | FLAG_PF) == 0


def test_undefined_flags_flow_along_a_forward_branch():
    # div; jmp over the add; add; end -> the path skipping the add keeps them undefined.
    div = Instruction.create_reg(Code.DIV_RM32, Register.ECX)
    jmp = Instruction.create_branch(Code.JMP_REL8_64, 0x3000)
    add = Instruction.create_reg_reg(Code.ADD_R32_RM32, Register.EAX, Register.EAX)
    end = Instruction.create(Code.HLT)
    div.ip, jmp.ip, add.ip, end.ip = 0x1000, 0x1100, 0x1200, 0x3000
    instrs, _ = decode(64, [div, jmp, add, end])
    hlt = instrs[-1]
    before, _ = flaginfo.analyse(instrs[:-1], hlt.ip)
    assert flaginfo.analyse(instrs[:-1], hlt.ip)[1] == flaginfo.STATUS_FLAGS
    assert before[instrs[2].ip] == 0  # the ADD is unreachable: nothing flows into it


@pytest.mark.parametrize("mode", [16, 32, 64])
def test_generated_blocks_never_read_maybe_undefined_flags(mode):
    for index in range(150):
        case = generate_case(mode, 7, index)
        enc = encode_case(case, exit_stub=0x30001000)
        before, _ = flaginfo.analyse(enc.decoded, enc.trailer_ip)
        for instr in enc.decoded:
            read, _defined, _undefined = flaginfo.effect(instr)
            assert not read & before[instr.ip] & flaginfo.STATUS_FLAGS, (index, str(instr))


@pytest.mark.parametrize("mode", [16, 32, 64])
def test_generation_is_reproducible(mode):
    a, b = generate_case(mode, 3, 11), generate_case(mode, 3, 11)
    assert [str(i) for i in a.body] == [str(i) for i in b.body]
    assert a.gprs == b.gprs and a.data == b.data and a.rflags == b.rflags
    assert [str(i) for i in generate_case(mode, 4, 11).body] != [str(i) for i in a.body]


@pytest.mark.parametrize("mode", [32, 64])
def test_memory_operands_stay_in_the_data_area(native_runner, mode):
    """No generated block touches an unmapped page on the real CPU, and the
    pointer/index registers the generator reserved come back unchanged unless
    a string instruction legitimately moved them."""
    for index in range(200):
        case = generate_case(mode, 9, index)
        enc = encode_case(case, native_runner.info.exit_stub)
        out = run_native(native_runner, enc)
        assert out.vector != 14, f"#PF in block {index}"
        assert not out.timed_out
        string_ops = any(i.mnemonic in FAMILIES["string"] for i in case.body)
        for reg in case.pointer_regs:
            if string_ops and reg in (Register.RSI, Register.RDI):
                continue
            i = GPR64.index(reg)
            assert (out.gprs[i] ^ case.gprs[i]) & 0xFFFFFFFF == 0, (index, reg)


def test_native_runs_are_deterministic(native_runner):
    for mode in (16, 32, 64):
        if not native_runner.supports(mode)[0]:
            continue
        for index in range(40):
            enc = encode_case(generate_case(mode, 5, index), native_runner.info.exit_stub)
            first, second = run_native(native_runner, enc), run_native(native_runner, enc)
            assert compare(enc, first, second, DATA_BASE) == []


def test_compare_reports_registers_flags_memory_and_exceptions():
    case = generate_case(64, 1, 0)
    enc = encode_case(case, exit_stub=0x30001000)
    data = bytes(case.data)
    native = ExecResult(list(case.gprs), 0x2 | FLAG_CF | FLAG_OF, enc.trailer_ip, data)
    same = ExecResult(list(case.gprs), 0x2 | FLAG_CF | FLAG_OF, enc.trailer_ip, data)
    undefined = flaginfo.analyse(enc.decoded, enc.trailer_ip)[1]
    assert compare(enc, native, same, DATA_BASE) == []
    gprs = list(case.gprs)
    gprs[3] ^= 1 << 40
    changed = bytearray(data)
    changed[0x10] ^= 0xFF
    other = ExecResult(gprs, 0x2 | FLAG_OF, enc.trailer_ip, bytes(changed), vector=0)
    whats = {d.what for d in compare(enc, native, other, DATA_BASE)}
    assert {"rbx", "exception", f"mem[{DATA_BASE + 0x10:#x}]"} <= whats
    assert ("flags" in whats) == (not undefined & FLAG_CF)



@pytest.mark.parametrize("count", [9, 18])
def test_a_rotate_by_zero_s_of_is_compared_only_on_the_modelled_vendor(monkeypatch, count):
    """RCR r/m8 by 9 or 18 rotates by 0: Intel keeps OF (compared on an Intel host);
    on another vendor's host the SDM's "undefined" holds and OF is masked."""
    by_zero = Decoder(64, bytes([0xC0, 0xDB, count])).decode()  # rcr bl, count
    by_one = Decoder(64, bytes([0xD0, 0xDB])).decode()  # rcr bl, 1
    monkeypatch.setattr(flaginfo, "host_is_modelled_vendor", lambda: True)
    assert not flaginfo.effect(by_zero)[2] & FLAG_OF
    monkeypatch.setattr(flaginfo, "host_is_modelled_vendor", lambda: False)
    _read, defined, undefined = flaginfo.effect(by_zero)
    assert undefined & FLAG_OF and not defined & FLAG_OF
    assert flaginfo.effect(by_one)[1] & FLAG_OF  # a 1-bit rotate's OF is defined everywhere
