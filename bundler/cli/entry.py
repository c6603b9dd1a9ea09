"""The console script's entry point: run the command line, then end the process at once.

`run` calls the click group (`bundler.cli.main.main`), which always ends with `SystemExit`; once the command
is done every file, pool and lock is closed, so the process flushes its output and the log and exits
without the interpreter's teardown (tens of milliseconds spent on unloading modules, for nothing). An
exception other than `SystemExit` (an interrupt) takes Python's usual way out.
"""

from __future__ import annotations

import logging
import os
import sys


def run() -> None:
    from bundler.cli.main import main

    try:
        main()
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    if code is None:
        code = 0
    elif not isinstance(code, int):
        sys.stderr.write(f"{code}\n")
        code = 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said there
            pass
    os._exit(code)
