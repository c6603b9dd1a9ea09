"""Semantic versions as Helm charts compare them: sprig's `semverCompare` and `semver`, and the ordering
chart repositories' versions are chosen by (`version_key`).

Masterminds semver constraints, simply: `||` of comma- or space-separated `op version` terms with
= != > < >= <= ~ ^ and x-ranges; a pre-release version matches only terms that name a pre-release (`-0`).
"""

from __future__ import annotations

import re
from typing import Any, Dict, List

from bundler.openshift.helm.gotext import strval


def parse_version(text: str) -> List[Any]:
    m = re.match(r"^\s*v?(\d+)(?:\.(\d+|[xX*]))?(?:\.(\d+|[xX*]))?(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?\s*$", text)
    if m is None:
        raise ValueError(f"invalid semantic version {text!r}")
    major, minor, patch, pre = m.groups()
    num = [int(major), int(minor) if minor and minor.isdigit() else (None if minor else 0), int(patch) if patch and patch.isdigit() else (None if patch else 0)]
    return num + [pre or ""]


def version_key(v: List[Any]) -> Any:
    return (v[0], v[1] or 0, v[2] or 0, 0 if v[3] else 1, v[3])


def semver_compare(constraint: Any, version: Any) -> bool:
    """Masterminds semver constraints, simply: `||` of comma/space-separated `op version` terms, with
    = != > < >= <= ~ ^ and x-ranges; a `-0` (or any pre-release) in a term lets pre-releases match."""
    ver = parse_version(strval(version))
    for alternative in strval(constraint).split("||"):
        terms = re.findall(r"(!=|>=|<=|=>|=<|==|=|>|<|~>|~|\^)?\s*(v?[0-9xX*][0-9A-Za-z.+*-]*)", alternative)
        if terms and all(_term(op, v, ver) for op, v in terms):
            return True
    return False


def semver_object(text: Any) -> Dict[str, Any]:
    """sprig's `semver`: the parts of a version, as fields (`$v.Major`)."""
    original = strval(text)
    m = re.match(r"^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:-([0-9A-Za-z.-]+))?(?:\+([0-9A-Za-z.-]+))?$", original)
    if m is None:
        raise ValueError(f"invalid semantic version {original!r}")
    major, minor, patch, pre, meta = m.groups()
    return {"Major": int(major), "Minor": int(minor or 0), "Patch": int(patch or 0), "Prerelease": pre or "", "Metadata": meta or "", "Original": original}


def _term(op: str, text: str, ver: List[Any]) -> bool:
    want = parse_version(text)
    if ver[3] and not want[3]:
        return False  # pre-releases only match terms that name one (`>=1.21-0`)
    k, w = version_key(ver), version_key([want[0], want[1] or 0, want[2] or 0, want[3]])
    if op in ("", "=", "==") and (want[1] is None or want[2] is None):
        return ver[0] == want[0] and (want[1] is None or ver[1] == want[1])
    if op == "~" or op == "~>":
        return bool(k >= w and ver[0] == want[0] and (want[1] is None or ver[1] == want[1]))
    if op == "^":
        return bool(k >= w and ver[0] == want[0] and (want[0] != 0 or ver[1] == want[1]))
    return bool({"": k == w, "=": k == w, "==": k == w, "!=": k != w, ">": k > w, "<": k < w, ">=": k >= w, "=>": k >= w, "<=": k <= w, "=<": k <= w}[op])
