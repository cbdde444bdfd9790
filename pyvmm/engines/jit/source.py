"""Rewriting one instruction body (interpreter handler source) for a block function.

A body from `CaptureInsn` names its constants `k0, k1, ...` and sets
`cpu.rip` to the next instruction as its last statement.  Inside a block the
constants of different instructions must not collide, so integer constants
become literals and other objects become uniquely named parameters; the
trailing `cpu.rip = <next>` of an instruction followed by another one can be
dropped, because the block's exception handler puts RIP back at the faulting
instruction (SDM Vol. 3A §6.5: a fault's saved RIP points at the faulting
instruction).

The analysis (Python AST) is done once per distinct body text and cached;
each instance then only substitutes its constants into statement texts.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

from pyvmm.engines.jit.optimize import Stmt, classify

_CONST = re.compile(r"k(\d+)\Z")
_CONST_REF = re.compile(r"(?<![\w.])k(\d+)\b")
# Calls known not to write guest memory or read cpu.rip.
_PURE_CPU_METHODS = frozenset({"read", "pop", "get_flags", "get_cf", "read_lin", "set_lazy",
                               "set_arith", "update_flags"})
_PURE_GLOBALS = frozenset({"fl", "CONDITIONS"})
# Names the block function itself uses; a body using one is not inlined.
RESERVED_PREFIX = "_j"


@dataclass
class Body:
    """An instruction body ready to paste: statements plus what the block must know."""

    statements: list[Stmt]
    params: dict[str, object] = field(default_factory=dict)  # extra closure parameters
    elided_next: bool = False  # the trailing `cpu.rip = next` was removed
    needs_rip: bool = False  # reads cpu.rip, or calls code that might
    may_write: bool = False  # may write guest memory (self-modifying-code check after it)


@dataclass(frozen=True)
class _Shape:
    """What one body text is, independent of its constants."""

    statements: tuple[Stmt, ...]
    tail_const: int | None  # N when the last statement is `cpu.rip = kN`
    needs_rip: bool
    may_write: bool


def _is_cpu_attr(node: ast.AST, attr: str) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == attr
            and isinstance(node.value, ast.Name) and node.value.id == "cpu")


def _pure_call(call: ast.Call) -> bool:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id == "read"
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        if func.value.id == "cpu":
            return func.attr in _PURE_CPU_METHODS
        return func.value.id in _PURE_GLOBALS
    if isinstance(func, ast.Subscript) and isinstance(func.value, ast.Name):
        return func.value.id in _PURE_GLOBALS
    return False


_SHAPES: dict[tuple[str, int], _Shape | None] = {}


def _analyse(body: str, nconsts: int) -> _Shape | None:
    try:
        tree = ast.parse(body)
    except SyntaxError:
        return None
    needs_rip = may_write = False
    for node in ast.walk(tree):
        if isinstance(node, (ast.Return, ast.FunctionDef, ast.Lambda, ast.ClassDef,
                             ast.AsyncFunctionDef, ast.Global, ast.Nonlocal, ast.Yield,
                             ast.JoinedStr, ast.Constant)) and \
                not (isinstance(node, ast.Constant) and not isinstance(node.value, str)):
            return None  # `return` would leave the whole block; strings could hide k-names
        if isinstance(node, ast.Name):
            if node.id.startswith(RESERVED_PREFIX):
                return None
            match = _CONST.match(node.id)
            if match and int(match.group(1)) >= nconsts:
                return None
        if _is_cpu_attr(node, "rip") and isinstance(node.ctx, ast.Load):  # type: ignore
            needs_rip = True
        if isinstance(node, ast.Call) and not _pure_call(node):
            may_write = True
            if any(isinstance(arg, ast.Name) and arg.id == "cpu" for arg in node.args):
                needs_rip = True  # hands the CPU to code we have not looked at
    body_stmts = tree.body
    statements = classify(body_stmts)
    tail_const = None
    if body_stmts:
        tail = body_stmts[-1]
        if isinstance(tail, ast.Assign) and len(tail.targets) == 1 and \
                _is_cpu_attr(tail.targets[0], "rip") and isinstance(tail.value, ast.Name):
            match = _CONST.match(tail.value.id)
            if match:
                tail_const = int(match.group(1))
    return _Shape(tuple(statements), tail_const, needs_rip, may_write)


def prepare(body: str, consts: tuple[object, ...], tag: str, next_ip: int,
            last: bool) -> Body | None:
    """Analyse and rewrite one body; None if it cannot be inlined (then call its handler).

    `next_ip` is where the block continues after this instruction (the next
    instruction, or a direct jump's target): a trailing `cpu.rip = next_ip` of a
    non-last instruction is dropped.
    """
    key = (body, len(consts))
    if key in _SHAPES:
        shape = _SHAPES[key]
    else:
        shape = _SHAPES[key] = _analyse(body, len(consts))
    if shape is None:
        return None
    params: dict[str, object] = {}
    names: list[str] = []
    for index, value in enumerate(consts):
        if (type(value) is int and value >= 0) or type(value) is bool:
            names.append(repr(value))
        else:
            name = f"{RESERVED_PREFIX}p{tag}_{index}"
            params[name] = value
            names.append(name)

    def substitute(match: re.Match[str]) -> str:
        return names[int(match.group(1))]

    statements = [Stmt(_CONST_REF.sub(substitute, s.text), s.quiet, s.definition)
                  for s in shape.statements]
    elided = False
    if not last and shape.tail_const is not None and consts[shape.tail_const] == next_ip:
        statements.pop()
        elided = True
    if not statements:
        statements = [Stmt("pass", True, 0)]
    return Body(statements, params, elided, shape.needs_rip, shape.may_write)
