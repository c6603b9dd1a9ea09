"""What every command prints: `warning:` lines, JSON documents for failures, help examples, and progress
bars that never leave a half-drawn line (checked on a real pseudo-terminal)."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path
from typing import List

import click
import pytest

from bundler.base.errors import IntegrityError
from bundler.cli.main import main
from bundler.cli.support import command_body, common_options, emit_json, warn
from tests.conftest import cli_runner
from tests.infra.images import make_image, push
from tests.infra.registry import RegistryServer


def _cli(*args: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(
        [sys.executable, "-m", "bundler.cli", *args], capture_output=True, text=True, timeout=120,
        env={**os.environ, "OCPB_DEBUG_LOG": "/dev/null"},
    )


def test_json_failures_are_a_json_document_on_stdout(tmp_path: Path) -> None:
    r = _cli("copy", "docker://127.0.0.1:9/x/y:v1", f"oci:{tmp_path}/l", "--insecure-registry", "127.0.0.1:9", "--json")
    assert r.returncode == 5
    doc = json.loads(r.stdout)
    assert doc["error"]["code"] == 5 and "cannot reach 127.0.0.1:9" in doc["error"]["message"] and doc["error"]["hint"]
    assert r.stderr.startswith("error: cannot reach")  # the one line on stderr stays
    (tmp_path / "empty").mkdir()
    r = _cli("verify", str(tmp_path / "empty"), "--json")
    assert r.returncode == 2
    assert json.loads(r.stdout) == {"error": {"code": 2, "message": f"{tmp_path / 'empty'} is not a bundle (no bundle-manifest.json)", "hint": "pass the directory pack wrote"}}
    r = _cli("inspect", str(tmp_path / "empty"))  # without --json: nothing on stdout
    assert r.returncode == 2 and r.stdout == ""


@click.command()
@common_options
@command_body
def _reporting(verbose: int, as_json: bool) -> None:
    emit_json({"report": 1})
    raise IntegrityError("bad")


def test_a_report_already_printed_is_the_only_document() -> None:
    r = cli_runner().invoke(_reporting, ["--json"])
    assert r.exit_code == 3 and json.loads(r.stdout) == {"report": 1}


@click.command()
@common_options
@command_body
def _warner(verbose: int, as_json: bool) -> None:
    logging.getLogger("bundler.test").warning("the same thing, %s", "twice")
    warn("the same thing, twice")
    warn("another")


def test_every_warning_line_has_one_prefix_and_is_printed_once() -> None:
    r = cli_runner().invoke(_warner, [])
    assert r.exit_code == 0
    assert r.stderr.splitlines() == ["warning: the same thing, twice", "warning: another"]
    r = cli_runner().invoke(_warner, ["-v"])
    assert r.stderr.splitlines() == ["warning: the same thing, twice", "warning: another"]


@pytest.mark.parametrize("command", [["inspect"], ["quay", "status"], ["quay", "down"]])
def test_help_has_examples(command: List[str]) -> None:
    r = cli_runner().invoke(main, [*command, "--help"])
    assert r.exit_code == 0 and "Examples:\n      ocp-bundler " + " ".join(command) in r.stdout.replace("\n    ocp", "\n      ocp")


def _screen(text: str) -> List[str]:
    """What a terminal shows after `text`: carriage returns, newlines and cursor-up honoured."""
    lines: List[List[str]] = [[]]
    row = col = 0
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\x1b":
            m = re.match(r"\x1b\[(\d*)([A-Za-z])", text[i:])
            if m:
                if m.group(2) == "A":
                    row = max(0, row - int(m.group(1) or 1))
                i += len(m.group(0))
                continue
        if c == "\r":
            col = 0
        elif c == "\n":
            row += 1
            col = 0
        else:
            while len(lines) <= row:
                lines.append([])
            line = lines[row]
            while len(line) <= col:
                line.append(" ")
            line[col] = c
            col += 1
        while len(lines) <= row:
            lines.append([])
        i += 1
    return ["".join(line).rstrip() for line in lines]


def _on_a_terminal(*args: str) -> "tuple[int, str, str]":
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "bundler.cli", *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave,
        env={**os.environ, "OCPB_DEBUG_LOG": "/dev/null", "TERM": "xterm"},
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    out = proc.stdout.read().decode() if proc.stdout else ""
    rc = proc.wait(timeout=120)
    os.close(master)
    return rc, out, b"".join(chunks).decode(errors="replace")


def test_progress_bars_are_cleared_before_warnings_and_final_lines(registry_plain: RegistryServer, tmp_path: Path) -> None:
    push(registry_plain.url, "out/app", make_image(random_layers=[300_000, 200_000], seed="bars"), "v1")
    config = tmp_path / "set.yaml"
    config.write_text(f"apiVersion: ocp-bundler.io/v1alpha1\nkind: ImageSet\nadditionalImages:\n  - {registry_plain.host}/out/app:v1\n")
    rc, _, _ = _on_a_terminal("pack", "--config", str(config), "--out", str(tmp_path / "b"), "--insecure-registry", registry_plain.host)
    assert rc == 0
    rc, out, err = _on_a_terminal("verify", str(tmp_path / "b"))  # unsigned: a warning while the bar is up
    assert rc == 0 and out.startswith("OK: bundle")
    assert "verify:" in err  # a bar was drawn
    screen = [line for line in _screen(err) if line.strip()]
    assert screen == ["warning: " + line.split("warning: ", 1)[1] for line in screen], screen  # warnings start their line
    assert any("THE BUNDLE IS NOT SIGNED" in line for line in screen)
    assert not any(line.lstrip().startswith("verify:") for line in screen), screen  # no bar left behind
