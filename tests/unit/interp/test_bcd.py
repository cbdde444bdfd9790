"""Interpreter DAA/DAS/AAA/AAS/AAM/AAD (semantics/bcd.py), in 16-bit real mode.

Expected values are decimal arithmetic worked by hand (Intel SDM Vol. 2A "DAA", "DAS",
"AAA", "AAS", "AAM", "AAD").
"""

from __future__ import annotations

import pytest

from tests.unit.interp.guest import HAVE_NASM
from tests.unit.interp.test_shift import RAX, RBX, _machine, run

pytestmark = pytest.mark.skipif(not HAVE_NASM, reason="nasm is not installed")

CF, AF, ZF, SF = 0x1, 0x10, 0x40, 0x80
REAL_DE_HANDLER = 0x2000


def bcd16(source: str, ax: int, rflags: int = 0, model: str = "80286", bx: int = 0):
    return run(source, {RAX: ax, RBX: bx}, rflags=rflags, bits=16, model=model)


def test_daa_after_packed_add() -> None:
    # 0x38 + 0x45 = 0x7D; DAA -> 0x83 (38 + 45 = 83), no carry.
    s = bcd16("add al, bl\ndaa", 0x38, bx=0x45)
    assert s.gprs[RAX] & 0xFF == 0x83 and not s.rflags & CF and s.rflags & AF
    # 0x99 + 0x01 = 0x9A; DAA -> 0x00 with CF (99 + 1 = 100).
    s = bcd16("add al, bl\ndaa", 0x99, bx=0x01)
    assert s.gprs[RAX] & 0xFF == 0x00 and s.rflags & (CF | ZF) == CF | ZF


def test_das_after_packed_sub() -> None:
    # 0x42 - 0x17 = 0x2B; DAS -> 0x25 (42 - 17 = 25).
    s = bcd16("sub al, bl\ndas", 0x42, bx=0x17)
    assert s.gprs[RAX] & 0xFF == 0x25 and not s.rflags & CF
    # 0x10 - 0x20 = 0xF0 with borrow; DAS -> 0x90 and CF (10 - 20 = -10 -> 90 borrow 1).
    s = bcd16("sub al, bl\ndas", 0x10, bx=0x20)
    assert s.gprs[RAX] & 0xFF == 0x90 and s.rflags & CF


def test_das_borrow_from_low_adjust_sets_cf_on_286_not_8086() -> None:
    s = bcd16("das", 0x00, rflags=AF, model="80286")
    assert s.gprs[RAX] & 0xFF == 0xFA and s.rflags & CF
    s = bcd16("das", 0x00, rflags=AF, model="8086")
    assert s.gprs[RAX] & 0xFF == 0xFA and not s.rflags & CF


def test_aaa_aas() -> None:
    # 8 + 5 = 13 unpacked: AL 0x0D -> AX 0x0103.
    s = bcd16("aaa", 0x000D)
    assert s.gprs[RAX] & 0xFFFF == 0x0103 and s.rflags & (CF | AF) == CF | AF
    s = bcd16("aaa", 0x0005)  # nothing to adjust, AL high nibble cleared
    assert s.gprs[RAX] & 0xFFFF == 0x0005 and not s.rflags & (CF | AF)
    # 3 - 5: AL 0xFE (borrowed), AF set -> AX 0x0008 after AH - 1 ... from AH = 1: 0x0008.
    s = bcd16("aas", 0x01FE, rflags=AF)
    assert s.gprs[RAX] & 0xFFFF == 0x0008 and s.rflags & CF


def test_aaa_carry_into_ah_differs_between_8086_and_286() -> None:
    # AL = 0xFB: the 80286 adds 0x106 to AX (the +6 carries into AH: AH + 2); the 8086
    # adds 6 to AL and 1 to AH separately.
    assert bcd16("aaa", 0x00FB, model="80286").gprs[RAX] & 0xFFFF == 0x0201
    assert bcd16("aaa", 0x00FB, model="8086").gprs[RAX] & 0xFFFF == 0x0101


def test_aam_aad() -> None:
    s = bcd16("aam", 0x004F)  # 79 -> AH 7, AL 9
    assert s.gprs[RAX] & 0xFFFF == 0x0709
    s = bcd16("aad", 0x0709)  # 7 * 10 + 9 = 79
    assert s.gprs[RAX] & 0xFFFF == 0x004F and not s.rflags & (ZF | SF)
    s = bcd16("db 0xD4, 16", 0x00AB)  # AAM 16 splits nibbles
    assert s.gprs[RAX] & 0xFFFF == 0x0A0B
    s = bcd16("db 0xD5, 16", 0x0A0B)  # AAD 16 joins them
    assert s.gprs[RAX] & 0xFFFF == 0x00AB and s.rflags & SF


def test_aam_zero_is_divide_error() -> None:
    board, _ = _machine("80286")
    board.memory.write(REAL_DE_HANDLER, b"\xF4")
    board.memory.write_u32(0, REAL_DE_HANDLER)
    s = bcd16("db 0xD4, 0", 0x1234)
    assert s.rip == REAL_DE_HANDLER + 1 and s.gprs[RAX] == 0x1234
