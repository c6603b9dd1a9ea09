"""The functions Helm charts call in their templates: Go's builtins, the sprig subset and Helm's own.

Owns `FUNCTIONS` (name → callable over evaluated arguments) and `SPECIAL` (name → callable that also gets
the evaluator: ``include``, ``tpl``, ``required``, ``fail``, ``lookup``). Semantics follow Go's
`text/template` builtins (https://pkg.go.dev/text/template#hdr-Functions), sprig v3
(https://masterminds.github.io/sprig/) and Helm's engine (``toYaml``, ``toJson``, ``fromYaml``,
``include``, ``tpl``, ``required``, ``lookup`` — which answers an empty map without a cluster, as
``helm template`` does). Functions whose output can never name an image (random strings, certificates,
the time) answer stand-ins of the right shape, as their output differs on every Helm run anyway. A function
not listed here is refused when the template is parsed.
"""

from __future__ import annotations

import base64
import datetime
import functools
import hashlib
import json
import math
import re
import random
import secrets
import string
import urllib.parse
import uuid
import zlib
from typing import Any, Callable, Dict, List

from bundler.openshift.helm.goeval import Evaluator, go_str, truth, type_name
from bundler.openshift.helm.gotemplate import TemplateError
from bundler.openshift.helm.gotext import (
    empty, from_json, from_yaml, go_print, indent, plain, printf, quote, squote, strval, to_float, to_int, to_json, to_yaml, trunc,
)
from bundler.openshift.helm.semver import semver_compare, semver_object


def _cmp_values(a: Any, b: Any) -> int:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        return (a > b) - (a < b)
    if isinstance(a, str) and isinstance(b, str):
        return (a > b) - (a < b)
    raise ValueError(f"incompatible types for comparison: {type_name(a)} and {type_name(b)}")


def eq(a: Any, *others: Any) -> bool:
    for b in others:
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and isinstance(a, bool) == isinstance(b, bool):
            if a == b:
                return True
        elif a is None or b is None or type(a) is type(b):
            if a == b:
                return True
        elif isinstance(a, (dict, list)) or isinstance(b, (dict, list)):
            raise ValueError("non-comparable types")
        else:
            raise ValueError(f"incompatible types for comparison: {type_name(a)} and {type_name(b)}")
    return False


def index(item: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(item, dict):
            item = item.get(key)
        elif isinstance(item, (list, tuple, str)):
            i = to_int(key)
            if not 0 <= i < len(item):
                raise IndexError(f"index out of range: {i}")
            item = item[i]
        elif item is None:
            raise ValueError("index of untyped nil")
        else:
            raise ValueError(f"can't index item of type {type_name(item)}")
    return item


def length(value: Any) -> int:
    if value is None:
        raise ValueError("len of nil pointer")
    if isinstance(value, (str, list, tuple, dict, bytes)):
        return len(value)
    raise ValueError(f"len of type {type_name(value)}")


def dict_(*kv: Any) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for i in range(0, len(kv), 2):
        out[strval(kv[i])] = kv[i + 1] if i + 1 < len(kv) else ""
    return out


def merge(dst: Dict[str, Any], *sources: Dict[str, Any], overwrite: bool = False) -> Dict[str, Any]:
    for src in sources:
        for k, v in (src or {}).items():
            if isinstance(dst.get(k), dict) and isinstance(v, dict):
                merge(dst[k], v, overwrite=overwrite)
            elif k not in dst or overwrite or dst[k] is None:
                dst[k] = v
    return dst


def _case_words(s: str) -> List[str]:
    return [w for w in re.split(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])", s) if w]


def _require_list(v: Any) -> List[Any]:
    if v is None:
        return []
    if not isinstance(v, (list, tuple)):
        raise ValueError(f"cannot use type {type_name(v)} as a list")
    return list(v)


def _dig(*args: Any) -> Any:
    *keys, default, data = args
    for k in keys:
        if not isinstance(data, dict) or k not in data:
            return default
        data = data[k]
    return data


def _kind(v: Any) -> str:
    return {"<nil>": "invalid", "map[string]interface {}": "map", "[]interface {}": "slice", "float64": "float64"}.get(type_name(v), type_name(v))


FUNCTIONS: Dict[str, Callable[..., Any]] = {
    # Go builtins
    "and": lambda *a: a[-1],  # short-circuit forms live in the evaluator
    "or": lambda *a: a[-1],
    "not": lambda v: not truth(v),
    "eq": eq,
    "ne": lambda a, b: not eq(a, b),
    "lt": lambda a, b: _cmp_values(a, b) < 0,
    "le": lambda a, b: _cmp_values(a, b) <= 0,
    "gt": lambda a, b: _cmp_values(a, b) > 0,
    "ge": lambda a, b: _cmp_values(a, b) >= 0,
    "len": length,
    "index": index,
    "print": go_print,
    "println": lambda *a: " ".join(go_str(x, nested=x is None) for x in a) + "\n",
    "printf": printf,
    "html": lambda *a: go_print(*a).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&#34;").replace("'", "&#39;"),
    "urlquery": lambda *a: urllib.parse.quote_plus(go_print(*a)),
    # sprig: defaults and flow
    "default": lambda d, *v: d if not v or empty(v[0]) else v[0],
    "empty": empty,
    "coalesce": lambda *a: next((x for x in a if not empty(x)), None),
    "ternary": lambda a, b, cond: a if truth(cond) else b,
    # strings
    "quote": quote,
    "squote": squote,
    "trim": lambda s: strval(s).strip(" \t\n\r\v\f"),
    "trimAll": lambda cut, s: strval(s).strip(strval(cut)),
    "trimPrefix": lambda p, s: strval(s)[len(strval(p)):] if strval(s).startswith(strval(p)) else strval(s),
    "trimSuffix": lambda p, s: strval(s)[: len(strval(s)) - len(strval(p))] if strval(p) and strval(s).endswith(strval(p)) else strval(s),
    "trunc": trunc,
    "replace": lambda old, new, s: strval(s).replace(strval(old), strval(new)),
    "lower": lambda s: strval(s).lower(),
    "upper": lambda s: strval(s).upper(),
    "title": lambda s: re.sub(r"(^|\s)(\S)", lambda m: m.group(1) + m.group(2).upper(), strval(s)),
    "contains": lambda sub, s: strval(sub) in strval(s),
    "hasPrefix": lambda p, s: strval(s).startswith(strval(p)),
    "hasSuffix": lambda p, s: strval(s).endswith(strval(p)),
    "split": lambda sep, s: {f"_{i}": part for i, part in enumerate(strval(s).split(strval(sep)))},
    "splitList": lambda sep, s: strval(s).split(strval(sep)),
    "splitn": lambda sep, n, s: {f"_{i}": part for i, part in enumerate(strval(s).split(strval(sep), to_int(n) - 1))},
    "join": lambda sep, v: strval(sep).join(strval(x) for x in (_require_list(v) if not isinstance(v, str) else [v])),
    "toString": strval,
    "repeat": lambda n, s: strval(s) * to_int(n),
    "substr": lambda a, b, s: strval(s)[to_int(a):(to_int(b) if to_int(b) >= 0 else None)],
    "cat": lambda *a: " ".join(strval(x) for x in a if x is not None),
    "nospace": lambda s: re.sub(r"\s", "", strval(s)),
    "kebabcase": lambda s: "-".join(w.lower() for w in _case_words(strval(s))),
    "snakecase": lambda s: "_".join(w.lower() for w in _case_words(strval(s))),
    "camelcase": lambda s: "".join(w[:1].upper() + w[1:] for w in re.split(r"[_\-\s]+", strval(s)) if w),
    "abbrev": lambda n, s: strval(s) if len(strval(s)) <= to_int(n) else strval(s)[: max(to_int(n) - 3, 0)] + "...",
    "b64enc": lambda s: base64.b64encode(strval(s).encode()).decode(),
    "b64dec": lambda s: base64.b64decode(strval(s).encode()).decode(errors="replace"),
    "sha256sum": lambda s: hashlib.sha256(strval(s).encode()).hexdigest(),
    "sha1sum": lambda s: hashlib.sha1(strval(s).encode()).hexdigest(),  # noqa: S324 - sprig's sha1sum
    "regexMatch": lambda r, s: re.search(strval(r), strval(s)) is not None,
    "regexFind": lambda r, s: (lambda m: m.group() if m else "")(re.search(strval(r), strval(s))),
    "regexFindAll": lambda r, s, n: [m.group() for m in re.finditer(strval(r), strval(s))][: (None if to_int(n) < 0 else to_int(n))],
    "regexReplaceAll": lambda r, s, repl: re.sub(strval(r), re.sub(r"\$\{?(\w+)\}?", r"\\g<\1>", strval(repl)), strval(s)),
    "regexReplaceAllLiteral": lambda r, s, repl: re.sub(strval(r), lambda _m: strval(repl), strval(s)),
    "regexSplit": lambda r, s, n: re.split(strval(r), strval(s), maxsplit=max(to_int(n) - 1, 0)) if to_int(n) != 0 else [],
    "semverCompare": semver_compare,
    "semver": semver_object,
    # numbers
    "int": to_int,
    "int64": to_int,
    "float64": to_float,
    "atoi": lambda s: to_int(s) if re.fullmatch(r"[+-]?\d+", strval(s)) else 0,
    "add": lambda *a: sum(to_int(x) for x in a),
    "add1": lambda a: to_int(a) + 1,
    "sub": lambda a, b: to_int(a) - to_int(b),
    "mul": lambda *a: math.prod(to_int(x) for x in a),
    "div": lambda a, b: int(to_int(a) / to_int(b)),
    "mod": lambda a, b: to_int(a) % to_int(b),
    "max": lambda *a: max(to_int(x) for x in a),
    "min": lambda *a: min(to_int(x) for x in a),
    "until": lambda n: list(range(to_int(n))),
    "untilStep": lambda a, b, c: list(range(to_int(a), to_int(b), to_int(c))),
    # lists and dicts
    "list": lambda *a: list(a),
    "tuple": lambda *a: list(a),
    "dict": dict_,
    "get": lambda d, k: (d or {}).get(strval(k), ""),
    "set": lambda d, k, v: (d.__setitem__(strval(k), v), d)[1],
    "unset": lambda d, k: (d.pop(strval(k), None), d)[1],
    "hasKey": lambda d, k: isinstance(d, dict) and strval(k) in d,
    "keys": lambda *ds: [k for d in ds for k in (d or {})],
    "values": lambda d: list((d or {}).values()),
    "pick": lambda d, *ks: {k: d[k] for k in ks if k in d},
    "omit": lambda d, *ks: {k: v for k, v in d.items() if k not in ks},
    "pluck": lambda k, *ds: [d[k] for d in ds if isinstance(d, dict) and k in d],
    "merge": lambda dst, *src: merge(dst, *src),
    "mergeOverwrite": lambda dst, *src: merge(dst, *src, overwrite=True),
    "deepCopy": lambda v: json.loads(json.dumps(v)) if v is not None else None,
    "dig": _dig,
    "first": lambda v: _require_list(v)[0] if _require_list(v) else None,
    "last": lambda v: _require_list(v)[-1] if _require_list(v) else None,
    "rest": lambda v: _require_list(v)[1:],
    "initial": lambda v: _require_list(v)[:-1],
    "append": lambda v, x: _require_list(v) + [x],
    "prepend": lambda v, x: [x] + _require_list(v),
    "concat": lambda *vs: [x for v in vs for x in _require_list(v)],
    "uniq": lambda v: [x for i, x in enumerate(_require_list(v)) if x not in _require_list(v)[:i]],
    "has": lambda x, v: x in _require_list(v),
    "without": lambda v, *xs: [x for x in _require_list(v) if x not in xs],
    "compact": lambda v: [x for x in _require_list(v) if not empty(x)],
    "sortAlpha": lambda v: sorted(strval(x) for x in _require_list(v)),
    "reverse": lambda v: list(reversed(_require_list(v))),
    # types and encodings
    "toYaml": to_yaml,
    "toJson": to_json,
    "toRawJson": to_json,
    "toPrettyJson": lambda v: json.dumps(plain(v), sort_keys=True, indent=2, ensure_ascii=False),
    "fromYaml": from_yaml,
    "fromJson": from_json,
    "kindIs": lambda k, v: _kind(v) == strval(k),
    "kindOf": _kind,
    "typeOf": type_name,
    "typeIs": lambda t, v: type_name(v) == strval(t),
    "deepEqual": lambda a, b: a == b,
    "indent": indent,
    "nindent": lambda n, s: "\n" + indent(n, s),
}


# -- values no image can depend on: random strings, certificates, the time ------------------------------
# Helm gives different ones on every run; charts use them for generated names and secrets. They are
# evaluated with stand-ins of the right shape so the rest of the chart renders.

_ALNUM = string.ascii_letters + string.digits


def _rand(chars: str) -> Callable[[Any], str]:
    return lambda n: "".join(secrets.choice(chars) for _ in range(max(to_int(n), 0)))


_STAND_IN_PEM = "-----BEGIN CERTIFICATE-----\nc3RhbmQtaW4=\n-----END CERTIFICATE-----"
_STAND_IN_KEY = "-----BEGIN RSA PRIVATE KEY-----\nc3RhbmQtaW4=\n-----END RSA PRIVATE KEY-----"


def _cert(*_args: Any) -> Dict[str, str]:
    return {"Cert": _STAND_IN_PEM, "Key": _STAND_IN_KEY}


_GO_LAYOUT = [("2006", "%Y"), ("01", "%m"), ("02", "%d"), ("15", "%H"), ("04", "%M"), ("05", "%S"), ("Jan", "%b"), ("Mon", "%a"), ("MST", "UTC"), ("-0700", "+0000"), ("Z07:00", "Z")]


def _date(layout: Any, when: Any = None) -> str:
    moment = when if isinstance(when, datetime.datetime) else datetime.datetime.now(datetime.timezone.utc)
    fmt = strval(layout)
    for go, py in _GO_LAYOUT:
        fmt = fmt.replace(go, py)
    return moment.strftime(fmt)


_STAND_INS: Dict[str, Callable[..., Any]] = {
    "randAlphaNum": _rand(_ALNUM),
    "randAlpha": _rand(string.ascii_letters),
    "randNumeric": _rand(string.digits),
    "randAscii": _rand("".join(chr(c) for c in range(33, 127))),
    "randInt": lambda a, b: secrets.randbelow(max(to_int(b) - to_int(a), 1)) + to_int(a),
    "uuidv4": lambda: str(uuid.uuid4()),
    "shuffle": lambda s: "".join(random.sample(strval(s), len(strval(s)))),
    "genCA": _cert,
    "genSelfSignedCert": _cert,
    "genSignedCert": _cert,
    "genPrivateKey": lambda *_a: _STAND_IN_KEY,
    "derivePassword": lambda *_a: "stand-in",
    "now": lambda: datetime.datetime.now(datetime.timezone.utc),
    "date": _date,
    "dateInZone": lambda layout, when, _zone: _date(layout, when),
    "htmlDate": lambda when: _date("2006-01-02", when),
    "unixEpoch": lambda when: str(int(when.timestamp())) if isinstance(when, datetime.datetime) else "0",
}
FUNCTIONS.update(_STAND_INS)
FUNCTIONS.update(
    {
        "fromYamlArray": lambda s: (lambda v: v if isinstance(v, list) else [])(from_yaml(s)),
        "fromJsonArray": lambda s: (lambda v: v if isinstance(v, list) else [])(from_json(s)),
        "toStrings": lambda v: [strval(x) for x in _require_list(v)],
        "round": lambda v, p=0, r=0.5: float(round(to_float(v), to_int(p))),
        "floor": lambda v: float(math.floor(to_float(v))),
        "ceil": lambda v: float(math.ceil(to_float(v))),
        "addf": lambda *a: float(sum(to_float(x) for x in a)),
        "subf": lambda a, *b: to_float(a) - sum(to_float(x) for x in b),
        "mulf": lambda *a: float(math.prod(to_float(x) for x in a)),
        "divf": lambda a, *b: functools.reduce(lambda x, y: x / to_float(y), b, to_float(a)),
        "biggest": FUNCTIONS["max"],
        "trimall": FUNCTIONS["trimAll"],
        "untitle": lambda s: re.sub(r"(^|\s)(\S)", lambda m: m.group(1) + m.group(2).lower(), strval(s)),
        "swapcase": lambda s: strval(s).swapcase(),
        "initials": lambda s: "".join(w[0] for w in strval(s).split()),
        "plural": lambda one, many, n: strval(one) if to_int(n) == 1 else strval(many),
        "seq": lambda *a: " ".join(str(i) for i in (range(1, to_int(a[0]) + 1) if len(a) == 1 else range(to_int(a[0]), to_int(a[-1]) + 1))),
        "adler32sum": lambda s: str(zlib.adler32(strval(s).encode())),
    }
)
for _name in ("toYaml", "toJson", "toRawJson", "toPrettyJson", "fromJson", "merge", "mergeOverwrite", "append", "prepend", "first", "last", "rest",
              "initial", "uniq", "without", "has", "compact", "regexMatch", "regexFind", "regexFindAll", "regexReplaceAll", "regexReplaceAllLiteral",
              "regexSplit", "deepCopy", "fromJsonArray", "fromYamlArray", "reverse", "pick", "omit", "dig", "sortAlpha", "concat"):
    FUNCTIONS["must" + _name[0].upper() + _name[1:]] = FUNCTIONS[_name]


def _include(ev: Evaluator, name: Any, data: Any) -> str:
    return ev.call_template(strval(name), data)


def _tpl(ev: Evaluator, source: Any, data: Any) -> str:
    if ev.depth >= 100:
        raise ev.fail("tpl: nested too deeply")
    return ev.tset.render_string(strval(source), data, name=f"{ev.file} (tpl)", depth=ev.depth + 1)


def _required(ev: Evaluator, message: Any, value: Any) -> Any:
    if value is None or (isinstance(value, str) and value == ""):
        raise TemplateError(f"required value missing: {strval(message)}", f"{ev.file}:{ev.line}")
    return value


def _fail(ev: Evaluator, message: Any) -> Any:
    raise TemplateError(f"the chart called fail: {strval(message)}", f"{ev.file}:{ev.line}")


SPECIAL: Dict[str, Callable[..., Any]] = {
    "include": _include,
    "tpl": _tpl,
    "required": _required,
    "fail": _fail,
    "lookup": lambda ev, *args: {},
}
