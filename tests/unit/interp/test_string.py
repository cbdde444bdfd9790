"""Interpreter string instructions (semantics/string.py): REP forms, DF, segments, sizes.

Expected memory and registers follow Intel SDM Vol. 2B ("MOVS", "CMPS", "SCAS", "LODS",
"STOS", "INS", "OUTS", "REP/REPE/REPNE") and are computed independently in the test.
"""

from __future__ import annotations

import pytest

from tests.unit.interp.guest import HAVE_NASM, set_gate
from tests.unit.interp.test_shift import RAX, RCX, RDX, _machine, run

pytestmark = pytest.mark.skipif(not HAVE_NASM, reason="nasm is not installed")

RSI, RDI = 6, 7
CF, ZF, DF = 0x1, 0x40, 0x400
SRC, DST = 0x300000, 0x310000


def memory(model: str = "x86-64"):  # noqa: ANN201
    return _machine(model)[0].memory


def test_rep_movsb_forward_copies_and_counts_down() -> None:
    mem = memory()
    mem.write(SRC, bytes(range(1, 41)))
    mem.write(DST, bytes(40))
    s = run("rep movsb", {RSI: SRC, RDI: DST, RCX: 40})
    assert mem.read(DST, 40) == bytes(range(1, 41))
    assert (s.gprs[RSI], s.gprs[RDI], s.gprs[RCX]) == (SRC + 40, DST + 40, 0)


def test_rep_movsd_backward_with_df() -> None:
    mem = memory()
    mem.write(SRC, b"AAAABBBBCCCC")
    mem.write(DST, bytes(12))
    s = run("std\nrep movsd\ncld", {RSI: SRC + 8, RDI: DST + 8, RCX: 3})
    assert mem.read(DST, 12) == b"AAAABBBBCCCC"
    assert (s.gprs[RSI], s.gprs[RDI]) == (SRC - 4, DST - 4)


def test_rep_with_zero_count_does_nothing() -> None:
    mem = memory()
    mem.write(DST, b"\x55" * 4)
    s = run("rep stosb", {RAX: 0xAA, RDI: DST, RCX: 0}, rflags=CF | ZF)
    assert mem.read(DST, 4) == b"\x55" * 4 and s.gprs[RDI] == DST
    s = run("repe cmpsb", {RSI: SRC, RDI: DST, RCX: 0}, rflags=CF | ZF)
    assert s.rflags & (CF | ZF) == CF | ZF


def test_repe_cmpsb_stops_at_first_difference() -> None:
    mem = memory()
    mem.write(SRC, b"hello world")
    mem.write(DST, b"hello there")
    s = run("repe cmpsb", {RSI: SRC, RDI: DST, RCX: 11})
    # Stops after comparing index 6 ('w' vs 't'): 7 elements done, ZF = 0, 'w' > 't'.
    assert s.gprs[RCX] == 4 and s.gprs[RSI] == SRC + 7 and not s.rflags & ZF
    assert not s.rflags & CF


def test_repne_scasw_finds_value() -> None:
    mem = memory()
    words = [5, 9, 0x1234, 7]
    mem.write(DST, b"".join(w.to_bytes(2, "little") for w in words))
    s = run("repne scasw", {RAX: 0x1234, RDI: DST, RCX: 10})
    assert s.gprs[RDI] == DST + 6 and s.gprs[RCX] == 7 and s.rflags & ZF


def test_lodsq_stosq() -> None:
    mem = memory()
    mem.write(SRC, (0x1122334455667788).to_bytes(8, "little"))
    s = run("lodsq\nstosq", {RSI: SRC, RDI: DST})
    assert s.gprs[RAX] == 0x1122334455667788
    assert mem.read(DST, 8) == (0x1122334455667788).to_bytes(8, "little")


def test_address_size_override_uses_esi_edi_ecx() -> None:
    mem = memory()
    mem.write(SRC, b"xyz")
    mem.write(DST, bytes(3))
    # a32 rep movsb: only ESI/EDI/ECX count; upper halves of RSI/RDI are ignored and
    # the 32-bit results zero-extend.
    s = run("a32 rep movsb", {RSI: (1 << 40) | SRC, RDI: (1 << 40) | DST,
                              RCX: (1 << 40) | 3})
    assert mem.read(DST, 3) == b"xyz"
    assert (s.gprs[RSI], s.gprs[RDI], s.gprs[RCX]) == (SRC + 3, DST + 3, 0)


def test_real_mode_segment_override_and_16bit_wrap() -> None:
    mem = memory("80286")
    # Source ES:0xFFFF via override (ES = 0x1000), destination ES:DI; SI wraps to 0.
    mem.write(0x1FFFF, b"\x42")
    s = run("mov ax, 0x1000\nmov es, ax\nes movsb", {RSI: 0xFFFF, RDI: 0x10},
            bits=16, model="80286")
    assert mem.read(0x10010, 1) == b"\x42"
    assert s.gprs[RSI] & 0xFFFF == 0 and s.gprs[RDI] & 0xFFFF == 0x11


def test_fault_mid_rep_leaves_registers_at_completed_iterations() -> None:
    board, _ = _machine("x86-64")
    board.memory.write(0x201000, b"\xF4")
    set_gate(board, 14, 0x201000)
    end = 0x800000  # first unmapped byte (guest.py maps 8 MiB)
    s = run("rep stosb", {RAX: 1, RDI: end - 3, RCX: 10})
    assert s.rip == 0x201000 + 1
    assert s.gprs[RDI] == end and s.gprs[RCX] == 7
    assert board.memory.read(end - 3, 3) == b"\x01\x01\x01"


def test_ins_outs_use_dx_port() -> None:
    # No device: an empty bus reads all ones.
    mem = memory()
    s = run("rep insw", {RDX: 0x1F0, RDI: DST, RCX: 2})
    assert mem.read(DST, 4) == b"\xFF" * 4 and s.gprs[RDI] == DST + 4
    s = run("outsb", {RDX: 0x80, RSI: SRC})
    assert s.gprs[RSI] == SRC + 1


def test_long_rep_stosd_across_pages_stops_exactly() -> None:
    mem = memory()
    mem.write(DST, b"\xEE" * 0x4000)
    s = run("rep stosd", {RAX: 0x44332211, RDI: DST + 2, RCX: 3000})
    assert mem.read(DST + 2, 12000) == bytes([0x11, 0x22, 0x33, 0x44]) * 3000
    assert mem.read(DST, 2) == b"\xEE\xEE" and mem.read(DST + 12002, 4) == b"\xEE" * 4
    assert s.gprs[RDI] == DST + 12002 and s.gprs[RCX] == 0


def test_overlapping_forward_movsb_replicates_like_single_steps() -> None:
    mem = memory()
    mem.write(SRC, b"ab" + bytes(20))
    run("rep movsb", {RSI: SRC, RDI: SRC + 2, RCX: 20})
    assert mem.read(SRC, 22) == b"ab" * 11


def test_long_movsq_across_pages() -> None:
    mem = memory()
    data = bytes((i * 7 + 3) & 0xFF for i in range(0x3000))
    mem.write(SRC + 5, data)
    s = run("rep movsq", {RSI: SRC + 5, RDI: DST + 1, RCX: 0x3000 // 8})
    assert mem.read(DST + 1, 0x3000) == data
    assert (s.gprs[RSI], s.gprs[RDI]) == (SRC + 5 + 0x3000, DST + 1 + 0x3000)


def test_rep_movsb_over_following_code_is_seen() -> None:
    # The copy overwrites the instruction right after it: the new one must run.
    mem = memory()
    new_code = bytes([0xB8, 2, 0, 0, 0])  # mov eax, 2
    mem.write(SRC, new_code)
    s = run("mov rdi, target\nrep movsb\ntarget: mov eax, 1", {RSI: SRC, RCX: len(new_code)})
    assert s.gprs[RAX] == 2
