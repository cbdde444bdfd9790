"""The engines pyvmm knows, by name, imported only when asked for.

Lazy imports mean a missing optional piece (no /dev/kvm, say) never stops
another engine, or `pyvmm --help`, from working.  A new engine is one line
here; `pyvmm run --engine`, `pyvmm compare` and `pyvmm engines` pick it up.
"""

from __future__ import annotations

import importlib

from pyvmm.engines.base import Engine
from pyvmm.errors import ConfigError, EngineUnavailable

# Engine name -> "module:class".
ENGINES: dict[str, str] = {
    "kvm": "pyvmm.engines.kvm.engine:KvmEngine",
    "interp": "pyvmm.engines.interp.engine:InterpreterEngine",
    "jit": "pyvmm.engines.jit.engine:JitEngine",
}
DEFAULT_ENGINE = "kvm"
# kvm's --irqchip modes, its default first: KVM's in-kernel chips or the board's.
IRQCHIP_MODES = ("kernel", "user")
# Engine name -> what it is, for `pyvmm --help` (every engine above has one).
ENGINE_SUMMARIES: dict[str, str] = {
    "kvm": "hardware-assisted virtualization through /dev/kvm",
    "interp": "an x86 interpreter in Python",
    "jit": "binary translation of basic blocks into Python functions",
}


def engine_class(name: str) -> type[Engine]:
    try:
        target = ENGINES[name]
    except KeyError:
        raise ConfigError(f"unknown engine {name!r} (choose from {', '.join(ENGINES)})") from None
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, class_name)
    except (ImportError, AttributeError) as error:
        raise EngineUnavailable(f"engine {name!r} cannot be loaded: {error}") from None


def engine_availability(name: str) -> tuple[bool, str]:
    """(True, "") when `name` can run on this host, else (False, why not)."""
    try:
        cls = engine_class(name)
    except EngineUnavailable as error:
        return False, str(error)
    return cls.availability()
