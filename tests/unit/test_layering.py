"""No module imports a layer above its own.

The layer order is the one docs/ARCHITECTURE.md lists under "Layers": every
line of that block that starts at column 0 with `pyvmm/` names a layer (a
module or a package), lowest first.  Every import in every module, including
imports inside functions and under TYPE_CHECKING, must name a module of the
same layer or a lower one.  A module the document does not list fails the
test, so the document stays complete.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "pyvmm"


def _layers() -> list[str]:
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    block = text.split("## Layers", 1)[1].split("```", 2)[1]
    layers = []
    for line in block.splitlines():
        match = re.match(r"(pyvmm/\S+)", line)
        if match:
            name = match.group(1).removesuffix("/").removesuffix(".py").replace("/", ".")
            layers.append(name)
    return layers


def _layer_of(module: str, layers: list[str]) -> int | None:
    best = None
    for index, name in enumerate(layers):
        if module == name or module.startswith(name + "."):
            if best is None or len(name) > len(layers[best]):
                best = index
    return best


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # `from pyvmm import x` imports the module pyvmm.x.
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names
                      if (PACKAGE.parent / f"{target}.{alias.name}".replace(".", "/")).exists()
                      or (PACKAGE.parent / (f"{target}.{alias.name}".replace(".", "/")
                                            + ".py")).exists()]
    return [(line, name) for line, name in found if name.startswith("pyvmm.")]


def test_architecture_lists_layers() -> None:
    layers = _layers()
    assert layers.index("pyvmm.machine") < layers.index("pyvmm.devices") \
        < layers.index("pyvmm.board") < layers.index("pyvmm.engines")


def test_every_module_is_in_a_layer() -> None:
    layers = _layers()
    missing = [_module_name(p) for p in sorted(PACKAGE.rglob("*.py"))
               if _module_name(p) != "pyvmm" and _layer_of(_module_name(p), layers) is None]
    assert missing == [], f"modules docs/ARCHITECTURE.md's Layers block does not list: {missing}"


def test_no_module_imports_a_higher_layer() -> None:
    layers = _layers()
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        own = _layer_of(module, layers)
        if own is None:
            continue
        for line, target in _imports(path, module):
            layer = _layer_of(target, layers)
            if layer is not None and layer > own:
                violations.append(f"{path.relative_to(ROOT)}:{line} ({layers[own]}) imports "
                                  f"{target} ({layers[layer]})")
    assert violations == [], "\n".join(violations)


def test_engines_do_not_import_the_board() -> None:
    """The board is not an engine's business: engines type against machine.board.Board."""
    for path in sorted((PACKAGE / "engines").rglob("*.py")):
        for line, target in _imports(path, _module_name(path)):
            assert not target.startswith("pyvmm.board"), f"{path}:{line} imports {target}"
