"""Writing the selected part of a catalog back out as file-based-catalog JSON, for the pruned catalog image.

`render_fbc_files` gives one `<package>/catalog.json` stream per package (`render_fbc` the same as one
stream), in the layout the source catalog used (modern, or alpha with channel properties on bundles);
objects kept from the source are written as they were.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

from bundler.openshift.catalog.model import (
    FORMAT_FBC_ALPHA,
    PROP_BUNDLE_OBJECT,
    PROP_CHANNEL,
    PROP_GVK,
    PROP_GVK_REQUIRED,
    PROP_PACKAGE,
    PROP_PACKAGE_REQUIRED,
    SCHEMA_BUNDLE,
    SCHEMA_CHANNEL,
    SCHEMA_DEPRECATIONS,
    SCHEMA_PACKAGE,
    OperatorBundle,
)
from bundler.openshift.catalog.select import Selection



def _dump(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _bundle_object(b: OperatorBundle, channels: Sequence[str], alpha: bool) -> Dict[str, Any]:
    if b.raw is not None:
        if not alpha:
            return b.raw
        kept = [
            p for p in b.raw.get("properties") or []
            if not (isinstance(p, dict) and p.get("type") == PROP_CHANNEL and (p.get("value") or {}).get("name") not in channels)
        ]
        return {**b.raw, "properties": kept}
    props: List[Dict[str, Any]] = [{"type": PROP_PACKAGE, "value": {"packageName": b.package, "version": b.version_text}}]
    props += [{"type": PROP_GVK, "value": {"group": g, "version": v, "kind": k}} for g, v, k in sorted(b.provided_gvks)]
    props += [{"type": PROP_GVK_REQUIRED, "value": {"group": g, "version": v, "kind": k}} for g, v, k in sorted(b.required_gvks)]
    props += [{"type": PROP_PACKAGE_REQUIRED, "value": {"packageName": p, "versionRange": r}} for p, r in b.required_packages]
    if b.csv_json:
        props.append({"type": PROP_BUNDLE_OBJECT, "value": {"data": base64.b64encode(b.csv_json.encode()).decode()}})
    out: Dict[str, Any] = {"schema": SCHEMA_BUNDLE, "name": b.name, "package": b.package, "image": b.image, "properties": props}
    related = [{"name": r.name, "image": r.image} for r in b.related_images if r.image]
    if related:
        out["relatedImages"] = related
    return out


def _filter_deprecations(obj: Dict[str, Any], selection: Selection) -> Optional[Dict[str, Any]]:
    pkg = str(obj.get("package") or "")
    chans = selection.channels.get(pkg, {})
    bundles = {b for names in chans.values() for b in names}
    kept = []
    for e in obj.get("entries") or []:
        ref = (e or {}).get("reference") or {}
        schema, name = ref.get("schema"), ref.get("name")
        if schema == SCHEMA_CHANNEL and name not in chans:
            continue
        if schema == SCHEMA_BUNDLE and name not in bundles:
            continue
        kept.append(e)
    return {**obj, "entries": kept} if kept else None


def render_fbc_files(selection: Selection) -> Dict[str, bytes]:
    """The pruned catalog, one `<package>/catalog.json` JSON stream per package."""
    model = selection.model
    alpha = model.source_format == FORMAT_FBC_ALPHA
    by_package: Dict[str, List[Dict[str, Any]]] = {}
    for obj in model.others:
        pkg = obj.get("package")
        if pkg is None:
            by_package.setdefault("", []).append(obj)
        elif pkg in selection.channels:
            if obj.get("schema") == SCHEMA_DEPRECATIONS:
                kept = _filter_deprecations(obj, selection)
                if kept is not None:
                    by_package.setdefault(str(pkg), []).append(kept)
            else:
                by_package.setdefault(str(pkg), []).append(obj)
    members: Dict[Tuple[str, str], List[str]] = {}
    for pkg_name, chans in selection.channels.items():
        for ch_name, names in chans.items():
            for n in names:
                members.setdefault((pkg_name, n), []).append(ch_name)
    out: Dict[str, bytes] = {}
    for pkg_name, chans in selection.channels.items():
        pkg = model.packages[pkg_name]
        lines: List[str] = []
        pobj = dict(pkg.raw) if pkg.raw is not None else {"schema": SCHEMA_PACKAGE, "name": pkg.name}
        pobj["defaultChannel"] = selection.default_channels[pkg_name]
        lines.append(_dump(pobj))
        if not alpha:
            for ch_name, names in chans.items():
                ch = pkg.channels[ch_name]
                keep = set(names)
                if ch.raw is not None:
                    cobj = {**ch.raw, "entries": [e for e in ch.raw.get("entries") or [] if e.get("name") in keep]}
                else:
                    entries = []
                    for n in names:
                        e = ch.entries[n]
                        ej: Dict[str, Any] = {"name": e.name}
                        if e.replaces:
                            ej["replaces"] = e.replaces
                        if e.skips:
                            ej["skips"] = list(e.skips)
                        if e.skip_range:
                            ej["skipRange"] = e.skip_range
                        entries.append(ej)
                    cobj = {"schema": SCHEMA_CHANNEL, "name": ch_name, "package": pkg_name, "entries": entries}
                lines.append(_dump(cobj))
        for key, b in model.bundles.items():
            if key[0] == pkg_name and key in members:
                lines.append(_dump(_bundle_object(b, members[key], alpha)))
        lines.extend(_dump(o) for o in by_package.get(pkg_name, []))
        out[f"{_safe_dir(pkg_name)}/catalog.json"] = ("\n".join(lines) + "\n").encode()
    if by_package.get(""):
        out["catalog-others.json"] = ("\n".join(_dump(o) for o in by_package[""]) + "\n").encode()
    return out


def _safe_dir(name: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    return clean if clean not in ("", ".", "..") else "_"


def render_fbc(selection: Selection) -> bytes:
    """The pruned catalog as one JSON stream (what `render_fbc_files` spreads over per-package files)."""
    return b"".join(data for _, data in sorted(render_fbc_files(selection).items()))
