"""The instruction-semantics table: iced Code/Mnemonic -> handler builder.

Each module in this package is one instruction group (alu, datamov, stack,
control, system, ... and the semantics engineer's shift, muldiv, bcd,
string, bitops).  A module registers builders with the decorators below; the
package imports every module it contains (pkgutil), so adding a group is
adding a file.  A second registration of the same key is an error at import,
which is what keeps two groups from silently fighting over an instruction.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable

from pyvmm.engines.interp.builder import Handler, Insn

Builder = Callable[[Insn], Handler]

BY_CODE: dict[int, Builder] = {}
BY_MNEMONIC: dict[int, Builder] = {}
_loaded = False


def _register(table: dict[int, Builder], keys: tuple[int, ...], what: str,
              ) -> Callable[[Builder], Builder]:
    def decorator(builder: Builder) -> Builder:
        for key in keys:
            if key in table:
                other = table[key]
                raise RuntimeError(f"{what} {key} registered twice: {other.__module__}."
                                   f"{other.__name__} and {builder.__module__}."
                                   f"{builder.__name__}")
            table[key] = builder
        return builder
    return decorator


def semantic(*mnemonics: int) -> Callable[[Builder], Builder]:
    """Register a builder for iced `Mnemonic` values (all encodings of them)."""
    return _register(BY_MNEMONIC, mnemonics, "mnemonic")


def semantic_code(*codes: int) -> Callable[[Builder], Builder]:
    """Register a builder for specific iced `Code` values (wins over a mnemonic entry)."""
    return _register(BY_CODE, codes, "code")


def load_groups() -> None:
    """Import every group module in this package (once)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


def lookup(code: int, mnemonic: int) -> Builder | None:
    builder = BY_CODE.get(code)
    if builder is None:
        builder = BY_MNEMONIC.get(mnemonic)
    return builder
