"""Interpreter BT/BTS/BTR/BTC/BSF/BSR (semantics/bitops.py).

Expected values follow Intel SDM Vol. 2A ("BT", "BTS", "BTR", "BTC", "BSF", "BSR") and
are worked out by hand, including the signed bit-string offset of the memory forms.
"""

from __future__ import annotations

import pytest

from tests.unit.interp.guest import HAVE_NASM
from tests.unit.interp.test_shift import RAX, RBX, RCX, _machine, run

pytestmark = pytest.mark.skipif(not HAVE_NASM, reason="nasm is not installed")

CF, ZF = 0x1, 0x40
BUF = 0x300000


def test_bt_register_offset_is_modulo_width() -> None:
    s = run("bt eax, ecx", {RAX: 1 << 3, RCX: 35})  # 35 mod 32 = 3
    assert s.rflags & CF
    s = run("bt ax, cx", {RAX: 1 << 3, RCX: 4})
    assert not s.rflags & CF


def test_bts_btr_btc_register() -> None:
    s = run("bts rax, 63", {RAX: 0}, rflags=ZF)
    assert s.gprs[RAX] == 1 << 63 and not s.rflags & CF and s.rflags & ZF  # ZF untouched
    s = run("btr ebx, 0", {RBX: 0xFFFF_FFFF_0000_0001})  # 32-bit write zero-extends
    assert s.gprs[RBX] == 0 and s.rflags & CF
    s = run("btc cx, 15", {RCX: 0x8000})
    assert s.gprs[RCX] == 0 and s.rflags & CF


def test_memory_bit_string_reaches_beyond_the_operand() -> None:
    mem = _machine("x86-64")[0].memory
    mem.write(BUF - 16, bytes(32))
    # Offset 100 in a dword bit string: dword 3 (bytes 12..15), bit 4 -> byte 12, bit 4.
    run("bts dword [rbx], ecx", {RBX: BUF, RCX: 100})
    assert mem.read(BUF + 12, 1) == b"\x10"
    # Offset -1: the dword just below, bit 31 -> byte BUF-1, bit 7.
    s = run("btc dword [rbx], ecx", {RBX: BUF, RCX: 0xFFFF_FFFF})
    assert mem.read(BUF - 1, 1) == b"\x80" and not s.rflags & CF
    # An immediate offset is taken modulo the width: 36 -> bit 4 of the addressed word.
    s = run("bt word [rbx + 12], 36", {RBX: BUF})
    assert s.rflags & CF


def test_bsf_bsr() -> None:
    s = run("bsf ecx, eax", {RAX: 0x0001_0100})
    assert s.gprs[RCX] == 8 and not s.rflags & ZF
    s = run("bsr rcx, rax", {RAX: 0x0001_0100})
    assert s.gprs[RCX] == 16
    # Zero source: ZF = 1 and the destination keeps its value.
    s = run("bsf cx, ax", {RAX: 0, RCX: 0x7777})
    assert s.gprs[RCX] == 0x7777 and s.rflags & ZF


def test_bitops_are_ud_on_80286() -> None:
    board, _ = _machine("80286")
    board.memory.write(0x2000, b"\xF4")
    board.memory.write_u32(6 * 4, 0x2000)  # IVT entry 6 (#UD) -> 0000:2000
    s = run("bt ax, cx", bits=16, model="80286")
    assert s.rip == 0x2001
