"""Guest registers held in Python locals for the life of a block.

Instruction bodies address the register file as `regs[N]` (a list item: a
closure load, a constant and a subscript per use).  A block instead loads every
register it names into a local `_rN` once on entry and stores them back when it
leaves: at its normal end and in its exception handlers, so a fault, an INT n
or an end of batch still sees exact architectural state (SDM Vol. 3A §6.5: a
fault leaves the state as it was before the faulting instruction; the
interpreter's handlers give that state, and a body's register writes reach the
locals in the same order as they would reach the list).

Code the block does not see as text may read or write the list itself: any
call other than the memory accessors and the flag helpers (a stack push, an
interpreter handler called in place, a device), or a mention of `cpu.regs`.
Such a statement is a *barrier*: the locals are stored before it, it runs on
the list itself (`regs[N]`, not renamed: it may write a register through both
its own text and the code it calls), and the locals are loaded again after it.
"""

from __future__ import annotations

import re

_REG = re.compile(r"(?<![\w.])regs\[(\d+)\]")
_ANY_REGS = re.compile(r"(?<![\w.])regs\b")
_CALL = re.compile(r"([\w.]+|\])\s*\(")
# Calls that never touch the register list: guest memory (cpu.read/cpu.write
# bound as `read`/`write`; a device behind MMIO has no access to the CPU's
# registers), the lazy-flag helpers and the condition table (flags only).
_SAFE_CALLS = frozenset({"read", "write", "]", "int", "bool", "len"})
_SAFE_PREFIXES = ("fl.",)


def registers(texts: list[str]) -> set[int] | None:
    """Register numbers named as `regs[N]`; None when `regs` is used any other way."""
    found: set[int] = set()
    for text in texts:
        literal = _REG.findall(text)
        if len(literal) != len(_ANY_REGS.findall(text)):
            return None  # a computed index, or the list itself handed on
        found.update(int(n) for n in literal)
    return found


def is_barrier(text: str) -> bool:
    """Whether `text` may read or write the register list behind the block's back."""
    if "cpu.regs" in text:
        return True
    for match in _CALL.finditer(text):
        name = match.group(1)
        if name not in _SAFE_CALLS and not name.startswith(_SAFE_PREFIXES):
            return True
    return False


def rename(text: str) -> str:
    """`regs[N]` -> `_rN`."""
    return _REG.sub(r"_r\1", text)


def store(regs: list[int]) -> list[str]:
    """Statements writing the locals back to the list."""
    return [f"regs[{n}] = _r{n}" for n in regs]


def load(regs: list[int]) -> list[str]:
    """Statements loading the locals from the list."""
    return [f"_r{n} = regs[{n}]" for n in regs]
