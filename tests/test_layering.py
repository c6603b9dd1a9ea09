"""The library below the CLI never imports click or tqdm (ARCHITECTURE.md: library first, thin CLI)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import bundler

LIBRARY = sorted(m.name for m in pkgutil.iter_modules(bundler.__path__) if not m.name.startswith("cli"))


def test_library_modules_do_not_import_the_cli_stack() -> None:
    assert len(LIBRARY) > 20
    code = (
        "import importlib, sys\n"
        f"for name in {LIBRARY!r}:\n"
        "    importlib.import_module('bundler.' + name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('click', 'tqdm') or m.startswith('bundler.cli'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"library modules pulled in: {out.stdout.strip()}"


def test_every_module_says_what_it_owns() -> None:
    import importlib

    missing = [name for name in LIBRARY if not (importlib.import_module(f"bundler.{name}").__doc__ or "").strip()]
    assert missing == []
