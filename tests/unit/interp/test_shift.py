"""Interpreter shifts and rotates (semantics/shift.py) against the SDM's definitions.

Expected values are worked out by hand from Intel SDM Vol. 2B ("SAL/SAR/SHL/SHR",
"RCL/RCR/ROL/ROR", "SHLD", "SHRD"), or by a bit-at-a-time reference model (one
single-bit step repeated `count` times, as the SDM's pseudo-code loops).
"""

from __future__ import annotations

import random
from functools import cache

import pytest

from pyvmm.cpu.state import CpuState
from pyvmm.engines.interp.engine import InterpreterEngine
from pyvmm.machine.stop import StopKind
from tests.conformance.machine import BareBoard
from tests.unit.interp.guest import HAVE_NASM, assemble, long_mode_state

pytestmark = pytest.mark.skipif(not HAVE_NASM, reason="nasm is not installed")

CODE = 0x200000
REAL_CODE = 0x1000
CF, PF, AF, ZF, SF, OF = 0x1, 0x4, 0x10, 0x40, 0x80, 0x800
RAX, RCX, RDX, RBX = 0, 1, 2, 3


@cache
def _code(source: str, bits: int) -> bytes:
    return assemble(source + "\nhlt", CODE if bits == 64 else REAL_CODE, bits)


@cache
def _machine(model: str) -> tuple[BareBoard, InterpreterEngine]:
    board = BareBoard(16 << 20)  # more than the 8 MiB long_mode_state maps
    return board, InterpreterEngine(board, model)


def run(source: str, regs: dict[int, int] | None = None, rflags: int = 0x2, bits: int = 64,
        model: str = "x86-64") -> CpuState:
    """Run `source` (then HLT) with the given GPRs and RFLAGS; return the final state."""
    board, engine = _machine(model)
    if bits == 64:
        state = long_mode_state(board, CODE)
        board.memory.write(CODE, _code(source, bits))
    else:  # real mode, all segments 0
        state = CpuState()
        state.rip = REAL_CODE
        board.memory.write(REAL_CODE, _code(source, bits))
    for index, value in (regs or {}).items():
        state.gprs[index] = value
    state.rflags = rflags | 0x2
    engine.set_state(state)
    stop = engine.run(timeout=5)
    assert stop.kind is StopKind.HALTED, stop.describe()
    return engine.get_state()


# -- fixed cases ---------------------------------------------------------------------------

def test_shl_by_one_sets_cf_and_of() -> None:
    # 0x81 << 1 = 0x102: AL = 0x02, CF = 1 (bit out), OF = MSB(result) ^ CF = 0 ^ 1 = 1.
    s = run("shl al, 1", {RAX: 0x81})
    assert s.gprs[RAX] == 0x02
    assert s.rflags & (CF | OF | ZF | SF) == CF | OF


def test_shr_cl_last_bit_out_and_zero_flag() -> None:
    # 0x80 >> 8 = 0 with the last bit out = bit 7 = 1.
    s = run("shr al, cl", {RAX: 0x80, RCX: 8})
    assert s.gprs[RAX] & 0xFF == 0
    assert s.rflags & (CF | ZF | PF) == CF | ZF | PF


def test_sar_keeps_sign() -> None:
    s = run("sar ax, 3", {RAX: 0x8004})  # 0x8004 >> 3 arithmetic = 0xF000, CF = bit 2 = 1
    assert s.gprs[RAX] == 0xF000
    assert s.rflags & (CF | SF | OF) == CF | SF


def test_count_zero_changes_no_flags() -> None:
    flags = CF | ZF | SF | OF | AF | PF
    s = run("shl eax, cl", {RAX: 0x1234, RCX: 0x20}, rflags=flags)  # 0x20 & 0x1F = 0
    assert s.gprs[RAX] == 0x1234
    assert s.rflags & flags == flags


def test_count_zero_still_zero_extends_32bit_register() -> None:
    s = run("rol eax, cl", {RAX: 0xFFFF_FFFF_8000_0001, RCX: 32})
    assert s.gprs[RAX] == 0x8000_0001


def test_64bit_count_uses_six_bits() -> None:
    s = run("shl rax, cl", {RAX: 1, RCX: 0x3F})
    assert s.gprs[RAX] == 1 << 63
    s = run("shl rax, cl", {RAX: 1, RCX: 0x40})  # masks to 0
    assert s.gprs[RAX] == 1


def test_rol_ror_flags() -> None:
    s = run("rol al, 1", {RAX: 0x80})  # -> 0x01, CF = 1, OF = MSB(0) ^ CF = 1
    assert s.gprs[RAX] == 0x01 and s.rflags & (CF | OF) == CF | OF
    s = run("ror al, 1", {RAX: 0x01})  # -> 0x80, CF = MSB = 1, OF = bit7 ^ bit6 = 1
    assert s.gprs[RAX] == 0x80 and s.rflags & (CF | OF) == CF | OF


def test_rcl_8bit_count_is_modulo_9() -> None:
    # A 9-bit rotate (AL plus CF) by 9 returns everything to where it was.
    s = run("rcl al, cl", {RAX: 0x5A, RCX: 9}, rflags=CF)
    assert s.gprs[RAX] == 0x5A and s.rflags & CF
    # By 1: CF goes into bit 0, bit 7 goes to CF.
    s = run("rcl al, 1", {RAX: 0x80}, rflags=CF)
    assert s.gprs[RAX] == 0x01 and s.rflags & CF


def test_rcr_16bit() -> None:
    s = run("rcr bx, 1", {RBX: 0x0001}, rflags=CF)  # CF -> bit 15, bit 0 -> CF
    assert s.gprs[RBX] == 0x8000
    assert s.rflags & (CF | OF) == CF | OF  # OF = bit15 ^ bit14 of the result = 1


def test_shift_memory_operand() -> None:
    s = run("mov dword [0x300000], 0x40000000\nshl dword [0x300000], 2\n"
            "mov eax, [0x300000]")
    assert s.gprs[RAX] == 0 and s.rflags & (CF | ZF) == CF | ZF


def test_shld_shrd() -> None:
    s = run("shld eax, ebx, 8", {RAX: 0x11223344, RBX: 0xAABBCCDD})
    assert s.gprs[RAX] == 0x223344AA and s.rflags & CF  # CF = bit 24 of 0x11223344 = 1
    s = run("shrd eax, ebx, 4", {RAX: 0x11223344, RBX: 0x0000000F})
    assert s.gprs[RAX] == 0xF1122334 and not s.rflags & CF  # CF = bit 3 of 0x44 = 0
    assert s.rflags & SF


def test_shld_cf_is_last_bit_out_of_destination() -> None:
    s = run("shld ax, bx, cl", {RAX: 0x8000, RBX: 0, RCX: 1})
    assert s.gprs[RAX] & 0xFFFF == 0 and s.rflags & (CF | ZF | OF) == CF | ZF | OF


# -- 8086 / 80286 model quirks --------------------------------------------------------------

def test_8086_count_is_not_masked_but_80286_is() -> None:
    # CL = 33: the 8086 shifts 33 times (AX -> 0), the 80286 masks to 1.
    s = run("shl ax, cl", {RAX: 0x4001, RCX: 33}, bits=16, model="8086")
    assert s.gprs[RAX] & 0xFFFF == 0 and not s.rflags & CF
    s = run("shl ax, cl", {RAX: 0x4001, RCX: 33}, bits=16, model="80286")
    assert s.gprs[RAX] & 0xFFFF == 0x8002


def test_8086_setmo() -> None:
    # D0 /6 is SETMO on the 8086: the operand becomes all ones.
    s = run("db 0xD0, 0xF0", {RAX: 0x1234}, bits=16, model="8086")  # setmo al
    assert s.gprs[RAX] & 0xFFFF == 0x12FF


# -- reference model -------------------------------------------------------------------------

def reference(op: str, value: int, count: int, cf: int, bits: int) -> tuple[int, int]:
    """One single-bit step repeated `count` times (SDM pseudo-code); returns (value, CF)."""
    top = bits - 1
    mask = (1 << bits) - 1
    for _ in range(count):
        msb, lsb = value >> top & 1, value & 1
        if op == "shl":
            cf, value = msb, (value << 1) & mask
        elif op == "shr":
            cf, value = lsb, value >> 1
        elif op == "sar":
            cf, value = lsb, (value >> 1) | (msb << top)
        elif op == "rol":
            cf, value = msb, ((value << 1) & mask) | msb
        elif op == "ror":
            cf, value = lsb, (value >> 1) | (lsb << top)
        elif op == "rcl":
            cf, value = msb, ((value << 1) & mask) | cf
        elif op == "rcr":
            cf, value = lsb, (value >> 1) | (cf << top)
    return value, cf


REGS = {8: "dl", 16: "dx", 32: "edx", 64: "rdx"}


@pytest.mark.parametrize("op", ["shl", "shr", "sar", "rol", "ror", "rcl", "rcr"])
@pytest.mark.parametrize("bits", [8, 16, 32, 64])
def test_against_reference_model(op: str, bits: int) -> None:
    rng = random.Random(f"{op}{bits}")
    cmask = 0x3F if bits == 64 else 0x1F
    for _ in range(12):
        value = rng.getrandbits(bits)
        count = rng.choice([1, 2, bits - 1, rng.randrange(256)])
        cf_in = rng.getrandbits(1)
        s = run(f"{op} {REGS[bits]}, cl", {RDX: value, RCX: count}, rflags=cf_in)
        want, want_cf = reference(op, value, count & cmask, cf_in, bits)
        got = s.gprs[RDX] & ((1 << bits) - 1)
        assert got == want, f"{op} {value:#x} by {count}: {got:#x} != {want:#x}"
        if count & cmask and not (op in ("shl", "shr", "sar") and (count & cmask) > bits):
            assert s.rflags & CF == want_cf, f"{op} {value:#x} by {count}: CF"
        if op in ("shl", "shr", "sar") and count & cmask:
            assert bool(s.rflags & ZF) == (want == 0)
            assert bool(s.rflags & SF) == bool(want >> (bits - 1))
