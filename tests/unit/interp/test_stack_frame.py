"""ENTER and LEAVE in 16-, 32- and 64-bit code (SDM Vol. 2A "ENTER", Vol. 2B "LEAVE").

Expected values follow the SDM pseudo-code by hand: ENTER pushes BP, copies
level-1 frame pointers from the old frame (BP decremented by the operand size
each time), pushes the new frame pointer (FrameTemp) when level > 0, sets
BP = FrameTemp and SP = SP - alloc.  LEAVE sets SP = BP and pops BP with the
operand size.
"""

from __future__ import annotations

from functools import cache

import pytest

from pyvmm.cpu.state import CpuState, SegmentState
from pyvmm.machine.stop import StopKind
from tests.unit.interp.guest import HAVE_NASM, assemble, long_mode_state, machine

pytestmark = pytest.mark.skipif(not HAVE_NASM, reason="nasm is not installed")

CODE64, CODE = 0x200000, 0x1000
RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI = range(8)


@cache
def _code(source: str, bits: int) -> bytes:
    return assemble(source + "\nhlt", CODE64 if bits == 64 else CODE, bits)


def run(source: str, bits: int, regs: dict[int, int], memory: dict[int, tuple[int, int]]
        ) -> tuple[CpuState, object]:
    """Run `source` then HLT in flat `bits`-bit code; memory: address -> (size, value)."""
    board, engine = machine(16 << 20)
    if bits == 64:
        state = long_mode_state(board, CODE64)
    else:
        state = CpuState()
        state.rip = CODE
        if bits == 32:  # flat 32-bit protected mode, no paging
            state.cr0 = 0x11
            state.segments["cs"] = SegmentState.flat32(0x08, code=True)
            for name in ("ds", "es", "ss", "fs", "gs"):
                state.segments[name] = SegmentState.flat32(0x10, code=False)
    board.memory.write(state.rip, _code(source, bits))
    for address, (size, value) in memory.items():
        board.memory.write(address, value.to_bytes(size, "little"))
    for index, value in regs.items():
        state.gprs[index] = value
    engine.set_state(state)
    stop = engine.run(timeout=5)
    assert stop.kind is StopKind.HALTED, stop.describe()
    return engine.get_state(), board


@pytest.mark.parametrize("bits,width", [(16, 2), (32, 4), (64, 8)])
def test_leave_pops_operand_size(bits: int, width: int) -> None:
    bp = 0x6000
    saved = 0x1122334455667788 & ((1 << (8 * width)) - 1)
    state, _ = run("leave", bits, {RSP: 0x7000, RBP: bp}, {bp: (8, 0x1122334455667788)})
    assert state.gprs[RSP] == bp + width
    assert state.gprs[RBP] == saved


@pytest.mark.parametrize("bits,width", [(16, 2), (32, 4), (64, 8)])
def test_enter_level0(bits: int, width: int) -> None:
    sp, bp = 0x7000, 0x5432
    state, board = run("enter 0x20, 0", bits, {RSP: sp, RBP: bp}, {})
    frame_temp = sp - width
    assert state.gprs[RBP] == frame_temp
    assert state.gprs[RSP] == frame_temp - 0x20
    assert int.from_bytes(board.memory.read(frame_temp, width), "little") == bp


@pytest.mark.parametrize("bits,width", [(16, 2), (32, 4), (64, 8)])
def test_enter_level1(bits: int, width: int) -> None:
    sp, bp = 0x7000, 0x5432
    state, board = run("enter 0x10, 1", bits, {RSP: sp, RBP: bp}, {})
    frame_temp = sp - width
    assert state.gprs[RBP] == frame_temp
    assert state.gprs[RSP] == frame_temp - width - 0x10
    read = lambda a: int.from_bytes(board.memory.read(a, width), "little")  # noqa: E731
    assert read(frame_temp) == bp
    assert read(frame_temp - width) == frame_temp  # the new frame pointer itself


@pytest.mark.parametrize("bits,width", [(16, 2), (32, 4), (64, 8)])
def test_enter_level3_copies_outer_frame_pointers(bits: int, width: int) -> None:
    sp, bp = 0x7000, 0x5000
    outer = {bp - width: (width, 0x1A1A), bp - 2 * width: (width, 0x2B2B),
             bp - 3 * width: (width, 0x3C3C)}
    state, board = run("enter 0x8, 3", bits, {RSP: sp, RBP: bp}, outer)
    read = lambda a: int.from_bytes(board.memory.read(a, width), "little")  # noqa: E731
    frame_temp = sp - width
    # push BP, then [BP-w], [BP-2w] (level-1 = 2 copies), then FrameTemp
    assert [read(frame_temp - i * width) for i in range(4)] == [bp, 0x1A1A, 0x2B2B, frame_temp]
    assert state.gprs[RBP] == frame_temp
    assert state.gprs[RSP] == frame_temp - 3 * width - 0x8


@pytest.mark.parametrize("bits", [16, 32, 64])
def test_enter_then_leave_restores_frame(bits: int) -> None:
    state, _ = run("enter 0x40, 2\nmov eax, 7\nleave", bits, {RSP: 0x7000, RBP: 0x6000},
                   {0x6000 - 8: (8, 0x99)})
    assert state.gprs[RSP] == 0x7000
    assert state.gprs[RBP] == 0x6000


def test_enter_with_operand_size_prefix_in_64bit_pushes_words() -> None:
    """66 C8 in 64-bit mode is ENTERW: 2-byte pushes, RBP = FrameTemp (64-bit stack)."""
    state, board = run("o16 enter 0x10, 1", 64, {RSP: 0x7000, RBP: 0x5432}, {})
    assert state.gprs[RBP] == 0x6FFE
    assert state.gprs[RSP] == 0x6FFE - 2 - 0x10
    assert board.memory.read_u16(0x6FFE) == 0x5432
    assert board.memory.read_u16(0x6FFC) == 0x6FFE
