"""The package shows its layers, and imports only go downward (docs/ARCHITECTURE.md).

Layers, lowest first; packages on one rank never import each other:

    base < oci < {registry, layout} < transfer < bundle < {openshift, quay} < flows < cli

The library below the CLI never imports click or tqdm (library first, thin CLI), and every module says
what it owns in its docstring.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set, Tuple

import bundler

RANKS: Dict[str, int] = {
    "base": 0,
    "oci": 1,
    "registry": 2,
    "layout": 2,
    "transfer": 3,
    "bundle": 4,
    "openshift": 5,
    "quay": 5,
    "flows": 6,
    "cli": 7,
}

ALL_MODULES = sorted(m.name for m in pkgutil.walk_packages(bundler.__path__, "bundler.") if not m.name.endswith("__main__"))
LIBRARY = [name for name in ALL_MODULES if not name.startswith("bundler.cli")]
PACKAGE_ROOT = Path(bundler.__file__).resolve().parent


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports_of(module: str) -> Set[str]:
    """Every `bundler.*` module a module imports, at any depth of its code (lazy imports included)."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text())
    found: Set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{module}: relative import (write absolute bundler.* imports)"
            if node.module and node.module.startswith("bundler"):
                found.add(node.module)
                if _is_package(node.module):  # `from bundler.quay import api` imports a module
                    found.update(f"{node.module}.{a.name}" for a in node.names if importlib.util.find_spec(f"{node.module}.{a.name}"))
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("bundler"))
    return found


def _is_package(module: str) -> bool:
    spec = importlib.util.find_spec(module)
    return spec is not None and spec.submodule_search_locations is not None


def test_every_module_lives_in_a_layer() -> None:
    flat = sorted(p.name for p in PACKAGE_ROOT.glob("*.py") if p.name != "__init__.py")
    assert flat == [], f"modules outside the layer packages: {flat}"
    unknown = sorted({_layer(m) for m in ALL_MODULES} - set(RANKS))
    assert unknown == [], f"packages with no rank in the layering rule: {unknown}"


def test_imports_only_go_down() -> None:
    assert len(LIBRARY) > 40
    bad: List[Tuple[str, str]] = []
    for module in ALL_MODULES:
        mine = _layer(module)
        for imported in _imports_of(module):
            theirs = _layer(imported)
            if imported == "bundler" or theirs == mine:
                continue
            if RANKS[theirs] >= RANKS[mine]:
                bad.append((module, imported))
    assert bad == [], "imports that do not go downward: " + ", ".join(f"{a} -> {b}" for a, b in bad)


def test_the_rule_catches_an_upward_import() -> None:
    """The check above is not vacuous: a module that imports from a higher layer is reported."""
    assert RANKS[_layer("bundler.flows.unpack")] > RANKS[_layer("bundler.registry.client")]
    assert "bundler.registry.client" in _imports_of("bundler.transfer.copy")


def test_library_modules_do_not_import_the_cli_stack() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {LIBRARY!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('click', 'tqdm') or m.startswith('bundler.cli'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"library modules pulled in: {out.stdout.strip()}"


def test_every_module_says_what_it_owns() -> None:
    missing = [name for name in ALL_MODULES if not (importlib.import_module(name).__doc__ or "").strip()]
    assert missing == []
