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
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Stmt:
    """One statement of a block: its text, whether it is quiet, and flag-definition role.

    `definition` is n > 0 on the first statement of an n-statement full flag
    definition, -1 on its other statements, 0 elsewhere.
    """

    text: str
    quiet: bool
    definition: int = 0


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


def classify(stmts: list[ast.stmt]) -> list[Stmt]:
    """Statement texts with their quietness and flag-definition groups marked."""
    out: list[Stmt] = []
    i = 0
    while i < len(stmts):
        n = full_definition(stmts, i)
        if n:
            out.extend(Stmt(ast.unparse(stmts[i + k]), False, n if k == 0 else -1)
                       for k in range(n))
            i += n
            continue
        out.append(Stmt(ast.unparse(stmts[i]), quiet(stmts[i]), 0))
        i += 1
    return out


def drop_dead_flags(stmts: list[Stmt]) -> tuple[list[Stmt], int]:
    """Remove flag definitions overwritten before any use; returns (stmts, how many)."""
    keep = [True] * len(stmts)
    dead_ahead = False  # a full definition follows with only quiet statements before it
    removed = 0
    for i in range(len(stmts) - 1, -1, -1):
        stmt = stmts[i]
        if stmt.definition > 0:
            if dead_ahead:
                for j in range(i, i + stmt.definition):
                    keep[j] = False
                removed += 1
            dead_ahead = True
        elif stmt.definition == 0 and not stmt.quiet:
            dead_ahead = False
    return [s for s, k in zip(stmts, keep, strict=True) if k], removed


# -- condition codes straight from the previous instruction's lazy result ---------------
#
# A Jcc right after CMP/TEST/ADD/... in the same block reads the flags that instruction
# just recorded in lf_*; its locals (a, v, r) still hold them, so the condition can be
# computed from them directly (SDM Vol. 1 Appendix B, Table B-1) instead of through
# CONDITIONS[cc](cpu).  {M} is the operand-size mask, {S} its sign bit.
_LAZY_TAIL = re.compile(r"cpu\.lf_(op|a|b|r|size) = (\w+)\Z")
_BY_RESULT = {  # conditions that need only the result r
    "LF_SUB": {3: "{r} < 0", 4: "{r} >= 0", 5: "not {r} & {M}", 6: "{r} & {M}",
               7: "{r} < 0 or not {r} & {M}", 8: "{r} >= 0 and {r} & {M}",
               9: "{r} & {S}", 10: "not {r} & {S}"},
    "LF_ADD": {3: "{r} > {M}", 4: "{r} <= {M}", 5: "not {r} & {M}", 6: "{r} & {M}",
               9: "{r} & {S}", 10: "not {r} & {S}"},
    "LF_LOGIC": {3: "False", 4: "True", 5: "not {r}", 6: "{r}", 7: "not {r}", 8: "{r}",
                 9: "{r} & {S}", 10: "not {r} & {S}", 13: "{r} & {S}", 14: "not {r} & {S}",
                 15: "not {r} or {r} & {S}", 16: "{r} and not {r} & {S}"},
    "LF_INC": {5: "not {r}", 6: "{r}", 9: "{r} & {S}", 10: "not {r} & {S}"},
    "LF_DEC": {5: "not {r}", 6: "{r}", 9: "{r} & {S}", 10: "not {r} & {S}"},
}
# Signed comparisons after an exact subtraction r = a - v (CMP, SUB; not SBB).
_SIGNED_SUB = {13: "({a} ^ {S}) - ({v} ^ {S}) < 0", 14: "({a} ^ {S}) - ({v} ^ {S}) >= 0",
               15: "({a} ^ {S}) - ({v} ^ {S}) <= 0", 16: "({a} ^ {S}) - ({v} ^ {S}) > 0"}
_CONDITION_CALL = re.compile(r"\Aif CONDITIONS\[(\d+)\]\(cpu\):")


def lazy_result(stmts: list[Stmt]) -> dict[str, str] | None:
    """The lf_* assignments ending `stmts` (op, a, b, r, size -> source names), if any."""
    if len(stmts) < 5:
        return None
    out: dict[str, str] = {}
    for stmt, field in zip(stmts[-5:], ("op", "a", "b", "r", "size"), strict=True):
        match = _LAZY_TAIL.match(stmt.text)
        if match is None or match.group(1) != field:
            return None
        out[field] = match.group(2)
    if not out["size"].isdigit() or int(out["size"]) not in (1, 2, 4, 8):
        return None
    return out


def specialise_condition(text: str, lazy: dict[str, str], exact_sub: bool) -> str:
    """`text` (a Jcc's `if CONDITIONS[cc](cpu):`) with the condition computed inline."""
    match = _CONDITION_CALL.match(text)
    if match is None:
        return text
    cc = int(match.group(1))
    template = _BY_RESULT.get(lazy["op"], {}).get(cc)
    if template is None and exact_sub and lazy["op"] == "LF_SUB":
        template = _SIGNED_SUB.get(cc)
    if template is None:
        return text
    size = int(lazy["size"])
    expr = template.format(r=lazy["r"], a=lazy["a"], v=lazy["b"],
                           M=hex((1 << (8 * size)) - 1), S=hex(1 << (8 * size - 1)))
    return f"if {expr}:" + text[match.end():]
