"""The `ocp-bundler` command line: thin click glue over the library (nothing below imports it).

`bundler.cli:main` is the console script; `python -m bundler.cli` runs it too."""

from bundler.cli.main import main

__all__ = ["main"]
