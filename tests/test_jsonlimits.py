"""The JSON depth bound shared by every parser of outside documents (`bundler.base.jsonlimits`)."""

from __future__ import annotations

import json

import pytest

from bundler.base.jsonlimits import MAX_JSON_DEPTH, JsonTooDeepError, check_depth, json_depth, loads_bounded


def test_depth_ignores_brackets_inside_strings() -> None:
    assert json_depth(b'[[[]]]') == 3
    assert json_depth('{"a": "[[[[{{{"}') == 1
    assert json_depth(b'{"a": "\\"[[[["}') == 1


def test_deep_documents_are_refused_without_recursing() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(JsonTooDeepError, match="nested deeper than"):
        loads_bounded(deep)
    with pytest.raises(ValueError):  # callers that turn ValueError into "not valid JSON" keep working
        loads_bounded(deep.encode())


def test_documents_at_the_limit_parse() -> None:
    ok = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    check_depth(ok)
    assert loads_bounded(ok) is not None
    big = json.dumps([{"a": [1, {"b": "x"}]} for _ in range(10_000)])
    assert len(loads_bounded(big)) == 10_000


def test_invalid_json_is_the_usual_error() -> None:
    with pytest.raises(json.JSONDecodeError):
        loads_bounded(b"{not json")
