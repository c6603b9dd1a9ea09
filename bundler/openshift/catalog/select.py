"""Choosing the part of a catalog to carry: the image-set config's operator filters, as oc-mirror applies them.

`select` (PROTOCOL-NOTES §5): no packages → the head of every channel (or everything with `full`);
packages → only those, each channel's head unless `full` or a `minVersion`/`maxVersion` range says
otherwise; bundles that the selection depends on (`olm.gvk.required`, `olm.package.required`) are added
with their upgrade path to their channel head, as operator-registry's `DiffGenerator` does, unless
`skipDependencies`. Unknown packages and channels are `ConfigError`s listing close matches. The result
is a `Selection`; `render` and `sqlite` write it out.
"""

from __future__ import annotations

import difflib
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from bundler.base.errors import ConfigError
from bundler.openshift.catalog.model import (
    GVK,
    Channel,
    ChannelEntry,
    DeclarativeConfig,
    InvalidCatalogError,
    OperatorBundle,
    Package,
    head_of,
    parse_version,
)
from bundler.openshift.image_set import CatalogSpec, PackageSpec, Version

log = logging.getLogger(__name__)



@dataclass
class Selection:
    """The part of a catalog to carry: package → channel → bundle names (catalog order)."""

    model: DeclarativeConfig
    channels: Dict[str, Dict[str, List[str]]]
    default_channels: Dict[str, str]
    pruned: bool
    """True when packages were named: the catalog image must be rebuilt to offer only this."""
    full: bool
    dependencies: List[Tuple[str, str]] = field(default_factory=list)
    """(package, bundle) pairs added because selected bundles depend on them."""
    notes: List[str] = field(default_factory=list)

    def bundle_keys(self) -> List[Tuple[str, str]]:
        """Selected (package, bundle) pairs, once each, in catalog order."""
        wanted = {(p, b) for p, chans in self.channels.items() for names in chans.values() for b in names}
        return [k for k in self.model.bundles if k in wanted]

    def bundles(self) -> List[OperatorBundle]:
        return [self.model.bundles[k] for k in self.bundle_keys()]

    def channel_count(self) -> int:
        return sum(len(c) for c in self.channels.values())

    def to_json(self) -> Dict[str, Any]:
        return {
            pkg: {"defaultChannel": self.default_channels.get(pkg), "channels": {ch: list(names) for ch, names in chans.items()}}
            for pkg, chans in self.channels.items()
        }


class _Builder:
    """Accumulates (package, channel, bundle) memberships and keeps catalog order on output."""

    def __init__(self, model: DeclarativeConfig) -> None:
        self.model = model
        self.members: Dict[str, Dict[str, Set[str]]] = {}

    def add(self, package: str, channel: str, names: Iterable[str]) -> None:
        self.members.setdefault(package, {}).setdefault(channel, set()).update(names)

    def has(self, package: str, channel: str, name: str) -> bool:
        return name in self.members.get(package, {}).get(channel, set())

    def result(self) -> Dict[str, Dict[str, List[str]]]:
        out: Dict[str, Dict[str, List[str]]] = {}
        for pkg in self.model.packages.values():
            chans = self.members.get(pkg.name)
            if not chans:
                continue
            out[pkg.name] = {}
            for ch in pkg.channels.values():
                names = chans.get(ch.name)
                if names:
                    out[pkg.name][ch.name] = [n for n in ch.entries if n in names]
        return out


def _close(name: str, candidates: Iterable[str]) -> str:
    cands = sorted(set(candidates))
    close = difflib.get_close_matches(name, cands, n=3, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in cands}
        close = [lowered[m] for m in difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.5)]
    hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    listing = ", ".join(cands[:20]) + (f", … ({len(cands)} in all)" if len(cands) > 20 else "")
    return (hint + " " if hint else "") + (f"available: {listing}" if cands else "there are none")


def _version_bound(text: Optional[str], where: str) -> Optional[Version]:
    if not text:
        return None
    v = parse_version(text)
    if v is None:
        raise ConfigError(f"{where}: {text!r} is not a version like 1.2.3")
    return v


def _in_range(b: OperatorBundle, low: Optional[Version], high: Optional[Version]) -> bool:
    if b.version is None:
        return False
    if low is not None and b.version < low:
        return False
    if high is not None and high < b.version:
        return False
    return True


def select(model: DeclarativeConfig, spec: CatalogSpec) -> Selection:
    """What to carry from `model` for one catalog entry of the image-set config."""
    builder = _Builder(model)
    named = {p.name for p in spec.packages}
    if not spec.packages:
        for pkg in model.packages.values():
            for ch in pkg.channels.values():
                builder.add(pkg.name, ch.name, ch.entries if spec.full else [_head(ch)])
    else:
        for pspec in spec.packages:
            _select_package(model, spec, pspec, builder)
    selection = Selection(model, {}, {}, pruned=bool(spec.packages), full=spec.full and not spec.packages)
    if not spec.skip_dependencies and not selection.full:
        selection.dependencies = _add_dependencies(model, builder)
    selection.channels = builder.result()
    _check_heads(selection)
    _default_channels(selection, spec, named)
    return selection


def _head(ch: Channel) -> str:
    if ch.declared_head and ch.declared_head in ch.entries:
        return ch.declared_head
    return ch.head()


def _select_package(model: DeclarativeConfig, spec: CatalogSpec, pspec: PackageSpec, builder: _Builder) -> None:
    pkg = model.packages.get(pspec.name)
    if pkg is None:
        raise ConfigError(
            f"catalog {spec.catalog}: package {pspec.name!r} does not exist",
            hint=_close(pspec.name, model.packages),
        )
    where = f"catalog {spec.catalog}: package {pkg.name!r}"
    p_low = _version_bound(pspec.min_version, f"{where} minVersion")
    p_high = _version_bound(pspec.max_version, f"{where} maxVersion")
    if pspec.default_channel and pspec.default_channel not in pkg.channels:
        raise ConfigError(f"{where}: defaultChannel {pspec.default_channel!r} does not exist", hint=_close(pspec.default_channel, pkg.channels))
    targets: List[Tuple[Channel, Optional[Version], Optional[Version], bool]] = []
    if pspec.channels:
        for cf in pspec.channels:
            ch = pkg.channels.get(cf.name)
            if ch is None:
                raise ConfigError(f"{where}: channel {cf.name!r} does not exist", hint=_close(cf.name, pkg.channels))
            low = _version_bound(cf.min_version, f"{where} channel {ch.name!r} minVersion")
            high = _version_bound(cf.max_version, f"{where} channel {ch.name!r} maxVersion")
            if low is None and high is None:
                low, high = p_low, p_high  # the package range applies to channels without their own
            targets.append((ch, low, high, cf.min_version is not None or cf.max_version is not None))
    else:
        targets = [(ch, p_low, p_high, False) for ch in pkg.channels.values()]
    for ch, low, high, explicit in targets:
        if low is None and high is None:
            builder.add(pkg.name, ch.name, ch.entries if spec.full else [_head(ch)])
            continue
        names = [n for n in ch.entries if _in_range(model.bundle(pkg.name, n), low, high)]
        if not names:
            if not explicit and not pspec.channels and len(targets) > 1:
                continue  # a package-wide range need not hit every channel
            in_channel = sorted((model.bundle(pkg.name, n) for n in ch.entries), key=lambda b: (b.version is None, b.version or Version(0, 0, 0)))
            have = [b.version_text or "?" for b in in_channel]
            raise ConfigError(
                f"{where} channel {ch.name!r}: no bundle between {low or 'any'} and {high or 'any'}",
                hint=f"versions in this channel: {', '.join(have)}",
            )
        builder.add(pkg.name, ch.name, names)
    if not builder.members.get(pkg.name):
        raise ConfigError(f"{where}: no bundle between {p_low or 'any'} and {p_high or 'any'} in any channel")


# -- dependencies (operator-registry alpha/declcfg/diff.go addAllDependencies) ---------------------


_RANGE_PART = re.compile(r"^(>=|<=|!=|==|=|>|<)?\s*v?(.+)$")


def _range_predicate(text: str) -> Callable[[Version], bool]:
    """A blang/semver range (`>=1.0.0 <2.0.0 || 3.x`); unparseable ranges match everything (and say so)."""
    text = (text or "").strip()
    if not text:
        return lambda v: True
    alternatives = []
    try:
        for alt in text.split("||"):
            checks: List[Callable[[Version], bool]] = []
            for part in alt.replace(",", " ").split():
                m = _RANGE_PART.match(part)
                if not m:
                    raise ValueError(part)
                op, ver = m.group(1) or "=", m.group(2)
                if "x" in ver.lower().split(".") or "*" in ver:
                    nums = [p for p in re.split(r"\.", ver) if p.isdigit()]
                    lo = Version.parse(".".join((nums + ["0", "0", "0"])[:3]))
                    if len(nums) == 0:
                        checks.append(lambda v: True)
                        continue
                    hi_parts = [int(n) for n in nums]
                    hi_parts[-1] += 1
                    hi = Version.parse(".".join(str(x) for x in (hi_parts + [0, 0, 0])[:3]))
                    checks.append(lambda v, lo=lo, hi=hi: lo <= v and v < hi)  # type: ignore[misc]
                    continue
                bound = Version.parse(ver)
                checks.append(_OPS[op](bound))
            alternatives.append(checks)
    except ValueError:
        log.warning("cannot read the version range %r; treating it as any version", text)
        return lambda v: True
    return lambda v: any(all(c(v) for c in checks) for checks in alternatives)


_OPS: Dict[str, Callable[[Version], Callable[[Version], bool]]] = {
    ">=": lambda b: (lambda v: not v < b),
    "<=": lambda b: (lambda v: not b < v),
    ">": lambda b: (lambda v: b < v),
    "<": lambda b: (lambda v: v < b),
    "!=": lambda b: (lambda v: v != b),
    "=": lambda b: (lambda v: v == b),
    "==": lambda b: (lambda v: v == b),
}


def _providing(model: DeclarativeConfig, pkg: Package, gvks: Set[GVK], ranges: Sequence[Tuple[str, Callable[[Version], bool]]]) -> List[Tuple[str, str]]:
    """(channel, bundle) of the latest bundles of `pkg` providing a required GVK or version range.

    Same version in two channels: the default channel's wins (operator-registry getBundlesThatProvide).
    """
    by_gvk: Dict[GVK, List[Tuple[Version, bool, str, str]]] = {}
    by_range: List[List[Tuple[Version, bool, str, str]]] = [[] for _ in ranges]
    for ch in pkg.channels.values():
        is_default = ch.name == pkg.default_channel
        for name in ch.entries:
            b = model.bundle(pkg.name, name)
            if b.version is None:
                continue
            cand = (b.version, is_default, ch.name, name)
            for g in b.provided_gvks & gvks:
                by_gvk.setdefault(g, []).append(cand)
            for i, (_, pred) in enumerate(ranges):
                if pred(b.version):
                    by_range[i].append(cand)
    chosen: Dict[str, Tuple[str, str]] = {}
    for cands in list(by_gvk.values()) + by_range:
        if cands:
            best = max(cands, key=lambda c: (c[0], c[1]))
            chosen[str(best[0])] = (best[2], best[3])
    return list(chosen.values())


def _upgrade_path(ch: Channel, start: str) -> List[str]:
    """`start`, the channel head, and the bundles between them (operator-registry findIntersectingBundles)."""
    head = _head(ch)
    if start == head:
        return [head]
    start_chain: Set[str] = {start}
    cur: Optional[ChannelEntry] = ch.entries.get(start)
    seen: Set[str] = set()
    while cur is not None and cur.replaces and cur.name not in seen:
        seen.add(cur.name)
        start_chain.add(cur.replaces)
        cur = ch.entries.get(cur.replaces)
    intersection = ""
    if head in start_chain:
        intersection = head
    else:
        cur = ch.entries.get(head)
        seen = set()
        while cur is not None and cur.replaces and cur.name not in seen:
            seen.add(cur.name)
            if cur.replaces in start_chain:
                intersection = cur.replaces
                break
            cur = ch.entries.get(cur.replaces)
    if not intersection:
        return [start, head]
    replaced_by: Dict[str, List[str]] = {}
    for e in ch.entries.values():
        if e.replaces:
            replaced_by.setdefault(e.replaces, []).append(e.name)
    found: Set[str] = set()
    queue = list(replaced_by.get(intersection, []))
    while queue:
        n = queue.pop(0)
        if n not in found:
            found.add(n)
            queue.extend(replaced_by.get(n, []))
    cur = ch.entries.get(start)
    seen = set()
    while cur is not None and cur.name != intersection and cur.name not in seen:
        seen.add(cur.name)
        found.discard(cur.name)
        cur = ch.entries.get(cur.replaces) if cur.replaces else None
    found.update((start, head))
    return [n for n in ch.entries if n in found]


def _add_dependencies(model: DeclarativeConfig, builder: _Builder) -> List[Tuple[str, str]]:
    current = {(p, b) for p, chans in builder.members.items() for names in chans.values() for b in names}
    visited: Set[Tuple[str, str, str]] = set()
    providing: Dict[str, List[Tuple[str, str]]] = {}
    while current:
        gvks: Set[GVK] = set()
        pkg_ranges: Dict[str, List[Tuple[str, Callable[[Version], bool]]]] = {}
        for key in current:
            b = model.bundles[key]
            gvks.update(b.required_gvks)
            for pname, rng in b.required_packages:
                pkg_ranges.setdefault(pname, []).append((rng, _range_predicate(rng)))
        if not gvks and not pkg_ranges:
            break
        nxt: Set[Tuple[str, str]] = set()
        for pkg in model.packages.values():
            for ch_name, name in _providing(model, pkg, gvks, pkg_ranges.get(pkg.name, [])):
                if (pkg.name, ch_name, name) in visited:
                    continue
                visited.add((pkg.name, ch_name, name))
                nxt.add((pkg.name, name))
                providing.setdefault(pkg.name, []).append((ch_name, name))
        current = nxt
    added: List[Tuple[str, str]] = []
    for pkg_name, pairs in providing.items():
        pkg = model.packages[pkg_name]
        pairs.sort(key=lambda cn: (cn[0], model.bundle(pkg_name, cn[1]).version or Version(0, 0, 0)))
        for ch_name, name in pairs:
            if builder.has(pkg_name, ch_name, name):
                continue
            path = _upgrade_path(pkg.channels[ch_name], name)
            new = [n for n in path if not builder.has(pkg_name, ch_name, n)]
            builder.add(pkg_name, ch_name, new)
            added.extend((pkg_name, n) for n in new)
    seen: Set[Tuple[str, str]] = set()
    return [k for k in added if not (k in seen or seen.add(k))]  # type: ignore[func-returns-value]


def _check_heads(selection: Selection) -> None:
    for pkg_name, chans in selection.channels.items():
        pkg = selection.model.packages[pkg_name]
        for ch_name, names in chans.items():
            if len(names) == len(pkg.channels[ch_name].entries):
                continue  # the whole channel, as the catalog has it
            entries = [pkg.channels[ch_name].entries[n] for n in names]
            try:
                head_of(entries, where="")
            except InvalidCatalogError:
                incoming = {e.replaces for e in entries if e.replaces} | {s for e in entries for s in e.skips}
                heads = [e.name for e in entries if e.name not in incoming]
                raise ConfigError(
                    f"package {pkg_name!r} channel {ch_name!r}: the selected bundles do not form one upgrade graph (heads: {', '.join(heads)})",
                    hint="widen minVersion/maxVersion so the versions between them are included",
                ) from None


def _default_channels(selection: Selection, spec: CatalogSpec, named: Set[str]) -> None:
    wanted = {p.name: p.default_channel for p in spec.packages if p.default_channel}
    for pkg_name, chans in selection.channels.items():
        pkg = selection.model.packages[pkg_name]
        asked = wanted.get(pkg_name)
        if asked:
            if asked not in chans:
                raise ConfigError(
                    f"package {pkg_name!r}: defaultChannel {asked!r} is not among the selected channels",
                    hint=f"selected: {', '.join(chans)}",
                )
            selection.default_channels[pkg_name] = asked
        elif pkg.default_channel in chans:
            selection.default_channels[pkg_name] = pkg.default_channel
        elif pkg_name in named:
            raise ConfigError(
                f"package {pkg_name!r}: its default channel {pkg.default_channel!r} is not among the selected channels ({', '.join(chans)})",
                hint=f"add channel {pkg.default_channel!r} or set defaultChannel to one of: {', '.join(chans)}",
            )
        else:
            best = max(chans, key=lambda c: (selection.model.bundle(pkg_name, _head_of_names(pkg.channels[c], chans[c])).version or Version(0, 0, 0), c))
            selection.default_channels[pkg_name] = best
            selection.notes.append(
                f"package {pkg_name} (added as a dependency): default channel {pkg.default_channel} is not carried; {best} is the default in the pruned catalog"
            )


def _head_of_names(ch: Channel, names: Sequence[str]) -> str:
    return head_of([ch.entries[n] for n in names], where=f"package {ch.package!r} channel {ch.name!r}")


def selected_head(selection: Selection, package: str, channel: str) -> str:
    """The head of a channel as pruned (what a pruned sqlite catalog records)."""
    return _head_of_names(selection.model.packages[package].channels[channel], selection.channels[package][channel])
