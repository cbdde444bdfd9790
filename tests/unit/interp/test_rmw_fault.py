"""#PF error code of read-modify-write instructions (SDM Vol. 3A §4.7, Figure 4-12).

An instruction that reads and then writes its memory operand (ADD [m], r;
INC; NEG; shifts; XCHG; XADD; CMPXCHG, which writes either way; BTS/BTR/BTC;
CMPXCHG8B) makes a write access: a not-present page reports W/R=1 (error
code 0x2 at CPL 0, 0x6 at CPL 3), and a read-only user page at CPL 3 reports
P|W|U = 0x7.  A plain read (MOV, CMP, BT) reports W/R=0.
"""

from __future__ import annotations

import pytest

from pyvmm.engines.interp.engine import InterpreterEngine
from pyvmm.engines.jit.engine import JitEngine
from pyvmm.machine.stop import StopKind
from tests.conformance.machine import BareBoard
from tests.unit.interp.guest import HAVE_NASM, PD, assemble, long_mode_state

pytestmark = pytest.mark.skipif(not HAVE_NASM, reason="nasm is not installed")

CODE = 0x200000
TARGET = 0x600000  # in the 2 MiB page PD[3], made not present or read-only below
PF = 14

RMW = ["add [0x600000], eax", "adc dword [0x600000], 1", "inc byte [0x600000]",
       "neg qword [0x600000]", "not dword [0x600000]", "shl word [0x600000], 3",
       "rcr dword [0x600000], cl", "xchg [0x600000], eax", "xadd [0x600000], eax",
       "cmpxchg [0x600000], ecx", "btc dword [0x600000], 3", "bts [0x600000], eax",
       "cmpxchg8b [0x600000]", "lock sub [0x600000], rdx", "sbb byte [0x600000], 7"]
READS = ["mov eax, [0x600000]", "cmp [0x600000], eax", "bt dword [0x600000], 3",
         "test [0x600000], ecx", "push qword [0x600000]"]


def fault(source: str, user: bool, pde: int, engine_class: type = InterpreterEngine
          ) -> tuple[int | None, int | None]:
    board = BareBoard(16 << 20)
    engine = engine_class(board)
    if engine_class is JitEngine:
        engine.hot_after = 1  # translate code that runs once (the JIT is under test)
    board.memory.write(CODE, assemble(source + "\nhlt", CODE))
    state = long_mode_state(board, CODE, user=user)
    board.memory.write_u64(PD + 8 * (TARGET >> 21), pde)
    board.memory.write_u64(TARGET, 0x1122334455667788)
    engine.set_state(state)
    engine.intercept_exceptions = {6, 13, PF}
    stop = engine.run(timeout=5)
    assert stop.kind is StopKind.EXCEPTION, stop.describe()
    assert engine.get_state().rip == CODE  # a fault: RIP at the instruction
    # A fault leaves memory unchanged.
    assert board.memory.read_u64(TARGET) == 0x1122334455667788
    return stop.vector, stop.error_code


@pytest.mark.parametrize("source", RMW)
@pytest.mark.parametrize("user,code", [(False, 0x2), (True, 0x6)])
def test_rmw_on_not_present_page_is_a_write_fault(source: str, user: bool, code: int) -> None:
    assert fault(source, user, 0) == (PF, code)


@pytest.mark.parametrize("source", READS)
@pytest.mark.parametrize("user,code", [(False, 0x0), (True, 0x4)])
def test_read_on_not_present_page_is_a_read_fault(source: str, user: bool, code: int) -> None:
    assert fault(source, user, 0) == (PF, code)


@pytest.mark.parametrize("source", ["add [0x600000], eax", "xchg [0x600000], eax",
                                    "cmpxchg [0x600000], ecx", "btr dword [0x600000], 1"])
def test_rmw_on_read_only_user_page(source: str) -> None:
    read_only_user_page = (TARGET & ~0x1FFFFF) | 0x85  # P, U, PS; not writable
    assert fault(source, True, read_only_user_page) == (PF, 0x7)


@pytest.mark.parametrize("source", ["add [0x600000], eax", "xadd [0x600000], eax",
                                    "cmpxchg8b [0x600000]"])
def test_jit_reports_the_same_write_fault(source: str) -> None:
    assert fault(source, True, 0, JitEngine) == (PF, 0x6)
