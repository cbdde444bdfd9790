"""Getting an instruction's semantics as Python *source*, from the interpreter's builders.

The interpreter's builders (pyvmm/engines/interp/semantics) describe each
instruction as a few lines of Python and hand them to `Insn.compile(body)`.
`CaptureInsn` is an `Insn` whose `compile` also records the final body (with
the memory-operand `ea = ...` line the interpreter prepends) and the constants
`k0, k1, ...` it names, so the translator can paste many bodies into one
function.  Builders that return a plain closure instead leave no source: the
translator then calls that closure (the interpreter's own handler) in place.

Interface used beyond CONTRACT.md: `Insn._uses_ea` and `Insn._consts` (what
`Insn.compile` itself reads).  A public `Insn.source()` hook would replace them.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyvmm.engines.interp.builder import Handler, Insn


@dataclass(frozen=True)
class Captured:
    """One compiled body: statements, the constants k0.. they name, and the handler."""

    body: str
    consts: tuple[object, ...]
    handler: Handler


class CaptureInsn(Insn):
    """An `Insn` that remembers the source of every handler it compiles."""

    captured: Captured | None = None

    def compile(self, body: str) -> Handler:
        source = body.strip("\n")
        before = len(self._consts)
        if self._uses_ea:
            source = f"ea = {self.ea()}\n{source}"
        consts = tuple(self._consts)
        # Insn.compile appends the same ea constants again: keep the interpreter's
        # factory-cache key (body, number of constants) identical to its own.
        del self._consts[before:]
        handler = super().compile(body)
        self.captured = Captured(source, consts, handler)
        return handler

    def source_of(self, handler: Handler) -> Captured | None:
        """The captured source when `handler` is exactly the last compiled body, else None."""
        captured = self.captured
        if captured is not None and captured.handler is handler:
            return captured
        return None
