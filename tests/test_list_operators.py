"""`ocp-bundler list operators`: packages, default channels, channel heads and versions of a real catalog
image in a loopback registry and of the same catalog in a local OCI layout."""

from __future__ import annotations

import json
from pathlib import Path

from bundler.base.errors import ExitCode
from bundler.cli.main import main
from tests.conftest import cli_runner
from tests.infra.catalog_images import LABEL_FBC, catalog_files, fbc_catalog, index_image
from tests.infra.images import push, write_oci_layout
from tests.infra.registry import RegistryServer


def test_list_operators_of_a_registry_catalog_and_a_local_layout(registry_plain: RegistryServer, tmp_path: Path) -> None:
    text, _, base = fbc_catalog(registry_plain, "list-cat")
    image = index_image(catalog_files(text), {LABEL_FBC: "/configs"})
    digest = push(registry_plain.url, "list-cat/catalog/index", image, "v1")
    runner = cli_runner()
    insecure = ["--insecure-registry", registry_plain.host]

    result = runner.invoke(main, ["list", "operators", "--catalog", f"{base}/catalog/index:v1", *insecure])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"catalog {base}/catalog/index:v1 ({digest}, fbc): 3 package(s)"
    assert [line.split() for line in lines[1:]] == [
        ["NAME", "DEFAULT", "CHANNEL", "CHANNELS"], ["bar", "stable", "alpha,stable"], ["baz", "stable", "stable"], ["foo", "beta", "beta"],
    ]

    result = runner.invoke(main, ["list", "operators", "--catalog", f"{base}/catalog/index:v1", "--package", "bar", "--json", *insecure])
    assert result.exit_code == 0, result.output
    (bar,) = json.loads(result.stdout)["packages"]
    assert bar == {
        "name": "bar",
        "defaultChannel": "stable",
        "channels": [
            {"name": "alpha", "head": "bar.v1.0.0", "headVersion": "1.0.0", "versions": ["0.1.0", "0.2.0", "1.0.0"]},
            {"name": "stable", "head": "bar.v1.0.0", "headVersion": "1.0.0", "versions": ["1.0.0"]},
        ],
    }

    layout = write_oci_layout(tmp_path / "local", [(None, image)])
    result = runner.invoke(main, ["list", "operators", "--catalog", f"oci://{layout}", "--package", "foo"])
    assert result.exit_code == 0, result.output
    assert [line.split() for line in result.stdout.splitlines()[1:]] == [
        ["CHANNEL", "HEAD", "VERSIONS"], ["beta", "(default)", "foo.v0.3.1", "0.1.0", "0.2.0", "0.3.0", "0.3.1"],
    ]

    result = runner.invoke(main, ["list", "operators", "--catalog", f"oci://{layout}", "--package", "nope"])
    assert result.exit_code == ExitCode.USAGE
    assert "no package 'nope'" in result.output and "Traceback" not in result.output


def test_list_operators_names_one_image_of_a_layout_holding_several(registry_plain: RegistryServer, tmp_path: Path) -> None:
    from tests.infra.images import make_image

    text, _, _ = fbc_catalog(registry_plain, "list-cat-two")
    image = index_image(catalog_files(text), {LABEL_FBC: "/configs"})
    layout = write_oci_layout(tmp_path / "two", [("cat", image), ("other", make_image(seed="not-a-catalog"))])
    runner = cli_runner()
    result = runner.invoke(main, ["list", "operators", "--catalog", f"oci://{layout}"])
    assert result.exit_code == ExitCode.USAGE and "holds 2 images, not one" in result.output
    result = runner.invoke(main, ["list", "operators", "--catalog", f"oci://{layout}:cat"])
    assert result.exit_code == 0, result.output
    assert "3 package(s)" in result.stdout.splitlines()[0]
