"""oc-mirror's `oci://` catalogs end to end: a catalog image written as a local OCI layout (as `opm` builds or
filters one) is packed with its bundles and related images from the registry, unpacked into another
registry digest-exact (skopeo as the oracle), and named there by a CatalogSource and a ClusterCatalog."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bundler.flows.pack import PackOptions, pack
from bundler.flows.unpack import UnpackOptions, unpack_bundle
from bundler.oci.planned import digest_tag
from bundler.registry.client import Registries, TransportOptions
from tests.infra.catalog_images import LABEL_FBC, catalog_files, fbc_catalog, index_image
from tests.infra.images import write_oci_layout
from tests.infra.registry import RegistryServer

V2 = "apiVersion: mirror.openshift.io/v2alpha1\nkind: ImageSetConfiguration\n"


def test_a_catalog_from_a_local_oci_layout_is_packed_and_unpacked(
    registry_plain: RegistryServer, fresh_registry_plain: RegistryServer, tmp_path: Path, skopeo: Any
) -> None:
    text, pushed, base = fbc_catalog(registry_plain, "oci-cat")
    catalog = index_image(catalog_files(text), {LABEL_FBC: "/configs"})
    write_oci_layout(tmp_path / "catalogs" / "Local-Index", [(None, catalog)])
    config = tmp_path / "isc.yaml"
    config.write_text(V2 + "mirror:\n  operators:\n    - catalog: oci://catalogs/Local-Index\n")  # relative to the config

    registries = Registries(options=TransportOptions(insecure_hosts=frozenset({registry_plain.host})))
    result = pack(PackOptions(config=config, out_dir=tmp_path / "b", work_dir=tmp_path / "w"), registries=registries)
    by_kind = {i.planned.kind: i for i in result.images}
    tag = digest_tag(catalog.digest)
    assert (by_kind["catalog"].planned.target_repository, by_kind["catalog"].planned.target_tag) == ("local-index", tag)
    operators = [i for i in result.images if i.planned.kind == "operator"]
    assert len(operators) == 10 and all(i.planned.source.startswith(base) for i in operators)  # 5 channel heads, their images

    mirror = fresh_registry_plain
    resources = tmp_path / "resources"
    unpack_bundle(
        tmp_path / "b",
        options=UnpackOptions(registry=mirror.host, transport=TransportOptions(insecure_hosts=frozenset({mirror.host})), resources_dir=resources),
    )
    assert skopeo.digest(f"{mirror.host}/local-index:{tag}") == catalog.digest
    for image in operators:
        planned = image.planned
        assert skopeo.digest(f"{mirror.host}/{planned.target_repository}:{planned.target_tag}") == planned.digest
    source = yaml.safe_load((resources / "catalogSource-local-index.yaml").read_text())
    assert source["spec"]["image"] == f"{mirror.host}/local-index:{tag}"
    cluster_catalog = yaml.safe_load((resources / "clusterCatalog-local-index.yaml").read_text())
    assert cluster_catalog["spec"]["source"]["image"]["ref"] == f"{mirror.host}/local-index@{catalog.digest}"
    assert "oci-layout.invalid" not in (resources / "imageDigestMirrorSet-0.yaml").read_text()
