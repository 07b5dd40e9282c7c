"""The layers hold: each package imports only what sits below it (read from the source)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import tidings

PACKAGE = Path(tidings.__file__).parent

# What each layer must never import (a prefix covers its submodules). The domain is
# checked the other way round: the standard library and itself only.
FORBIDDEN = {
    "application": ("tidings.adapters", "tidings.store", "tidings.cli", "tidings.workers"),
    "adapters": ("tidings.store", "tidings.cli", "tidings.workers"),
}


def imported_modules(source: str, package: str) -> set[str]:
    """Every module ``source`` imports, anywhere in it (functions and TYPE_CHECKING
    blocks included), relative imports resolved against ``package``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            # ``from tidings import store`` imports a module through its package.
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def modules_of(layer: str) -> dict[str, set[str]]:
    """File (relative to the package) -> what it imports, for every file of ``layer``."""
    found = {}
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        package = ".".join(("tidings", *path.relative_to(PACKAGE).parent.parts))
        found[str(path.relative_to(PACKAGE))] = imported_modules(
            path.read_text(encoding="utf-8"), package
        )
    return found


def is_under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def breaches(layer: str, modules: set[str]) -> list[str]:
    """The imports of a file of ``layer`` that cross the layer rules."""
    if layer == "domain":
        return sorted(
            m
            for m in modules
            if m != "tidings"  # ``from tidings...`` resolves below; the bare name is caught
            and not is_under(m, "tidings.domain")
            and m.split(".")[0] not in sys.stdlib_module_names
        ) + sorted(m for m in modules if m == "tidings")
    bare = ["tidings"] if "tidings" in modules else []  # the package is the composition root
    return bare + sorted(m for m in modules for p in FORBIDDEN[layer] if is_under(m, p))


@pytest.mark.parametrize("layer", ["domain", "application", "adapters"])
def test_each_layer_imports_only_what_sits_below_it(layer: str) -> None:
    """The domain imports the standard library and itself; the application never an
    adapter, the composition root, a worker or the CLI; an adapter never the composition
    root, a worker or the CLI."""
    found = {
        name: wrong
        for name, modules in modules_of(layer).items()
        if (wrong := breaches(layer, modules))
    }
    assert found == {}, f"imports across the layers of {layer}/: {found}"


def test_the_check_sees_a_breach_in_every_form_of_import() -> None:
    """Plain, from, relative and in-function imports are all caught (the check can fail)."""
    assert breaches("adapters", {"tidings.store"}) == ["tidings.store"]
    assert breaches("adapters", {"tidings"}) == ["tidings"]
    assert breaches("application", {"tidings.adapters.sqlite.database"}) != []
    assert breaches("domain", {"msgspec", "tidings.domain.events", "typing"}) == ["msgspec"]
    assert breaches("domain", {"tidings.records"}) == ["tidings.records"]
    assert breaches("adapters", {"tidings.storey", "tidings.application.bus"}) == []


def test_imported_modules_resolves_relative_and_nested_imports() -> None:
    """A relative import is read as the module it names, and imports inside functions count."""
    source = (
        "from . import database\n"
        "from ...store import Store\n"
        "def late():\n"
        "    import tidings.cli.main\n"
    )
    found = imported_modules(source, "tidings.adapters.sqlite")
    assert {"tidings.adapters.sqlite.database", "tidings.store", "tidings.cli.main"} <= found
    assert breaches("adapters", found) == [
        "tidings.cli.main",
        "tidings.store",
        "tidings.store.Store",
    ]
