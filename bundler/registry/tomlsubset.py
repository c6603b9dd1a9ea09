"""TOML for the containers configuration files: `tomllib` where Python has it (3.11+), else a small reader.

The small reader covers what registries.conf and its drop-ins use (containers-registries.conf(5)):
comments, `[table]` and `[[array.of.tables]]` headers with dotted names, `key = value` with bare, quoted
or dotted keys, and values that are basic or literal strings, booleans, integers, floats, arrays (over
several lines, trailing comma allowed) and inline tables. Multi-line strings and dates are refused with
a `TomlError` naming the line, never read wrongly. No new dependency: the subset is small, and the
documents are tens of lines.
"""

from __future__ import annotations

import importlib
import re
from typing import Any, Dict, List, Tuple


def _tomllib() -> Any:
    """`tomllib` on Python 3.11+ (imported when a document is first read), else None."""
    try:
        return importlib.import_module("tomllib")
    except ImportError:  # pragma: no cover - Python 3.9 / 3.10
        return None


class TomlError(ValueError):
    """A document that is not TOML (or uses TOML the subset reader does not cover); names the line."""


def loads(text: str) -> Dict[str, Any]:
    """Parse a TOML document (tomllib when available, else `loads_subset`)."""
    tomllib = _tomllib()
    if tomllib is not None:
        try:
            doc: Dict[str, Any] = tomllib.loads(text)
            return doc
        except tomllib.TOMLDecodeError as exc:
            raise TomlError(str(exc)) from None
    return loads_subset(text)


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_NUMBER = re.compile(r"[+-]?(?:0x[0-9A-Fa-f_]+|0o[0-7_]+|0b[01_]+|[0-9_]+(?:\.[0-9_]+)?(?:[eE][+-]?[0-9_]+)?|inf|nan)")
_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}


class _Reader:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0

    def line(self) -> int:
        return self.s.count("\n", 0, self.i) + 1

    def fail(self, what: str) -> TomlError:
        return TomlError(f"{what} (line {self.line()})")

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def skip_inline_space(self) -> None:
        while self.peek() in (" ", "\t"):
            self.i += 1

    def skip_comment(self) -> None:
        if self.peek() == "#":
            while self.peek() not in ("\n", ""):
                self.i += 1

    def skip_blank(self) -> None:
        """Spaces, newlines and comments (inside arrays)."""
        while True:
            self.skip_inline_space()
            self.skip_comment()
            if self.peek() in ("\n", "\r"):
                self.i += 1
                continue
            return

    def end_of_line(self) -> None:
        self.skip_inline_space()
        self.skip_comment()
        if self.peek() == "\r":
            self.i += 1
        if self.peek() not in ("\n", ""):
            raise self.fail(f"unexpected {self.peek()!r} after a value")
        if self.peek() == "\n":
            self.i += 1

    def key(self) -> List[str]:
        parts: List[str] = []
        while True:
            self.skip_inline_space()
            c = self.peek()
            if c == '"':
                parts.append(self.basic_string())
            elif c == "'":
                parts.append(self.literal_string())
            else:
                m = _BARE_KEY.match(self.s, self.i)
                if not m:
                    raise self.fail("expected a key")
                parts.append(m.group(0))
                self.i = m.end()
            self.skip_inline_space()
            if self.peek() != ".":
                return parts
            self.i += 1

    def basic_string(self) -> str:
        if self.s.startswith('"""', self.i):
            raise self.fail("multi-line strings are not supported here")
        self.i += 1
        out: List[str] = []
        while True:
            c = self.peek()
            if c in ("", "\n"):
                raise self.fail("unterminated string")
            self.i += 1
            if c == '"':
                return "".join(out)
            if c != "\\":
                out.append(c)
                continue
            e = self.peek()
            self.i += 1
            if e in _ESCAPES:
                out.append(_ESCAPES[e])
            elif e in ("u", "U"):
                n = 4 if e == "u" else 8
                digits = self.s[self.i : self.i + n]
                if not re.fullmatch(r"[0-9A-Fa-f]+", digits or "x") or len(digits) != n:
                    raise self.fail("bad unicode escape")
                out.append(chr(int(digits, 16)))
                self.i += n
            else:
                raise self.fail(f"bad escape \\{e}")

    def literal_string(self) -> str:
        if self.s.startswith("'''", self.i):
            raise self.fail("multi-line strings are not supported here")
        end = self.s.find("'", self.i + 1)
        if end < 0 or "\n" in self.s[self.i : end]:
            raise self.fail("unterminated string")
        value = self.s[self.i + 1 : end]
        self.i = end + 1
        return value

    def value(self) -> Any:
        self.skip_inline_space()
        c = self.peek()
        if c == '"':
            return self.basic_string()
        if c == "'":
            return self.literal_string()
        if c == "[":
            return self.array()
        if c == "{":
            return self.inline_table()
        for word, val in (("true", True), ("false", False)):
            if self.s.startswith(word, self.i) and not _BARE_KEY.match(self.s, self.i + len(word)):
                self.i += len(word)
                return val
        m = _NUMBER.match(self.s, self.i)
        if m and m.group(0) not in ("", "+", "-"):
            text = m.group(0).replace("_", "")
            self.i = m.end()
            if self.peek() in ("-", ":"):
                raise self.fail("dates and times are not supported here")
            if re.fullmatch(r"[+-]?(?:0x|0o|0b).*", text):
                sign = -1 if text.startswith("-") else 1
                body = text.lstrip("+-")
                return sign * int(body[2:], {"x": 16, "o": 8, "b": 2}[body[1]])
            if re.fullmatch(r"[+-]?[0-9]+", text):
                return int(text)
            return float(text)
        raise self.fail("expected a value")

    def array(self) -> List[Any]:
        self.i += 1
        out: List[Any] = []
        while True:
            self.skip_blank()
            if self.peek() == "]":
                self.i += 1
                return out
            out.append(self.value())
            self.skip_blank()
            if self.peek() == ",":
                self.i += 1
            elif self.peek() != "]":
                raise self.fail("expected ',' or ']' in an array")

    def inline_table(self) -> Dict[str, Any]:
        self.i += 1
        out: Dict[str, Any] = {}
        self.skip_inline_space()
        if self.peek() == "}":
            self.i += 1
            return out
        while True:
            path = self.key()
            if self.peek() != "=":
                raise self.fail("expected '=' after a key")
            self.i += 1
            _assign(out, path, self.value(), self)
            self.skip_inline_space()
            if self.peek() == ",":
                self.i += 1
                continue
            if self.peek() == "}":
                self.i += 1
                return out
            raise self.fail("expected ',' or '}' in an inline table")


def _assign(table: Dict[str, Any], path: List[str], value: Any, r: _Reader) -> None:
    for part in path[:-1]:
        nxt = table.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise r.fail(f"key {'.'.join(path)!r} redefines a value")
        table = nxt
    if path[-1] in table:
        raise r.fail(f"key {'.'.join(path)!r} defined twice")
    table[path[-1]] = value


def _descend(root: Dict[str, Any], path: List[str], r: _Reader, *, array: bool) -> Dict[str, Any]:
    table = root
    for part in path[:-1]:
        nxt = table.setdefault(part, {})
        if isinstance(nxt, list):
            nxt = nxt[-1]  # [[a]] then [a.b]: the last element of the array
        if not isinstance(nxt, dict):
            raise r.fail(f"table {'.'.join(path)!r} redefines a value")
        table = nxt
    last = path[-1]
    if array:
        items = table.setdefault(last, [])
        if not isinstance(items, list):
            raise r.fail(f"array of tables {'.'.join(path)!r} redefines a value")
        items.append({})
        new: Dict[str, Any] = items[-1]
        return new
    existing = table.setdefault(last, {})
    if not isinstance(existing, dict):
        raise r.fail(f"table {'.'.join(path)!r} redefines a value")
    return existing


def loads_subset(text: str) -> Dict[str, Any]:
    """Parse the TOML subset described in the module docstring."""
    r = _Reader(text)
    root: Dict[str, Any] = {}
    current = root
    seen_tables: List[Tuple[str, ...]] = []
    while True:
        r.skip_blank()
        if r.peek() == "":
            return root
        if r.peek() == "[":
            array = r.s.startswith("[[", r.i)
            r.i += 2 if array else 1
            path = r.key()
            closing = "]]" if array else "]"
            if not r.s.startswith(closing, r.i):
                raise r.fail("unterminated table header")
            r.i += len(closing)
            if not array:
                if tuple(path) in seen_tables:
                    raise r.fail(f"table [{'.'.join(path)}] defined twice")
                seen_tables.append(tuple(path))
            current = _descend(root, path, r, array=array)
            r.end_of_line()
            continue
        path = r.key()
        if r.peek() != "=":
            raise r.fail("expected '=' after a key")
        r.i += 1
        _assign(current, path, r.value(), r)
        r.end_of_line()
