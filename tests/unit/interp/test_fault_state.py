"""Architectural state a page fault leaves, under the interpreter and the JIT.

- A store that crosses into a not-present page faults with CR2 = the first byte of
  that page, the linear address the processor could not translate (SDM Vol. 3A §4.7;
  what the real CPU reports), for plain stores, read-modify-writes and REP MOVS/STOS.
- A REPE/REPNE CMPS or SCAS that faults part-way keeps RCX/RSI/RDI's progress and
  restores EFLAGS to their value before the instruction (SDM Vol. 2B, "REP": "the
  EFLAGS value is restored to the state prior to the execution of the instruction"; the
  host CPU does the same: tests/differential/test_fixed_cases_vs_cpu.py).
"""

from __future__ import annotations

import pytest

from pyvmm.engines.interp.engine import InterpreterEngine
from pyvmm.engines.jit.engine import JitEngine
from pyvmm.machine.stop import StopKind
from tests.conformance.machine import BareBoard
from tests.unit.interp.guest import HAVE_NASM, PD, assemble, long_mode_state, set_gate

pytestmark = pytest.mark.skipif(not HAVE_NASM, reason="nasm is not installed")

CODE = 0x200000
HANDLER = 0x201000
HOLE = 0x400000  # PD entry 2 (0x400000-0x5FFFFF) is left not present
ENGINES = [InterpreterEngine, JitEngine]
RCX, RSI, RDI = 1, 6, 7


def _fault(cls: type, source: str):  # noqa: ANN202
    board = BareBoard(8 << 20)
    engine = cls(board)
    if cls is JitEngine:
        engine.hot_after = 1  # translate code that runs once (the JIT is under test)
    board.memory.write(CODE, assemble(source + "\nhlt", CODE, 64))
    board.memory.write(HANDLER, assemble("pop rbx\nmov rdx, cr2\nhlt", HANDLER, 64))
    state = long_mode_state(board, CODE)
    board.memory.write_u64(PD + 8 * 2, 0)
    set_gate(board, 14, HANDLER)
    engine.set_state(state)
    stop = engine.run(timeout=10)
    assert stop.kind is StopKind.HALTED, stop.describe()
    state = engine.get_state()
    frame_flags = board.memory.read_u64(state.gprs[4] + 16)
    return state, frame_flags, board


@pytest.mark.parametrize("cls", ENGINES)
@pytest.mark.parametrize("source", [
    "mov dword [0x3ffffe], 0x11223344",
    "mov dword [0x3fffff], 0x11223344",
    "mov qword [0x3ffff9], 0",
    "mov word [0x3fffff], 1",
    "add dword [0x3ffffe], 1",
    "xchg [0x3ffffd], eax",
    "mov rdi, 0x3ffff0\nmov ecx, 8\ncld\nrep stosd",
    "mov rdi, 0x3ffff2\nmov rsi, 0x100000\nmov ecx, 8\ncld\nrep movsd",
])
def test_store_crossing_into_a_not_present_page_reports_the_page_base(cls, source) -> None:
    state, _, _ = _fault(cls, source)
    assert state.gprs[2] == HOLE == state.cr2
    assert state.gprs[3] & 0x3 == 0x2  # not present, write


@pytest.mark.parametrize("cls", ENGINES)
@pytest.mark.parametrize("insn", ["repe cmpsb", "repe cmpsd", "repne scasb", "repe scasw"])
@pytest.mark.parametrize("start", [0x3ffff0, HOLE])
def test_rep_compare_faulting_part_way_restores_eflags(cls, insn, start) -> None:
    # Flags before: CF=AF=ZF=PF=1 (1 + -1).  Completed iterations compare zeros with
    # zeros (REPE) or 0x55 with zeros (REPNE SCAS), leaving CF=AF=0: distinguishable.
    scan = f"mov eax, {0x55 if 'repne' in insn else 0}\n" if "scas" in insn else ""
    state, flags, _ = _fault(cls, f"""
        {scan}mov rsi, {start:#x}
        mov rdi, {start:#x}
        {"" if "scas" in insn else "mov rdi, 0x100000"}
        mov ecx, 64
        cld
        mov ebx, 1
        add ebx, -1
        {insn}""")
    assert state.cr2 == HOLE
    size = {"b": 1, "w": 2, "d": 4}[insn[-1]]
    done = (HOLE - start) // size
    assert flags & 0x8D5 == 0x55  # CF AF ZF PF set, SF OF clear: the flags from before
    assert state.gprs[RCX] == 64 - done
    assert state.gprs[RDI] == (start if "scas" in insn else 0x100000) + done * size
