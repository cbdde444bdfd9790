"""Block-level clean-ups the per-instruction interpreter cannot do: dead flag writes.

Most instructions recompute all six status flags (CF PF AF ZF SF OF, SDM Vol. 1
§3.4.3.1), so in straight-line code a flag result is usually overwritten by the
next arithmetic instruction before anything reads it.  In the interpreter's
encoding (interp/flags.py) a *full* flag definition is either

- lazy:  `cpu.lf_op = LF_ADD|LF_SUB|LF_LOGIC; cpu.lf_a = ..; cpu.lf_b = ..;
  cpu.lf_r = ..; cpu.lf_size = ..` (the status bits then come from lf_* alone), or
- eager: `cpu.flags = (cpu.flags & ~0x8D5) | <expr>` followed by `cpu.lf_op = 0`.

A definition is dropped when a later full definition follows with only
*quiet* statements in between: statements that touch no `cpu` attribute, call
nothing and raise nothing, so no exception can expose the flags (a fault
pushes RFLAGS) and nothing reads them.
"""

from __future__ import annotations

import ast

STATUS_CLEAR = ~0x8D5  # RFLAGS with CF PF AF ZF SF OF cleared
_FULL_LAZY = frozenset({"LF_ADD", "LF_SUB", "LF_LOGIC"})
_LAZY_FIELDS = ("lf_op", "lf_a", "lf_b", "lf_r", "lf_size")


def _cpu_target(stmt: ast.stmt) -> str | None:
    """`X` when stmt is `cpu.X = <value>`, else None."""
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
        target = stmt.targets[0]
        if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and \
                target.value.id == "cpu":
            return target.attr
    return None


def _mentions_cpu(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Name) and n.id == "cpu" for n in ast.walk(node))


def quiet(stmt: ast.stmt) -> bool:
    """True when `stmt` cannot raise, call out, or look at the CPU object."""
    for node in ast.walk(stmt):
        if isinstance(node, (ast.Call, ast.Raise, ast.Attribute, ast.Try, ast.While, ast.For,
                             ast.With, ast.Delete, ast.Assert)):
            return False
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Div, ast.FloorDiv,
                                                                ast.Mod, ast.Pow)):
            return False
        if isinstance(node, ast.Name) and node.id == "cpu":
            return False
    return True


def _is_status_clear(node: ast.AST) -> bool:
    """`cpu.flags & ~0x8D5` (status flags cleared, the rest kept)."""
    if not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitAnd)):
        return False
    flags = node.left
    if not (isinstance(flags, ast.Attribute) and flags.attr == "flags"
            and isinstance(flags.value, ast.Name) and flags.value.id == "cpu"):
        return False
    try:
        return ast.literal_eval(node.right) == STATUS_CLEAR
    except ValueError:
        return False


def full_definition(stmts: list[ast.stmt], i: int) -> int:
    """Number of statements of a full flag definition starting at stmts[i] (0: none)."""
    stmt = stmts[i]
    target = _cpu_target(stmt)
    if target == "lf_op":
        value = stmt.value  # type: ignore[attr-defined]
        if not (isinstance(value, ast.Name) and value.id in _FULL_LAZY):
            return 0
        if i + 5 > len(stmts):
            return 0
        for k, name in enumerate(_LAZY_FIELDS):
            s = stmts[i + k]
            if _cpu_target(s) != name or _mentions_cpu(s.value):  # type: ignore[attr-defined]
                return 0
        return 5
    if target == "flags" and i + 1 < len(stmts):
        value = stmt.value  # type: ignore[attr-defined]
        left = value
        while isinstance(left, ast.BinOp) and isinstance(left.op, ast.BitOr):
            left = left.left
        if left is value or not _is_status_clear(left):
            return 0
        if sum(isinstance(n, ast.Name) and n.id == "cpu" for n in ast.walk(value)) != 1:
            return 0
        nxt = stmts[i + 1]
        if _cpu_target(nxt) == "lf_op" and isinstance(nxt.value, ast.Constant) and \
                nxt.value.value == 0:  # type: ignore[attr-defined]
            return 2
    return 0


def drop_dead_flags(stmts: list[ast.stmt]) -> tuple[list[ast.stmt], int]:
    """Remove flag definitions overwritten before any use; returns (stmts, how many)."""
    # Forward pass: mark definitions, then walk backwards with liveness.
    starts: dict[int, int] = {}
    i = 0
    while i < len(stmts):
        n = full_definition(stmts, i)
        if n:
            starts[i] = n
            i += n
        else:
            i += 1
    keep = [True] * len(stmts)
    dead_ahead = False  # a full definition follows with only quiet statements before it
    removed = 0
    i = len(stmts) - 1
    owner = {j: s for s, n in starts.items() for j in range(s, s + n)}
    while i >= 0:
        start = owner.get(i)
        if start is not None:
            if dead_ahead:
                for j in range(start, start + starts[start]):
                    keep[j] = False
                removed += 1
            dead_ahead = True
            i = start - 1
            continue
        if not quiet(stmts[i]):
            dead_ahead = False
        i -= 1
    return [s for s, k in zip(stmts, keep) if k], removed
