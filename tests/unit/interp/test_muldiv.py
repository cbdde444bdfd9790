"""Interpreter MUL/IMUL/DIV/IDIV (semantics/muldiv.py) against the SDM's definitions.

Expected values come from Python's exact integer arithmetic applied to the SDM's
definitions (Vol. 2A "MUL", "IMUL", "DIV", "IDIV"), not from the interpreter.
"""

from __future__ import annotations

import random

import pytest

from tests.unit.interp.guest import HAVE_NASM, set_gate
from tests.unit.interp.test_shift import RAX, RBX, RCX, RDX, _machine, run

pytestmark = pytest.mark.skipif(not HAVE_NASM, reason="nasm is not installed")

CF, OF = 0x1, 0x800
DE_HANDLER = 0x201000  # 64-bit #DE handler: just HLT
REAL_DE_HANDLER = 0x2000


def _install_de_handlers(model: str) -> None:
    board, _ = _machine(model)
    if model == "x86-64":
        board.memory.write(DE_HANDLER, b"\xF4")
        set_gate(board, 0, DE_HANDLER)
    board.memory.write(REAL_DE_HANDLER, b"\xF4")
    board.memory.write_u32(0, REAL_DE_HANDLER)  # IVT entry 0 -> 0000:2000


def signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value >> (bits - 1) else value


def test_mul_8_and_16() -> None:
    s = run("mul bl", {RAX: 0xFF80, RBX: 0x03})  # 0x80 * 3 = 0x180
    assert s.gprs[RAX] == 0x0180 and s.rflags & (CF | OF) == CF | OF
    s = run("mul bx", {RAX: 0x0010, RBX: 0x0100, RDX: 0xFFFF})  # 0x1000 fits in AX
    assert s.gprs[RAX] == 0x1000 and s.gprs[RDX] == 0 and not s.rflags & (CF | OF)


def test_mul_32_zero_extends_and_64() -> None:
    s = run("mul ebx", {RAX: 0xFFFF_FFFF_FFFF_FFFF, RBX: 2})
    assert s.gprs[RAX] == 0xFFFF_FFFE and s.gprs[RDX] == 1
    s = run("mul rbx", {RAX: 1 << 63, RBX: 4})
    assert s.gprs[RAX] == 0 and s.gprs[RDX] == 2 and s.rflags & CF


def test_imul_forms() -> None:
    s = run("imul cl", {RAX: 0x80, RCX: 0xFF})  # -128 * -1 = 128: does not fit AL
    assert s.gprs[RAX] == 0x0080 and s.rflags & (CF | OF) == CF | OF
    s = run("imul eax, ebx", {RAX: 0xFFFF_FFFF, RBX: 5})  # -1 * 5 = -5 fits
    assert s.gprs[RAX] == 0xFFFF_FFFB and not s.rflags & (CF | OF)
    s = run("imul rax, rbx, -3", {RBX: 1 << 62})  # -3 * 2**62 overflows 64 bits
    assert s.gprs[RAX] == (-3 << 62) & (2**64 - 1) and s.rflags & CF
    s = run("imul cx, bx, 0x7FFF", {RBX: 2})  # 0xFFFE: -2 as signed 16 -> overflow
    assert s.gprs[RCX] & 0xFFFF == 0xFFFE and s.rflags & OF


def test_div_and_idiv_results() -> None:
    s = run("div bx", {RAX: 0x5678, RDX: 0x1234, RBX: 0x4321})
    q, r = divmod(0x12345678, 0x4321)
    assert (s.gprs[RAX], s.gprs[RDX]) == (q, r)
    s = run("idiv ecx", {RAX: (-7) & 0xFFFF_FFFF, RDX: 0xFFFF_FFFF, RCX: 2})
    assert s.gprs[RAX] == (-3) & 0xFFFF_FFFF and s.gprs[RDX] == (-1) & 0xFFFF_FFFF
    s = run("idiv bl", {RAX: 0xFF80, RBX: 1})  # -128 / 1 = -128 fits on 80286+
    assert s.gprs[RAX] == 0x0080


@pytest.mark.parametrize("source, regs", [
    ("div cl", {RAX: 0x1234, RCX: 0}),  # divide by zero
    ("div cl", {RAX: 0x1234, RCX: 0x12}),  # quotient 0x102 > 0xFF
    ("idiv bx", {RAX: 0, RDX: 0x4000, RBX: 0x7FFF}),  # 2**30 / 0x7FFF = 0x8002 > 0x7FFF
    ("idiv rcx", {RAX: 0, RDX: 1 << 63, RCX: 2 ** 64 - 1}),  # -2**127 / -1
])
def test_divide_error(source: str, regs: dict[int, int]) -> None:
    _install_de_handlers("x86-64")
    s = run(source, regs)
    assert s.rip == DE_HANDLER + 1
    for index, value in regs.items():  # nothing was written
        assert s.gprs[index] == value


def test_8086_idiv_quotient_minus_128_faults_and_rep_negates() -> None:
    _install_de_handlers("8086")
    s = run("idiv bl", {RAX: 0xFF80, RBX: 1}, bits=16, model="8086")
    assert s.rip == REAL_DE_HANDLER + 1
    # REP IDIV on the 8086: 100 / 7 = 14 r 2, quotient negated.
    s = run("db 0xF3\nidiv bl", {RAX: 100, RBX: 7}, bits=16, model="8086")
    assert s.gprs[RAX] & 0xFFFF == (2 << 8) | (-14 & 0xFF)
    # The 80286 accepts -128.
    s = run("idiv bl", {RAX: 0xFF80, RBX: 1}, bits=16, model="80286")
    assert s.gprs[RAX] & 0xFF == 0x80


@pytest.mark.parametrize("bits", [8, 16, 32, 64])
def test_random_against_exact_arithmetic(bits: int) -> None:
    rng = random.Random(bits)
    m = (1 << bits) - 1
    reg = {8: "bl", 16: "bx", 32: "ebx", 64: "rbx"}[bits]
    for _ in range(10):
        a, b = rng.getrandbits(bits), rng.getrandbits(bits) | 1
        s = run(f"mul {reg}", {RAX: a, RBX: b})
        p = a * b
        got = (s.gprs[RAX] & 0xFFFF) if bits == 8 else \
            ((s.gprs[RDX] & m) << bits) | (s.gprs[RAX] & m)
        assert got == p
        assert bool(s.rflags & CF) == (p >> bits != 0)
        s = run(f"imul {reg}", {RAX: a, RBX: b})
        p = signed(a, bits) * signed(b, bits)
        got = (s.gprs[RAX] & 0xFFFF) if bits == 8 else \
            ((s.gprs[RDX] & m) << bits) | (s.gprs[RAX] & m)
        assert got == p & ((1 << (2 * bits)) - 1)
        assert bool(s.rflags & OF) == (p != signed(p & m, bits))
        # DIV of a dividend whose high half is below the divisor never overflows.
        hi = rng.randrange(b)
        s = run(f"div {reg}", {RAX: (hi << 8) | a if bits == 8 else a, RDX: hi, RBX: b})
        q, r = divmod((hi << bits) | a, b)
        if bits == 8:
            assert s.gprs[RAX] & 0xFFFF == (r << 8) | q
        else:
            assert (s.gprs[RAX] & m, s.gprs[RDX] & m) == (q, r)
