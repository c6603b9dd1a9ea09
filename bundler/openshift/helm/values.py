"""Chart values as Helm reads them: the YAML loader and the merge of values over a chart's defaults.

Owns `load_yaml` (YAML 1.1 as sigs.k8s.io/yaml reads it into Go values: numbers become float64, dates stay
strings) and `coalesce` (Helm's ``chartutil.CoalesceTables``: given values win, maps merge deeply, a
``null`` given value removes the default).
"""

from __future__ import annotations

import copy
from typing import Any, Dict

import yaml


class _Loader(yaml.SafeLoader):  # type: ignore[misc]
    pass


# Dates and times stay strings, as in Helm (JSON has no date type).
_Loader.yaml_implicit_resolvers = {
    k: [(tag, regexp) for tag, regexp in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _as_go(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, str) else k: _as_go(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_go(v) for v in value]
    return value


def load_yaml(text: str) -> Any:
    """One YAML document as Helm's values: maps, lists, strings, float64 numbers, booleans, nil."""
    return _as_go(yaml.load(text, Loader=_Loader))  # noqa: S506 - a SafeLoader subclass


def coalesce(given: Dict[str, Any], defaults: Dict[str, Any]) -> Dict[str, Any]:
    """`given` over a copy of `defaults` (both left unchanged)."""
    out = copy.deepcopy(defaults)
    for key, value in given.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = coalesce(value, out[key])
        else:
            out[key] = copy.deepcopy(value)
    return out
