"""The `ocp-bundler` command line: thin click glue over the library (nothing below imports it).

`bundler.cli:run` is the console script (`bundler.cli.entry`); `main` is the click group it runs (tests
drive it with click's runner); `python -m bundler.cli` runs the console script too."""

from bundler.cli.entry import run
from bundler.cli.main import main

__all__ = ["main", "run"]
