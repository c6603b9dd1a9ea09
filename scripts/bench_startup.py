#!/usr/bin/env python3
"""Benchmark pack's start-up: the time from spawning `ocp-bundler pack` to its first network connection.

A loopback socket stands in for the registry: pack's config names one image there, the socket records
when the first connection arrives, and the child is stopped at that moment. The figures are the wall
time from spawn to that connection, the child's own CPU time up to it (less sensitive to a busy machine),
and the wall time of `python -c "import bundler.cli.main"`; medians over the runs, the trees measured in
turn within each round so that load on the machine falls on all of them alike.

Each TREE is a source tree (a directory holding `bundler/`) or a git revision of this repository (exported
to a temp dir). Bytecode is cached (PYTHONPYCACHEPREFIX) and warmed first, as for an installed package.

    python scripts/bench_startup.py                      # this tree
    python scripts/bench_startup.py main .  --runs 30    # a revision against this tree
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parent.parent

#: The child: records its CPU time at its first connection, then runs the command line.
CHILD = """
import os, socket, sys, time
_connect = socket.socket.connect
def connect(self, address, _first=[]):
    if not _first:
        _first.append(1)
        with open(os.environ["BENCH_CPU_OUT"], "w") as f:
            f.write(repr(time.process_time()))
    return _connect(self, address)
socket.socket.connect = connect
from bundler.cli.main import main
sys.argv[0] = "ocp-bundler"
main()
"""


def tree_path(tree: str, scratch: Path) -> Path:
    if (Path(tree) / "bundler").is_dir():
        return Path(tree).resolve()
    out = scratch / tree.replace("/", "_")
    out.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", tree], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


def child_env(tree: Path, pycache: Path) -> Dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONPYCACHEPREFIX=str(pycache))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def first_connection(python: str, tree: Path, pycache: Path, work: Path) -> Tuple[float, float]:
    """(wall seconds from spawn to pack's first connection, the child's CPU seconds by then)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    host = "127.0.0.1:%d" % server.getsockname()[1]
    arrived: Dict[str, float] = {}

    def accept() -> None:
        conn, _ = server.accept()
        arrived["at"] = time.perf_counter()
        conn.close()

    waiter = threading.Thread(target=accept, daemon=True)
    waiter.start()
    run = Path(tempfile.mkdtemp(dir=work))
    config = run / "image-set.yaml"
    config.write_text(f"apiVersion: ocp-bundler.io/v1alpha1\nkind: ImageSet\nadditionalImages:\n  - {host}/bench/startup:v1\n")
    env = child_env(tree, pycache)
    env["BENCH_CPU_OUT"] = str(run / "cpu")
    cmd = [python, "-c", CHILD, "pack", "--config", str(config), "--out", str(run / "out"), "--insecure-registry", host, "--json", "--retry-times", "0"]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=run, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # not this tree's cwd on sys.path
    waiter.join(60)
    proc.kill()
    proc.wait()
    server.close()
    if "at" not in arrived:
        raise SystemExit(f"{tree}: pack made no connection within 60 s")
    cpu = float((run / "cpu").read_text())
    shutil.rmtree(run, ignore_errors=True)
    return arrived["at"] - started, cpu


def import_time(python: str, tree: Path, pycache: Path) -> float:
    started = time.perf_counter()
    subprocess.run([python, "-c", "import bundler.cli.main"], env=child_env(tree, pycache), cwd=pycache.parent, check=True)
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trees", nargs="*", default=[str(ROOT)], metavar="TREE", help="source directories or git revisions (default: this tree)")
    ap.add_argument("--runs", type=int, default=20, help="rounds (default 20)")
    ap.add_argument("--python", default=sys.executable, help="the interpreter (not a pyenv shim: it would add its own start-up)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ocpb-bench-startup-") as scratch_dir:
        scratch = Path(scratch_dir)
        pycache = scratch / "pycache"
        trees = [tree_path(t, scratch) for t in args.trees]
        results: Dict[Path, Dict[str, List[float]]] = {t: {"wall": [], "cpu": [], "import": []} for t in trees}
        for tree in trees:  # warm the bytecode cache; and check that each child runs its own tree
            first_connection(args.python, tree, pycache, scratch)
            import_time(args.python, tree, pycache)
            where = subprocess.run(
                [args.python, "-c", "import bundler; print(bundler.__file__)"], env=child_env(tree, pycache), cwd=scratch, check=True, capture_output=True, text=True
            ).stdout.strip()
            if not Path(where).resolve().is_relative_to(tree.resolve()):
                raise SystemExit(f"{tree}: the child imports bundler from {where}")
        for _ in range(args.runs):
            for tree in trees:
                wall, cpu = first_connection(args.python, tree, pycache, scratch)
                results[tree]["wall"].append(wall)
                results[tree]["cpu"].append(cpu)
                results[tree]["import"].append(import_time(args.python, tree, pycache))
        for name, tree in zip(args.trees, trees):
            r = results[tree]
            print(
                f"{name}: pack's first connection {statistics.median(r['wall']) * 1000:.0f} ms after spawn "
                f"(min {min(r['wall']) * 1000:.0f}), child CPU by then {statistics.median(r['cpu']) * 1000:.0f} ms "
                f"(min {min(r['cpu']) * 1000:.0f}); import bundler.cli.main {statistics.median(r['import']) * 1000:.0f} ms "
                f"(min {min(r['import']) * 1000:.0f}); {args.runs} runs"
            )


if __name__ == "__main__":
    main()
