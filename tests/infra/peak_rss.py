"""Peak resident memory of a child process, measured inside it.

`ru_maxrss` from `wait4`/`RUSAGE_SELF` is no use for a child of the test process: on Linux it starts at the
parent's high-water mark (kept across fork and exec), so once pytest itself has grown past a limit every
child appears to exceed it. `VmHWM` in `/proc/self/status` belongs to the memory map made by exec, so it
is the child's own peak. `wrap(argv, rss_file)` runs `python -m MODULE ...` or `python -c CODE ...` under a
small wrapper that writes that figure (KiB) to `rss_file` on exit; `read_kib(rss_file)` reads it back.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Sequence

_WRAPPER = (
    "import atexit, runpy, sys\n"
    "def _write(path=sys.argv[1]):\n"
    "    with open('/proc/self/status') as status:\n"
    "        peak = next((line.split()[1] for line in status if line.startswith('VmHWM:')), '0')\n"
    "    with open(path, 'w') as out:\n"
    "        out.write(peak)\n"
    "atexit.register(_write)\n"
    "kind, target = sys.argv[2], sys.argv[3]\n"
    "sys.argv = [target] + sys.argv[4:]\n"
    "if kind == '-m':\n"
    "    sys.argv[0] = 'ocp-bundler' if target == 'bundler.cli' else target\n"
    "    runpy.run_module(target, run_name='__main__', alter_sys=True)\n"
    "else:\n"
    "    sys.argv[0] = '-c'\n"
    "    exec(compile(target, '<string>', 'exec'), {'__name__': '__main__'})\n"
)


def wrap(argv: Sequence[str], rss_file: Path) -> List[str]:
    """`argv` (`[python, "-m", MODULE, ...]` or `[python, "-c", CODE, ...]`) run so that it records its peak."""
    if len(argv) < 3 or argv[1] not in ("-m", "-c"):
        raise ValueError(f"cannot measure {argv[:2]}: only python -m / -c")
    return [sys.executable, "-c", _WRAPPER, str(rss_file), argv[1], *argv[2:]]


def read_kib(rss_file: Path) -> int:
    """The peak the child recorded, in KiB (0 when it recorded nothing: killed, or os._exit)."""
    try:
        return int(Path(rss_file).read_text().strip() or "0")
    except (OSError, ValueError):
        return 0
