"""Dead flag-write removal (pyvmm/engines/jit/optimize.py) on hand-written statement lists."""

from __future__ import annotations

import ast

from pyvmm.engines.jit.optimize import classify, drop_dead_flags

LAZY_ADD = "cpu.lf_op = LF_ADD; cpu.lf_a = a; cpu.lf_b = v; cpu.lf_r = r; cpu.lf_size = 8"
LAZY_INC = "cpu.lf_op = LF_INC; cpu.lf_a = a; cpu.lf_b = 1; cpu.lf_r = r; cpu.lf_size = 8"
EAGER = "cpu.flags = cpu.flags & -2262 | cf | (r == 0) << 6\ncpu.lf_op = 0"


def _run(text: str) -> tuple[str, int]:
    stmts, removed = drop_dead_flags(classify(ast.parse(text).body))
    return "\n".join(s.text for s in stmts), removed


def test_overwritten_lazy_result_is_dropped() -> None:
    out, removed = _run(f"r = a + v\n{LAZY_ADD}\nregs[0] = r\nr = a ^ v\n{LAZY_ADD}")
    assert removed == 1
    assert out.count("cpu.lf_op = LF_ADD") == 1
    assert out.index("regs[0] = r") < out.index("cpu.lf_op")  # the later one stays


def test_eager_flags_killed_by_a_lazy_definition() -> None:
    out, removed = _run(f"{EAGER}\nregs[1] = 5\n{LAZY_ADD}")
    assert removed == 1
    assert "cpu.flags" not in out


def test_a_call_in_between_keeps_the_flags_alive() -> None:
    # read() may fault, and a fault pushes RFLAGS: the first result must stay.
    _, removed = _run(f"{LAZY_ADD}\nx = read(3, ea, 8)\n{LAZY_ADD}")
    assert removed == 0


def test_a_reader_in_between_keeps_the_flags_alive() -> None:
    _, removed = _run(f"{LAZY_ADD}\nc = fl.get_cf(cpu)\n{LAZY_ADD}")
    assert removed == 0


def test_inc_is_not_a_full_definition() -> None:
    # INC/DEC keep CF from before (SDM Vol. 2A "INC"): the earlier result is live.
    _, removed = _run(f"{EAGER}\n{LAZY_INC}")
    assert removed == 0


def test_last_definition_always_survives() -> None:
    out, removed = _run(f"{LAZY_ADD}\nregs[0] = r")
    assert removed == 0
    assert "cpu.lf_op = LF_ADD" in out
