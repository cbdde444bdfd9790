"""Rewriting one instruction body (interpreter handler source) for a block function.

A body from `CaptureInsn` names its constants `k0, k1, ...` and sets
`cpu.rip` to the next instruction as its last statement.  Inside a block the
constants of different instructions must not collide, so integer constants
become literals and other objects become uniquely named parameters; the
trailing `cpu.rip = <next>` of an instruction followed by another one can be
dropped, because the block's exception handler puts RIP back at the faulting
instruction (SDM Vol. 3A §6.5: a fault's saved RIP points at the faulting
instruction).  This module only analyses and rewrites the Python AST.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

_CONST = re.compile(r"k(\d+)\Z")
# Calls known not to write guest memory or read cpu.rip.
_PURE_CPU_METHODS = frozenset({"read", "pop", "get_flags", "get_cf", "read_lin", "set_lazy",
                               "set_arith", "update_flags"})
_PURE_GLOBALS = frozenset({"fl", "CONDITIONS"})
# Names the block function itself uses; a body using one is not inlined.
RESERVED_PREFIX = "_j"


@dataclass
class Body:
    """An instruction body ready to paste: statements plus what the block must know."""

    statements: list[ast.stmt]
    params: dict[str, object] = field(default_factory=dict)  # extra closure parameters
    elided_next: bool = False  # the trailing `cpu.rip = next` was removed
    needs_rip: bool = False  # reads cpu.rip, or calls code that might
    may_write: bool = False  # may write guest memory (self-modifying-code check after it)


class _Renamer(ast.NodeTransformer):
    def __init__(self, consts: tuple[object, ...], tag: str) -> None:
        self.consts = consts
        self.tag = tag
        self.params: dict[str, object] = {}

    def visit_Name(self, node: ast.Name) -> ast.AST:  # noqa: N802 - ast API
        match = _CONST.match(node.id)
        if match is None or not isinstance(node.ctx, ast.Load):
            return node
        value = self.consts[int(match.group(1))]
        if type(value) is int and value >= 0 or type(value) is bool:
            return ast.copy_location(ast.Constant(value), node)
        name = f"{RESERVED_PREFIX}p{self.tag}_{match.group(1)}"
        self.params[name] = value
        return ast.copy_location(ast.Name(name, ast.Load()), node)


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


def prepare(body: str, consts: tuple[object, ...], tag: str, next_ip: int,
            last: bool) -> Body | None:
    """Analyse and rewrite one body; None if it cannot be inlined (then call its handler)."""
    try:
        tree = ast.parse(body)
    except SyntaxError:
        return None
    needs_rip = may_write = False
    for node in ast.walk(tree):
        if isinstance(node, (ast.Return, ast.FunctionDef, ast.Lambda, ast.ClassDef,
                             ast.AsyncFunctionDef, ast.Global, ast.Nonlocal, ast.Yield)):
            return None  # `return` would leave the whole block; nested scopes: keep it simple
        if isinstance(node, ast.Name) and node.id.startswith(RESERVED_PREFIX):
            return None
        if isinstance(node, ast.Name) and _CONST.match(node.id) and \
                int(node.id[1:]) >= len(consts):
            return None
        if _is_cpu_attr(node, "rip") and isinstance(node.ctx, ast.Load):  # type: ignore
            needs_rip = True
        if isinstance(node, ast.Call) and not _pure_call(node):
            may_write = True
            if any(isinstance(arg, ast.Name) and arg.id == "cpu" for arg in node.args):
                needs_rip = True  # hands the CPU to code we have not looked at
    renamer = _Renamer(consts, tag)
    tree = renamer.visit(tree)
    statements = tree.body
    elided = False
    if not last and statements:
        tail = statements[-1]
        if isinstance(tail, ast.Assign) and len(tail.targets) == 1 and \
                _is_cpu_attr(tail.targets[0], "rip") and \
                isinstance(tail.value, ast.Constant) and tail.value.value == next_ip:
            statements = statements[:-1]
            elided = True
    if not statements:
        statements = [ast.Pass()]
    return Body(statements, renamer.params, elided, needs_rip, may_write)
