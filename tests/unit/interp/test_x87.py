"""x87 semantics through the interpreter: facts from the SDM, checked in FNSAVE images.

Each program ends with FNSAVE [0x300100] (SDM Vol. 1 Figure 8-9, 32-bit protected-mode
layout: FCW, FSW, FTW, FIP, FOP/FCS, FDP, FDS, then ST(0)-ST(7) as 10-byte registers).
"""

from __future__ import annotations

import math
import struct

import pytest

from pyvmm.machine.stop import StopKind
from tests.unit.interp.guest import HAVE_NASM
from tests.unit.interp.test_interp_system import run64

pytestmark = pytest.mark.skipif(not HAVE_NASM, reason="nasm is not installed")

SAVE = 0x300100
IE, DE, ZE, PE, SF, ES = 0x01, 0x02, 0x04, 0x20, 0x40, 0x80
C1 = 1 << 9
INDEFINITE = 0xFFFF_C000_0000_0000_0000


def run(source: str, data: bytes = b""):  # noqa: ANN201
    def setup(board, state) -> None:  # noqa: ANN001
        board.memory.write(0x300000, data)
    stop, _, board, _ = run64(source + "\nfnsave [0x300100]", setup=setup)
    assert stop.kind is StopKind.HALTED, stop.describe()
    raw = bytes(board.memory.read_u8(SAVE + i) for i in range(108))
    return raw, board


def sw(raw: bytes) -> int:
    return struct.unpack_from("<H", raw, 4)[0]


def st(raw: bytes, i: int) -> int:
    return int.from_bytes(raw[28 + 10 * i:38 + 10 * i], "little")


def test_fst_m64_rounds_to_double_whatever_the_precision_control() -> None:
    """PC affects only arithmetic results (SDM Vol. 1 §8.1.5.2); FST rounds per RC."""
    for cw in (0x037F, 0x007F):  # PC = 64 bits, PC = 24 bits
        raw, board = run(f"mov word [0x300000], {cw:#x}\nfldcw [0x300000]\nfldlg2\n"
                         "fstp qword [0x300010]")
        assert board.memory.read_u64(0x300010) == struct.unpack(
            "<Q", struct.pack("<d", math.log10(2)))[0]
        assert sw(raw) & (PE | C1) == PE | C1  # inexact, rounded up


def test_fxch_st0_exchanges_st0_with_itself() -> None:
    """D9 C8 is FXCH ST(0): nothing moves, C1 := 0 (SDM Vol. 2A "FXCH")."""
    raw, _ = run("fld1\nfldz\nfxch st0")
    assert st(raw, 0) == 0 and st(raw, 1) == 0x3FFF_8000_0000_0000_0000


def test_fnsave_records_the_selectors_and_ones_in_reserved_halves() -> None:
    """FCS/FDS are the CS and operand-segment selectors (SDM Vol. 1 §8.1.8) on a CPU
    without CPUID.(EAX=7):EBX[13]; the reserved upper halves store as 1s."""
    raw, _ = run("fld qword [0x300000]", struct.pack("<d", 1.5))
    cs, fds = struct.unpack_from("<H", raw, 16)[0], struct.unpack_from("<H", raw, 24)[0]
    assert cs == 0x08 and fds == 0x10  # tests/unit/interp/guest.py GDT selectors
    assert raw[26:28] == b"\xff\xff" and raw[2:4] == b"\xff\xff"
    assert struct.unpack_from("<I", raw, 20)[0] == 0x300000  # FDP


def test_unmasked_denormal_stops_before_the_result() -> None:
    """An unmasked #D leaves the operands unchanged and reports no PE (SDM Vol. 1
    §8.5.2, §8.7)."""
    tiny = (1).to_bytes(10, "little")  # an m80 denormal: loading it is not #D
    raw, _ = run("mov word [0x300020], 0x037D\nfldcw [0x300020]\nfld tword [0x300000]\n"
                 "fld1\nfadd st0, st1", tiny)
    assert sw(raw) & 0x3F == DE and sw(raw) & ES
    assert st(raw, 0) == 0x3FFF_8000_0000_0000_0000


def test_divide_by_zero_hides_the_denormal_operand() -> None:
    """#Z outranks #D (SDM Vol. 1 §4.9.2)."""
    tiny = (1).to_bytes(10, "little")
    raw, _ = run("fldz\nfld tword [0x300000]\nfdivrp st1, st0", tiny)
    assert sw(raw) & 0x3F == ZE


def test_fabs_of_an_empty_register_is_a_stack_underflow() -> None:
    raw, _ = run("fabs")
    assert sw(raw) & (IE | SF | C1) == IE | SF
    assert st(raw, 0) == INDEFINITE


def test_fbstp_of_a_denormal_reports_no_denormal_exception() -> None:
    """FBSTP lists #IS, #IA and #P only (SDM Vol. 2A "FBSTP"): 0 stored, PE."""
    tiny = (1).to_bytes(10, "little")
    raw, board = run("mov word [0x300020], 0x037D\nfldcw [0x300020]\nfld tword [0x300000]\n"
                     "fbstp tword [0x300040]", tiny)
    assert sw(raw) & 0x3F == PE
    assert bytes(board.memory.read_u8(0x300040 + i) for i in range(10)) == bytes(10)


def test_fld_st_overflow_sets_c1_and_fcmov_keeps_it() -> None:
    """FLD on a full stack: #IS with C1 = 1 (SDM Vol. 1 §8.5.1.1); FCMOVcc changes C1
    only on underflow (SDM Vol. 2A "FCMOVcc")."""
    raw, _ = run("fld1\n" * 8 + "fld st0\nclc\nfcmovb st0, st1")
    assert sw(raw) & (IE | SF | C1) == IE | SF | C1
    assert st(raw, 0) == INDEFINITE
