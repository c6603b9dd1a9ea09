"""Reading files out of image layers: newest layer wins, whiteouts and opaque directories honoured."""

from __future__ import annotations

import io
from pathlib import Path

from bundler.transfer.image_files import extract_file, open_image, read_files
from bundler.layout.store import Layout
from bundler.transfer.transports import LayoutImage
from tests.infra.images import make_image, make_index, make_layer, write_oci_layout


def _layered(tmp_path: Path, layers: list, docker: bool = False) -> LayoutImage:
    img = make_image(base_layers=[make_layer(files) for files in layers], docker=docker)
    write_oci_layout(tmp_path / "l", [("img", make_index([img], docker=docker))])
    return LayoutImage(Layout(tmp_path / "l", create=False), "img")


def test_newest_layer_wins_and_whiteouts_hide(tmp_path: Path) -> None:
    src = _layered(
        tmp_path,
        [
            {"etc/a": b"old", "etc/b": b"gone", "d/x": b"x-old", "keep/k": b"k"},
            {"etc/a": b"new", "etc/.wh.b": b"", "d/.wh..wh..opq": b"", "d/y": b"y"},
        ],
    )
    image = open_image(src)
    files = read_files(image, lambda p: True)
    assert files["etc/a"] == b"new"
    assert "etc/b" not in files
    assert "d/x" not in files  # hidden by the opaque marker
    assert files["d/y"] == b"y"
    assert files["keep/k"] == b"k"


def test_extract_file_streams_the_visible_version(tmp_path: Path) -> None:
    src = _layered(tmp_path, [{"usr/bin/tool": b"v1"}, {"usr/bin/tool": b"v2" * 1000}], docker=True)
    out = io.BytesIO()
    assert extract_file(open_image(src), "/usr/bin/tool", out) is not None
    assert out.getvalue() == b"v2" * 1000
    assert extract_file(open_image(src), "usr/bin/none", io.BytesIO()) is None


def test_extract_file_deleted_returns_none(tmp_path: Path) -> None:
    src = _layered(tmp_path, [{"usr/bin/tool": b"v1"}, {"usr/bin/.wh.tool": b""}])
    assert extract_file(open_image(src), "usr/bin/tool", io.BytesIO()) is None
