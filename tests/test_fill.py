"""fill_bundle: blobs streamed once into planned slots of preallocated volumes, a journal, schemaVersion 2.

The synthetic layout of tests/test_bundle.py is the source (each blob opened through a counting opener, as
pack opens registry blobs): the bundle verifies and reads back byte for byte; damage to a volume without
a whole-file sha256 is still found and names the volume; a fill that fails or is interrupted journals what
it finished and a rerun opens only the rest; a slot that was being written is never trusted.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

import pytest

from bundler.base.errors import IntegrityError, PartialFailureError, RegistryError
from bundler.base.progress import CountingProgress
from bundler.bundle.fill import BundleContent, BundleFill, FillOptions, SourcedBlob, fill_bundle
from bundler.bundle.manifest import MANIFEST_NAME, BundleImage, BundleManifest
from bundler.bundle.members import JOURNAL_NAME
from bundler.bundle.verify import verify_bundle
from bundler.bundle.volumes import Bundle, BundleWriteResult
from bundler.layout.store import Layout
from bundler.oci.digest import Readable
from bundler.oci.media import Descriptor, detect_media_type, is_index, parse_manifest
from tests.test_bundle import FILES, VOLUME_SIZE, bundle_images, keys, layout_objs  # noqa: F401  (fixtures)
from tests.test_verify import flip


class Source:
    """Opens layout blobs like a registry would, counting opens; `broken` digests fail (not temporary)."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.opened: Counter[str] = Counter()
        self.broken: Set[str] = set()
        self.ranges: Dict[str, List[int]] = {}
        """Digest → the start of every byte range asked for."""
        self.broken_ranges: Set[Tuple[str, int]] = set()
        self.lock = threading.Lock()

    def opener(self, d: Descriptor) -> Any:
        @contextlib.contextmanager
        def open_at(offset: int) -> Iterator[Readable]:
            with self.lock:
                self.opened[str(d.digest)] += 1
            if str(d.digest) in self.broken:
                raise RegistryError(f"blob {d.digest} broken for this test", temporary=False)
            with self.layout.open_blob(d.digest, offset) as f:
                yield f

        return open_at

    def ranged(self, d: Descriptor) -> Any:
        @contextlib.contextmanager
        def open_range(start: int, end: int) -> Iterator[Readable]:
            with self.lock:
                self.ranges.setdefault(str(d.digest), []).append(start)
            if (str(d.digest), start) in self.broken_ranges:
                raise RegistryError(f"range {start}-{end} of {d.digest} broken for this test", temporary=False)
            with self.layout.open_blob(d.digest, start) as f:
                yield f

        return open_range


def content_of(layout: Layout, images: List[BundleImage], source: Source, *, ranged: bool = False) -> BundleContent:
    """What pack would plan for these images, image by image: its manifests in memory, then its configs and
    layers streamed (each blob once, where an earlier image brought it)."""
    blobs: Dict[str, SourcedBlob] = {}
    needs: Dict[str, List[str]] = {}
    for image in images:
        stack = [Descriptor(media_type=image.media_type, digest=image.digest, size=image.size)]
        needed: List[str] = []
        streamed: List[SourcedBlob] = []
        while stack:
            d = stack.pop()
            raw = layout.read_blob(d.digest)
            mt = detect_media_type(raw, d.media_type or None)
            blobs.setdefault(str(d.digest), SourcedBlob(d.digest, len(raw), mt, data=raw))
            needed.append(str(d.digest))
            parsed = parse_manifest(raw, mt)
            if is_index(mt):
                stack.extend(parsed.children)
            for b in parsed.blobs:
                streamed.append(SourcedBlob(b.digest, b.size, b.media_type, opener=source.opener(b), ranged=source.ranged(b) if ranged else None))
                needed.append(str(b.digest))
        for b in streamed:
            blobs.setdefault(str(b.digest), b)
        needs[image.source] = needed
    return BundleContent(images=images, blobs=list(blobs.values()), files=FILES, needs=needs)


def fill(layout: Layout, source: Source, out: Path, key: Optional[Path] = None, workers: int = 4) -> BundleWriteResult:
    images = bundle_images(layout_objs_cache[id(layout)])
    return fill_bundle(content_of(layout, images, source), FillOptions(out_dir=out, volume_size=VOLUME_SIZE, sign_key=key, workers=workers))


layout_objs_cache: Dict[int, Dict[str, Any]] = {}


@pytest.fixture
def src(layout_objs: Tuple[Layout, Dict[str, Any]]) -> Tuple[Layout, Source]:
    layout, objs = layout_objs
    layout_objs_cache[id(layout)] = objs
    return layout, Source(layout)


def journaled(out: Path) -> Set[str]:
    """Keys of the items the journal lists (each line: key, then what and where the item is)."""
    lines = (out / JOURNAL_NAME).read_bytes().split(b"\n")
    return {ln.decode().split("\t", 1)[0] for ln in lines[1:-1] if ln.count(b"\t") == 4}


def test_filled_bundle_verifies_and_reads_back_every_blob_opened_once(src: Tuple[Layout, Source], tmp_path: Path, keys: Tuple[Path, Path]) -> None:
    layout, source = src
    result = fill(layout, source, tmp_path / "b", key=keys[0])
    m = result.manifest
    doc = json.loads((tmp_path / "b" / MANIFEST_NAME).read_bytes())
    assert doc["schemaVersion"] == 2 and all("sha256" not in v for v in doc["volumes"]) and len(m.volumes) >= 3
    assert set(source.opened.values()) == {1}, "every streamed blob is opened exactly once"
    assert any(len(b.parts) > 1 for b in m.blobs), "a blob spans volumes"
    assert {b.encoding for b in m.blobs} == {"raw"} and "zstd" in {f.encoding for f in m.files}  # streams raw; in-memory data compressed when that pays
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == sorted([*(v.name for v in m.volumes), MANIFEST_NAME, "bundle-manifest.json.sig"])
    v = verify_bundle(tmp_path / "b", key=keys[1], require_signature=True)
    assert v.signed and v.blobs_checked == len(m.blobs)
    bundle = Bundle.open(tmp_path / "b")
    for b in m.blobs:
        assert bundle.read_blob(b.digest) == layout.read_blob(b.digest)
    assert BundleManifest.from_bytes((tmp_path / "b" / MANIFEST_NAME).read_bytes(), where="x") == m
    # a rerun of a finished bundle opens nothing
    again = fill(layout, source, tmp_path / "b", key=keys[0])
    assert again.manifest == m and again.bytes_written == 0 and set(source.opened.values()) == {1}


@pytest.fixture
def filled(src: Tuple[Layout, Source], tmp_path: Path) -> Tuple[Path, BundleManifest]:
    layout, source = src
    return tmp_path / "b", fill(layout, source, tmp_path / "b").manifest


def test_flipped_byte_in_a_filled_volume_names_the_blob_and_its_volume(filled: Tuple[Path, BundleManifest]) -> None:
    out, m = filled
    blob = max((b for b in m.blobs if len(b.parts) == 1), key=lambda b: b.size)
    part = blob.parts[0]
    flip(out / part.volume, part.offset + part.length // 2)
    with pytest.raises(IntegrityError) as e:
        verify_bundle(out)
    msg = str(e.value)
    assert msg.splitlines()[0].endswith(f"1 problem; re-copy {part.volume} from the source media"), msg
    assert str(blob.digest) in msg and "does not match its digest" in msg


def test_truncated_swapped_and_damaged_header_filled_volumes(filled: Tuple[Path, BundleManifest]) -> None:
    out, m = filled
    v0, v1, v2 = m.volumes[0], m.volumes[1], m.volumes[2]
    with open(out / v1.name, "r+b") as f:
        f.truncate(v1.size - 1000)
    part = next(p for b in m.blobs for p in b.parts if p.volume == v0.name)
    flip(out / v0.name, part.offset - 512 + 20)  # inside a member name
    with pytest.raises(IntegrityError) as e:
        verify_bundle(out)
    msg = str(e.value)
    assert f"{v1.name} is truncated: {v1.size - 1000} of {v1.size} bytes" in msg
    assert f"{v0.name}: damaged tar header at offset {part.offset - 512}" in msg
    assert v0.name in msg.splitlines()[0] and v1.name in msg.splitlines()[0]
    # two full volumes swapped: same size, so the structure and the blobs tell
    if v2.size == v1.size:
        (out / v1.name).unlink()
        (out / v2.name).rename(out / v1.name)
        with pytest.raises(IntegrityError, match=f"{v1.name}: member .* is not at offset"):
            verify_bundle(out)


def test_version_1_still_needs_a_sha256_per_volume(filled: Tuple[Path, BundleManifest]) -> None:
    out, _ = filled
    doc = json.loads((out / MANIFEST_NAME).read_bytes())
    doc["schemaVersion"] = 1
    with pytest.raises(IntegrityError, match=r"volumes\[0\]\.sha256 must be a non-empty string"):
        BundleManifest.from_bytes(json.dumps(doc).encode(), where="m")


def test_failed_blob_leaves_a_journal_and_the_rerun_opens_only_it(src: Tuple[Layout, Source], tmp_path: Path, layout_objs: Tuple[Layout, Dict[str, Any]]) -> None:
    layout, source = src
    big = max(layout_objs[1]["c"].blobs, key=lambda b: b.size)
    source.broken.add(big.digest)
    with pytest.raises(PartialFailureError) as e:
        fill(layout, source, tmp_path / "b")
    assert "1 of " in str(e.value) and big.digest in str(e.value) and "quay.io/t/docker-list:v1" in str(e.value)
    assert not (tmp_path / "b" / MANIFEST_NAME).exists()
    done = journaled(tmp_path / "b")
    assert big.digest not in done and len(done) > 5
    with pytest.raises(Exception, match="unfinished bundle"):
        Bundle.open(tmp_path / "b")
    source.broken.clear()
    before = Counter(source.opened)
    result = fill(layout, source, tmp_path / "b")
    assert source.opened - before == Counter({big.digest: 1}), "only the failed blob is opened again"
    assert result.bytes_written < result.total_bytes
    assert not (tmp_path / "b" / JOURNAL_NAME).exists() and not list((tmp_path / "b").glob(".*.partial"))
    verify_bundle(tmp_path / "b")


def test_a_journal_for_other_content_or_a_torn_last_line_is_not_trusted(src: Tuple[Layout, Source], tmp_path: Path, layout_objs: Tuple[Layout, Dict[str, Any]]) -> None:
    layout, source = src
    big = max(layout_objs[1]["c"].blobs, key=lambda b: b.size)
    source.broken.add(big.digest)
    with pytest.raises(PartialFailureError):
        fill(layout, source, tmp_path / "b")
    source.broken.clear()
    journal = tmp_path / "b" / JOURNAL_NAME
    lines = journal.read_bytes().split(b"\n")
    streamed = [ln for ln in lines[1:-1] if ln.split(b"\t", 1)[0].decode() in source.opened]
    kept, torn = streamed[0].split(b"\t", 1)[0].decode(), streamed[-1].split(b"\t", 1)[0].decode()
    entries = [ln for ln in lines[1:-1] if ln != streamed[-1]] + [streamed[-1]]
    journal.write_bytes(b"\n".join([lines[0], *entries[:-1]]) + b"\n" + entries[-1][:-3])  # the last entry torn half way
    before = Counter(source.opened)
    fill(layout, source, tmp_path / "b")
    reopened = source.opened - before
    assert reopened == Counter({big.digest: 1, torn: 1}), "the failed blob and the torn entry's blob are fetched again, nothing else"
    assert kept not in reopened
    verify_bundle(tmp_path / "b")
    # a journal written in another format (or for another volume size): everything is fetched again
    journal.write_bytes(json.dumps({"fingerprint": "other", "created": "2020-01-01T00:00:00Z"}).encode() + b"\n" + lines[1] + b"\n")
    (tmp_path / "b" / MANIFEST_NAME).unlink()
    before = Counter(source.opened)
    fill(layout, source, tmp_path / "b")
    assert set((source.opened - before).keys()) == set(source.opened.keys())
    verify_bundle(tmp_path / "b")


def test_progress_totals_come_from_the_plan(src: Tuple[Layout, Source], tmp_path: Path) -> None:
    layout, source = src
    images = bundle_images(layout_objs_cache[id(layout)])
    totals: List[Tuple[int, int]] = []

    class Watch(CountingProgress):
        def advance(self, nbytes: int) -> None:
            super().advance(nbytes)
            totals.append((self.total, self.items_total))

    progress = Watch()
    result = fill_bundle(content_of(layout, images, source), FillOptions(out_dir=tmp_path / "b", volume_size=VOLUME_SIZE, progress=progress))
    stored = sum(b.stored_size for b in result.manifest.blobs) + sum(f.stored_size for f in result.manifest.files)
    assert set(totals) == {(stored, len(images))}, "the totals are known before the first byte and never grow"
    assert progress.done == stored
    assert sorted(name for name, status in progress.items if status == "packed") == sorted(i.source for i in images)


def test_a_missing_partial_volume_is_made_again_and_its_blobs_fetched_again(src: Tuple[Layout, Source], tmp_path: Path, layout_objs: Tuple[Layout, Dict[str, Any]]) -> None:
    layout, source = src
    big = max(layout_objs[1]["c"].blobs, key=lambda b: b.size)
    source.broken.add(big.digest)
    with pytest.raises(PartialFailureError):
        fill(layout, source, tmp_path / "b")
    (tmp_path / "b" / ".bundle-0002.tar.partial").unlink()
    source.broken.clear()
    before = Counter(source.opened)
    result = fill(layout, source, tmp_path / "b")
    in_second = {str(b.digest) for b in result.manifest.blobs if any(p.volume == "bundle-0002.tar" for p in b.parts)}
    reopened = set((source.opened - before).keys())
    assert reopened == {big.digest} | (in_second & set(source.opened)), "the lost volume's streamed blobs, and the failed one, are fetched again"
    verify_bundle(tmp_path / "b")


def _first_place(parts: Any) -> Tuple[str, int]:
    return (parts[0].volume, parts[0].offset)


def test_a_layout_grown_in_steps_is_the_layout_laid_out_at_once(src: Tuple[Layout, Source], tmp_path: Path, keys: Tuple[Path, Path]) -> None:
    """pack's way: the first blobs are laid out and fetched before the rest (signatures, files) is known.
    Every blob is still opened once, the early ones lie before everything laid out later, and the result is
    the very layout (same id, same places) a fill of everything at once gives, so a rerun's journal matches."""
    layout, source = src
    images = bundle_images(layout_objs_cache[id(layout)])
    content = content_of(layout, images, source)
    early = content.blobs[: len(content.blobs) // 2]
    with BundleFill(FillOptions(out_dir=tmp_path / "steps", volume_size=VOLUME_SIZE, sign_key=keys[0], workers=4)) as f:
        f.start(early)
        stepped = f.finish(content).manifest
    assert set(source.opened.values()) == {1}, "every streamed blob is opened exactly once"
    early_keys = {str(b.digest) for b in early}
    places = {str(b.digest): _first_place(b.parts) for b in stepped.blobs}
    later = [p for k, p in places.items() if k not in early_keys] + [_first_place(x.parts) for x in stepped.files]
    assert max(places[k] for k in early_keys) < min(later)
    verify_bundle(tmp_path / "steps", key=keys[1], require_signature=True)
    at_once = fill_bundle(content_of(layout, images, Source(layout)), FillOptions(out_dir=tmp_path / "once", volume_size=VOLUME_SIZE, workers=4)).manifest
    assert at_once.id == stepped.id
    assert [(str(b.digest), b.parts) for b in at_once.blobs] == [(str(b.digest), b.parts) for b in stepped.blobs]


def test_a_journal_entry_is_trusted_only_where_the_new_layout_puts_the_item(src: Tuple[Layout, Source], tmp_path: Path, layout_objs: Tuple[Layout, Dict[str, Any]]) -> None:
    """An interrupted fill, then a rerun whose layout differs (the same blobs in another order): a finished
    item is kept only where it lies at the same place in the new layout; every moved one is fetched again,
    and the bundle verifies (trusting an entry by name alone would leave the wrong bytes in a moved slot)."""
    layout, source = src
    images = bundle_images(layout_objs_cache[id(layout)])
    big = max(layout_objs[1]["c"].blobs, key=lambda b: b.size)
    source.broken.add(big.digest)
    options = FillOptions(out_dir=tmp_path / "b", volume_size=VOLUME_SIZE, workers=4)
    with pytest.raises(PartialFailureError):
        fill_bundle(content_of(layout, images, source), options)
    source.broken.clear()
    lines = (tmp_path / "b" / JOURNAL_NAME).read_bytes().split(b"\n")[1:-1]
    was = {f[0]: f[4] for f in (ln.decode().split("\t") for ln in lines) if f[0] in source.opened}
    content = content_of(layout, images, source)
    shifted = BundleContent(images=content.images, blobs=list(reversed(content.blobs)), files=content.files, needs=content.needs)
    before = Counter(source.opened)
    result = fill_bundle(shifted, options)
    now = {str(b.digest): ",".join(f"{p.volume}@{p.offset}" for p in b.parts) for b in result.manifest.blobs}
    moved = {k for k, where in was.items() if now[k] != where}
    stayed = set(was) - moved
    reopened = set((source.opened - before).keys())
    assert moved, "the new order moves finished blobs"
    assert moved <= reopened and not stayed & reopened, (moved, stayed, reopened)
    assert big.digest in reopened
    verify_bundle(tmp_path / "b")


def test_a_finished_bundle_is_the_start_of_a_fill_with_more_images(src: Tuple[Layout, Source], tmp_path: Path) -> None:
    """A finished bundle in the directory: the same content again opens nothing and leaves its volumes as
    they are; the content with one more image (a config that grew) fetches only that image's own blobs,
    every blob that stays in place is kept, and the bigger bundle verifies."""
    layout, source = src
    images = bundle_images(layout_objs_cache[id(layout)])
    options = FillOptions(out_dir=tmp_path / "b", volume_size=VOLUME_SIZE, workers=4)
    first = fill_bundle(content_of(layout, images[:-1], source), options).manifest
    volume = tmp_path / "b" / first.volumes[0].name
    inode = volume.stat().st_ino
    before = Counter(source.opened)
    again = fill_bundle(content_of(layout, images[:-1], source), options).manifest
    assert again.id == first.id and source.opened == before and volume.stat().st_ino == inode
    grown = fill_bundle(content_of(layout, images, source), options).manifest
    had = {str(b.digest) for b in first.blobs}
    new = {k for k in (source.opened - before)}
    assert new and not new & had, "only blobs the first bundle did not hold are fetched"
    assert new == {str(b.digest) for b in grown.blobs if str(b.digest) not in had} & set(source.opened)
    verify_bundle(tmp_path / "b")


def test_a_blob_fetched_in_ranges_keeps_its_finished_ranges_for_the_rerun(
    src: Tuple[Layout, Source], tmp_path: Path, layout_objs: Tuple[Layout, Dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large blob fetched in byte ranges, one of which fails: the ranges that arrived are journaled and the
    rerun asks only for the others, proves the digest over every byte and the bundle verifies. A journaled
    range damaged on disk fails the digest: after that, none of the blob's ranges is trusted and the next
    run fetches every one of them again."""
    from bundler.bundle import fill as fill_module

    monkeypatch.setattr(fill_module, "MIN_PART", 64 * 1024)
    layout, source = src
    images = bundle_images(layout_objs_cache[id(layout)])
    big = max(layout_objs[1]["c"].blobs, key=lambda b: b.size)
    bounds = fill_module._bounds(big.size, fill_module._part_size(big.size))
    assert len(bounds) > 4
    source.broken_ranges.add((big.digest, bounds[3]))
    options = FillOptions(out_dir=tmp_path / "b", volume_size=VOLUME_SIZE, workers=4)
    with pytest.raises(PartialFailureError):
        fill_bundle(content_of(layout, images, source, ranged=True), options)
    lines = [ln.decode().split("\t") for ln in (tmp_path / "b" / JOURNAL_NAME).read_bytes().split(b"\n")[1:-1]]
    landed = {int(f[5].split("-")[0]) for f in lines if f[0] == big.digest and len(f) == 6}
    assert landed and bounds[3] not in landed
    where = next(f[4] for f in lines if f[0] == big.digest)
    source.broken_ranges.clear()
    # range 0 always runs (it is the one that would fetch the whole blob from a source ignoring ranges)
    assert 0 in landed
    source.ranges.clear()
    # the first range damaged on disk after it was journaled: the digest fails and that run journals it
    volume, offset = where.split(",")[0].rsplit("@", 1)
    flip(tmp_path / "b" / f".{volume}.partial", int(offset) + 1)
    with pytest.raises(PartialFailureError):
        fill_bundle(content_of(layout, images, source, ranged=True), options)
    assert set(source.ranges[big.digest]) == set(bounds[:-1]) - landed, "only the ranges that had not arrived are asked for"
    source.ranges.clear()
    fill_bundle(content_of(layout, images, source, ranged=True), options)
    assert sorted(source.ranges[big.digest]) == bounds[:-1], "after a failed digest every range is fetched again"
    verify_bundle(tmp_path / "b")
