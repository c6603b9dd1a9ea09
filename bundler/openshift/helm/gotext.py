"""Template values as text: Go's printing (`printf`, `print`), sprig's conversions (`toString`, `int`,
`quote`, `indent`, `trunc`) and Helm's encodings (`toYaml`, `toJson`, `fromYaml`, `fromJson`).

Go's encoders print integral float64s as integers (`3`, not `3.0`); Helm's YAML values are float64, so
`plain` turns them back before encoding. `printf` implements the verbs charts use (%s %v %d %q %t %f %g
%e %x %X %o %c %%).
"""

from __future__ import annotations

import json
import re
from typing import Any, List

import yaml

from bundler.openshift.helm.goeval import go_float, go_str, truth, type_name


def strval(value: Any) -> str:
    return value if isinstance(value, str) else go_str(value, nested=True) if value is not None else ""


def to_int(value: Any) -> int:
    """sprig's `toInt64`: numbers truncate, strings parse (0 when they do not), nil is 0."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str):
        try:
            return int(float(value)) if re.fullmatch(r"\s*[+-]?\d+(\.\d*)?([eE][+-]?\d+)?\s*", value) else int(value, 0)
        except ValueError:
            return 0
    return 0


def to_float(value: Any) -> float:
    try:
        return float(value) if value is not None and not isinstance(value, (dict, list)) else 0.0
    except ValueError:
        return 0.0


def empty(value: Any) -> bool:
    return not truth(value)


def plain(value: Any) -> Any:
    """A value as JSON/YAML data: integral floats become ints (Go's encoders print 3, not 3.0)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def to_yaml(value: Any) -> str:
    if value is None:
        return "null"
    text = yaml.safe_dump(plain(value), default_flow_style=False, sort_keys=True, allow_unicode=True, width=1 << 30)
    if text.endswith("\n...\n"):
        text = text[:-5]
    return str(text).rstrip("\n")


def to_json(value: Any) -> str:
    def default(o: Any) -> Any:
        return go_str(o)

    return json.dumps(plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=default)


def from_yaml(text: Any) -> Any:
    from bundler.openshift.helm.values import load_yaml

    try:
        data = load_yaml(strval(text))
    except yaml.YAMLError as exc:
        return {"Error": str(exc).splitlines()[0]}
    return data if data is not None else {}


def from_json(text: Any) -> Any:
    try:
        return _floats(json.loads(strval(text)))
    except ValueError as exc:
        return {"Error": str(exc)}


def _floats(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, dict):
        return {k: _floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_floats(v) for v in value]
    return value


def indent(n: Any, text: Any) -> str:
    pad = " " * to_int(n)
    return pad + strval(text).replace("\n", "\n" + pad)


def trunc(n: Any, text: Any) -> str:
    s, c = strval(text), to_int(n)
    if c < 0 and len(s) + c > 0:
        return s[len(s) + c:]
    if 0 <= c < len(s):
        return s[:c]
    return s


def _go_quote(s: str) -> str:
    return json.dumps(s, ensure_ascii=False).replace("\\u007f", "\\x7f")


def quote(*values: Any) -> str:
    return " ".join(_go_quote(strval(v)) for v in values if v is not None)


def squote(*values: Any) -> str:
    return " ".join(f"'{strval(v)}'" for v in values if v is not None)


_VERB = re.compile(r"%([-+# 0]*)(\d+|\*)?(?:\.(\d+))?([a-zA-Z%])")


def printf(fmt: Any, *args: Any) -> str:
    """Go's fmt.Sprintf for the verbs charts use: %s %v %d %q %t %f %g %e %x %X %o %c %%."""
    values = list(args)
    out: List[str] = []
    pos = 0
    text = strval(fmt)
    for m in _VERB.finditer(text):
        out.append(text[pos:m.start()])
        pos = m.end()
        flags, width, precision, verb = m.groups()
        if verb == "%":
            out.append("%")
            continue
        if not values:
            out.append(f"%!{verb}(MISSING)")
            continue
        v = values.pop(0)
        if verb in "sv":
            s = strval(v) if verb == "s" or not isinstance(v, str) else v
            if verb == "v" and v is None:
                s = "<nil>"
        elif verb == "q":
            s = _go_quote(strval(v))
        elif verb == "t":
            s = go_str(v)
        elif verb == "d":
            if isinstance(v, float) and not v.is_integer():
                s = f"%!d(float64={go_float(v)})"
            else:
                s = str(to_int(v)) if isinstance(v, (int, float)) else f"%!d({type_name(v)}={strval(v)})"
        elif verb in "feEgG":
            s = ("%" + (f".{precision}" if precision else "") + verb) % to_float(v) if verb != "g" or precision else go_float(to_float(v))
        elif verb in "xXo":
            s = (format(to_int(v), verb) if isinstance(v, (int, float)) else strval(v).encode().hex()) if verb != "X" or isinstance(v, (int, float)) else strval(v).encode().hex().upper()
        elif verb == "c":
            s = chr(to_int(v))
        else:
            raise ValueError(f"printf verb %{verb} is not supported")
        if width and width != "*":
            s = s.ljust(int(width)) if "-" in flags else s.rjust(int(width), "0" if "0" in flags and verb in "dfeg" else " ")
        out.append(s)
    out.append(text[pos:])
    if values:
        out.append("%!(EXTRA " + ", ".join(f"{type_name(v)}={strval(v)}" for v in values) + ")")
    return "".join(out)


def go_print(*args: Any) -> str:
    """Go's fmt.Sprint: spaces between operands when neither is a string."""
    out = ""
    for i, a in enumerate(args):
        if i > 0 and not isinstance(a, str) and not isinstance(args[i - 1], str):
            out += " "
        out += go_str(a, nested=True) if a is None else go_str(a)
    return out
