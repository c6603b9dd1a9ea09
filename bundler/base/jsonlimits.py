"""JSON parsing with a nesting-depth bound, for every document that comes from outside.

Owns one rule: JSON nested deeper than `MAX_JSON_DEPTH` arrays/objects is refused before it is parsed, with
`JsonTooDeepError` (a `ValueError`, so code that already turns "not valid JSON" into a clear one-line
error keeps doing so). Python's parser recurses once per level and raises `RecursionError` (a traceback)
on about a thousand levels, and code walking the result recurses again; no manifest, bundle manifest,
config or token answer legitimately nests more than a few dozen levels.

The depth is measured by a linear scan over the text with string literals removed, so the check costs a
fraction of the parse itself and never recurses.

    from bundler.base.jsonlimits import loads_bounded
    doc = loads_bounded(raw)                 # raises JsonTooDeepError (ValueError) when too deep
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any, Union

#: Deepest nesting accepted (arrays and objects together). Generous for every real document we read.
MAX_JSON_DEPTH = 100

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = bytes(c for c in range(256) if c not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


class JsonTooDeepError(ValueError):
    """A JSON document nests arrays/objects deeper than allowed."""

    def __init__(self, depth_limit: int) -> None:
        self.depth_limit = depth_limit
        super().__init__(f"JSON nested deeper than {depth_limit} levels")


def json_depth(data: Union[bytes, str], *, stop_after: int = MAX_JSON_DEPTH) -> int:
    """The deepest array/object nesting of `data` (string contents ignored), at most `stop_after` + 1.

    Malformed text gives some number; parsing reports the real error afterwards."""
    raw = _as_bytes(data)
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKET)
    deepest = 0
    for level in itertools.accumulate(_STEP[b] for b in brackets):
        if level > deepest:
            deepest = level
            if deepest > stop_after:
                break
    return deepest


def _as_bytes(data: Union[bytes, str]) -> bytes:
    return data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)


def check_depth(data: Union[bytes, str], *, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Raise `JsonTooDeepError` when `data` nests deeper than `max_depth`."""
    raw = _as_bytes(data)
    if raw.count(b"[") + raw.count(b"{") <= max_depth:
        return  # cannot nest deeper than it has brackets
    if json_depth(raw, stop_after=max_depth) > max_depth:
        raise JsonTooDeepError(max_depth)


def loads_bounded(data: Union[bytes, bytearray, str], *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """`json.loads` that refuses documents nested deeper than `max_depth` (`JsonTooDeepError`).

    Every other failure is the usual `ValueError` (`json.JSONDecodeError`)."""
    check_depth(bytes(data) if isinstance(data, bytearray) else data, max_depth=max_depth)
    try:
        return json.loads(data)
    except RecursionError:  # pragma: no cover - the scan above prevents it; kept as a last line
        raise JsonTooDeepError(max_depth) from None
