"""`mirror.helm`: charts shaped like real ones (Deployment, StatefulSet, CronJob, `_helpers.tpl`, a
subchart, `range` over values) rendered with their defaults; their images found; refusals; and
pack → verify → unpack against real registries, with skopeo as the digest oracle: the images and the
charts' OCI artifacts (Helm media types) land in the mirror digest-exact, the archives in `helm/`."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any, Dict

import pytest
import yaml

from bundler.base.errors import UsageError
from bundler.bundle.verify import verify_bundle
from bundler.flows.pack import PackOptions, pack
from bundler.flows.unpack import UnpackOptions, unpack_bundle
from bundler.openshift.helm.chart import load_chart, read_archive
from bundler.openshift.helm.plan import HELM_CONFIG, HELM_LAYER, find_images, is_short_name, package_directory
from bundler.registry.client import Registries, TransportOptions
from tests.infra.images import make_image, push
from tests.infra.openshift_images import StaticServer
from tests.infra.registry import RegistryServer

HELPERS = """{{/* Common helpers */}}
{{- define "shop.fullname" -}}
{{- if .Values.fullnameOverride }}{{ .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}{{ printf "%s-%s" .Release.Name .Chart.Name | trimPrefix "-" | trunc 63 }}{{ end }}
{{- end -}}
{{- define "shop.image" -}}
{{- $registry := .global.imageRegistry | default .image.registry -}}
{{- if .image.digest }}{{ printf "%s/%s@%s" $registry .image.repository .image.digest }}
{{- else }}{{ printf "%s/%s:%s" $registry .image.repository (.image.tag | default .chart.AppVersion | toString) }}{{ end }}
{{- end -}}
{{- define "shop.labels" -}}
app.kubernetes.io/name: {{ include "shop.fullname" . }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version | replace "+" "_" }}
{{- end -}}
"""
DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "shop.fullname" . }}
  labels:
    {{- include "shop.labels" . | nindent 4 }}
spec:
  replicas: {{ .Values.replicas }}
  template:
    spec:
      {{- with .Values.initImage }}
      initContainers:
        - name: init
          image: {{ . | quote }}
      {{- end }}
      containers:
        - name: web
          image: {{ include "shop.image" (dict "image" .Values.web.image "global" .Values.global "chart" .Chart) }}
          {{- if semverCompare ">=1.21-0" .Capabilities.KubeVersion.GitVersion }}
          env: {{ toYaml .Values.env | nindent 12 }}
          {{- end }}
        {{- range $name, $sidecar := .Values.sidecars }}
        {{- if $sidecar.enabled }}
        - name: {{ $name }}
          image: "{{ $sidecar.image }}"
        {{- end }}
        {{- end }}
"""
STATEFULSET = """{{- if .Values.db.enabled -}}
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {{ include "shop.fullname" . }}-db
spec:
  serviceName: db
  template:
    spec:
      containers:
        - name: db
          image: {{ tpl .Values.db.image . }}
{{- end }}
"""
CRONJOB = """apiVersion: batch/v1
kind: CronJob
metadata:
  name: {{ include "shop.fullname" . }}-backup
spec:
  schedule: {{ .Values.backup.schedule | quote }}
  jobTemplate:
    spec:
      template:
        spec:
          containers:
            - name: backup
              image: {{ .Values.backup.image.repository }}:{{ .Values.backup.image.tag }}
---
apiVersion: example.com/v1
kind: Widget
metadata:
  name: w
spec:
  engine:
    image: {{ .Values.widget.image }}
"""


def chart_files(registry: str, *, version: str = "1.2.0", extra_template: str = "") -> Dict[str, bytes]:
    values = {
        "global": {"imageRegistry": ""},
        "replicas": 2,
        "initImage": f"{registry}/shop/init:1.0",
        "web": {"image": {"registry": registry, "repository": "shop/web", "tag": "", "digest": ""}},
        "env": [{"name": "MODE", "value": "prod"}],
        "sidecars": {"logger": {"enabled": True, "image": f"{registry}/shop/logger:2.1"}, "debug": {"enabled": False, "image": f"{registry}/shop/debug:9"}},
        "db": {"enabled": True, "tag": "15", "image": f"{registry}/shop/db:{{{{ .Values.db.tag }}}}"},
        "backup": {"schedule": "0 1 * * *", "image": {"repository": f"{registry}/shop/backup", "tag": "7.0"}},
        "widget": {"image": f"{registry}/shop/widget:3"},
        "cache": {"image": {"tag": "6.2"}},
    }
    chart = {"apiVersion": "v2", "name": "shop", "version": version, "appVersion": "5.4", "dependencies": [{"name": "cache", "version": "0.1.0"}],
             "annotations": {"artifacthub.io/images": "- name: ignored\n  image: example.com/not/read:1\n"}}
    sub_values = {"image": {"repository": f"{registry}/shop/cache", "tag": "6.0"}}
    sub_deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: cache\nspec:\n  template:\n    spec:\n      containers:\n        - name: cache\n          image: {{ .Values.image.repository }}:{{ .Values.image.tag }}\n"
    files = {
        "Chart.yaml": yaml.safe_dump(chart).encode(),
        "values.yaml": yaml.safe_dump(values).encode(),
        "templates/_helpers.tpl": HELPERS.encode(),
        "templates/deployment.yaml": DEPLOYMENT.encode(),
        "templates/statefulset.yaml": STATEFULSET.encode(),
        "templates/cronjob.yaml": CRONJOB.encode(),
        "charts/cache/Chart.yaml": b"apiVersion: v2\nname: cache\nversion: 0.1.0\n",
        "charts/cache/values.yaml": yaml.safe_dump(sub_values).encode(),
        "charts/cache/templates/deployment.yaml": sub_deploy.encode(),
    }
    if extra_template:
        files["templates/extra.yaml"] = extra_template.encode()
    return files


def chart_archive(files: Dict[str, bytes], name: str = "shop") -> bytes:
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for rel, data in sorted(files.items()):
            info = tarfile.TarInfo(f"{name}/{rel}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def expected_images(registry: str) -> list:
    return [f"{registry}/shop/cache:6.2", f"{registry}/shop/backup:7.0", f"{registry}/shop/init:1.0", f"{registry}/shop/web:5.4", f"{registry}/shop/logger:2.1", f"{registry}/shop/db:15"]


def test_chart_images_are_found_in_rendered_templates() -> None:
    chart = load_chart(read_archive(chart_archive(chart_files("reg.example.com")), what="shop"), what="shop")
    found = find_images(chart, ("{.spec.engine.image}",), label="shop")
    images = [ref for ref, _ in found]
    # the subchart's own default (6.0) is overridden by the parent's `cache:` section; CronJob images are found;
    # a sidecar turned off is not; tpl renders the db image; imagePaths adds the custom resource's image
    assert sorted(images) == sorted(expected_images("reg.example.com") + ["reg.example.com/shop/widget:3"])
    assert dict(found)["reg.example.com/shop/cache:6.2"] == "shop/charts/cache/templates/deployment.yaml"
    assert "reg.example.com/shop/debug:9" not in images and "example.com/not/read:1" not in images


def test_a_chart_using_an_unsupported_function_is_refused_with_one_clear_line() -> None:
    files = chart_files("reg.example.com", extra_template="kind: Secret\ndata:\n  ip: {{ getHostByName \"shop.example.com\" | quote }}\n")
    chart = load_chart(read_archive(chart_archive(files), what="shop"), what="shop")
    with pytest.raises(UsageError) as exc:
        find_images(chart, (), label="shop-1.2.0 (local)")
    message = str(exc.value)
    assert "chart shop-1.2.0 (local): shop/templates/extra.yaml:3: function 'getHostByName' is not supported" in message
    assert "additionalImages" in message and "\n" not in message


def test_directory_charts_pack_deterministically(tmp_path: Path) -> None:
    for rel, data in chart_files("r.example.com").items():
        (tmp_path / "shop" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "shop" / rel).write_bytes(data)
    one = package_directory(tmp_path / "shop", "shop")
    assert one == package_directory(tmp_path / "shop", "shop")
    assert sorted(read_archive(one, what="x")) == sorted(chart_files("r.example.com"))


def _push_images(registry: RegistryServer) -> Dict[str, str]:
    digests = {}
    for i, ref in enumerate(expected_images(registry.host)):
        repo, _, tag = ref[len(registry.host) + 1:].rpartition(":")
        digests[ref] = push(registry.url, repo, make_image(seed=f"helm-{i}"), tag)
    return digests


def test_pack_verify_unpack_carries_charts_and_their_images(registry_plain: RegistryServer, fresh_registry_plain: RegistryServer, tmp_path: Path, skopeo: Any) -> None:
    digests = _push_images(registry_plain)
    archive = chart_archive(chart_files(registry_plain.host, version="1.2.0+build.1"))
    index = {"apiVersion": "v1", "entries": {"shop": [
        {"name": "shop", "version": "1.2.0+build.1", "urls": ["charts/shop-1.2.0+build.1.tgz"], "digest": hashlib.sha256(archive).hexdigest()},
        {"name": "shop", "version": "0.9.0", "urls": ["charts/missing.tgz"]},
    ]}}
    server = StaticServer({"/repo/index.yaml": yaml.safe_dump(index).encode(), "/repo/charts/shop-1.2.0+build.1.tgz": archive})
    local = tmp_path / "local" / "shop"
    for rel, data in chart_files(registry_plain.host, version="2.0.0").items():
        (local / rel).parent.mkdir(parents=True, exist_ok=True)
        (local / rel).write_bytes(data)
    config = tmp_path / "isc.yaml"
    config.write_text(
        "apiVersion: mirror.openshift.io/v2alpha1\nkind: ImageSetConfiguration\nmirror:\n  helm:\n"
        f"    repositories:\n      - name: shop-repo\n        url: {server.url}/repo\n        charts:\n          - name: shop\n            version: 1.2.0+build.1\n"
        f"    local:\n      - name: shop\n        path: {local}\n        platforms:\n          - os: linux\n            architecture: s390x\n"
    )
    regs = lambda: Registries(options=TransportOptions(insecure_hosts=frozenset({registry_plain.host})))  # noqa: E731
    try:
        dry = pack(PackOptions(config=config, out_dir=tmp_path / "dry", work_dir=tmp_path / "wd", dry_run=True), registries=regs())
        packed = pack(PackOptions(config=config, out_dir=tmp_path / "b", work_dir=tmp_path / "w"), registries=regs())
    finally:
        server.close()
    # the local chart asks for s390x images only: its (amd64) images are left out for it, with a warning; the
    # repository chart carries the same images anyway
    assert any(w.startswith("helm chart shop-2.0.0: ") and "not listed in platforms" in w for w in dry.plan.warnings)
    dry_sources = {i.planned.source for i in dry.images if i.planned.kind == "additional"}
    assert dry_sources == set(expected_images(registry_plain.host)), "a dry run lists the charts' images"
    charts = packed.plan.reports.helm
    assert charts is not None and [(c.name, c.version) for c in charts] == [("shop", "2.0.0"), ("shop", "1.2.0+build.1")]
    artifacts = {i.planned.target_tag: i.digest for i in packed.images if i.planned.kind == "helm-chart"}
    assert set(artifacts) == {"2.0.0", "1.2.0_build.1"}
    assert dry.plan.reports.helm is not None and {c.artifact for c in dry.plan.reports.helm} == {c.artifact for c in charts}, "the artifact digest is fixed"
    verify_bundle(tmp_path / "b")

    mirror = fresh_registry_plain
    unpack_bundle(tmp_path / "b", options=UnpackOptions(registry=mirror.host, transport=TransportOptions(insecure_hosts=frozenset({mirror.host})), resources_dir=tmp_path / "res"))
    for ref, digest in digests.items():
        assert skopeo.digest(mirror.host + ref[len(registry_plain.host):]) == digest, ref
    raw = skopeo.inspect_raw(f"{mirror.host}/charts/shop:1.2.0_build.1")
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == artifacts["1.2.0_build.1"]
    manifest = json.loads(raw)
    assert manifest["config"]["mediaType"] == HELM_CONFIG and [layer["mediaType"] for layer in manifest["layers"]] == [HELM_LAYER]
    assert manifest["layers"][0]["digest"] == "sha256:" + hashlib.sha256(archive).hexdigest(), "the layer is the archive as fetched"
    assert (tmp_path / "res" / "helm" / "shop-1.2.0+build.1.tgz").read_bytes() == archive
    assert (tmp_path / "res" / "helm" / "shop-2.0.0.tgz").is_file()
    mapping = (tmp_path / "res" / "mapping.txt").read_text()
    assert f"charts/shop:2.0.0={mirror.host}/charts/shop:2.0.0" in mapping
    assert f"{registry_plain.host}/shop/web:5.4={mirror.host}/shop/web:5.4" in mapping


def _pod(image: str) -> str:
    return f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n    - name: c\n      image: {image}\n"


def test_subcharts_aliases_globals_library_charts_and_define_precedence() -> None:
    files = {
        "Chart.yaml": b"apiVersion: v1\nname: top\nversion: 1.0.0\n",
        "requirements.yaml": b"dependencies:\n  - name: sub\n    alias: worker\n",
        "values.yaml": b"global:\n  registry: reg.example.com\nworker:\n  tag: '2.0'\n",
        "templates/_helpers.tpl": b'{{ define "name" }}top{{ end }}',
        "templates/pod.yaml": _pod('{{ .Values.global.registry }}/{{ include "name" . }}:1').encode(),
        "charts/sub/Chart.yaml": b"apiVersion: v2\nname: sub\nversion: 0.1.0\n",
        "charts/sub/values.yaml": b"tag: '1.0'\nglobal:\n  registry: sub.example.com\n",
        "charts/sub/templates/_helpers.tpl": b'{{ define "name" }}sub{{ end }}',
        "charts/sub/templates/pod.yaml": _pod('{{ .Values.global.registry }}/worker:{{ .Values.tag }}-{{ include "name" . }}').encode(),
        "charts/lib/Chart.yaml": b"apiVersion: v2\nname: lib\nversion: 0.1.0\ntype: library\n",
        "charts/lib/templates/pod.yaml": _pod("never/rendered:1").encode(),
    }
    chart = load_chart(files, what="top")
    images = [ref for ref, _ in find_images(chart, (), label="top")]
    # the parent's define wins (as in helm); the alias scopes the values; the parent's global wins
    assert images == ["reg.example.com/worker:2.0-top", "reg.example.com/top:1"]


def test_an_error_inside_a_helper_names_the_template_that_ran_it() -> None:
    files = {
        "Chart.yaml": b"apiVersion: v2\nname: top\nversion: 1.0.0\n",
        "templates/_helpers.tpl": b'{{ define "img" }}{{ .Values.image.repository }}{{ end }}',
        "templates/pod.yaml": _pod('{{ include "img" . }}').encode(),
    }
    with pytest.raises(UsageError, match=r"chart top: top/templates/_helpers.tpl:1: nil pointer evaluating interface \{\}.repository \(rendering top/templates/pod.yaml\)"):
        find_images(load_chart(files, what="top"), (), label="top")


def test_import_values_is_refused() -> None:
    files = {"Chart.yaml": b"apiVersion: v2\nname: top\nversion: 1.0.0\ndependencies:\n  - name: sub\n    import-values: [data]\n"}
    with pytest.raises(UsageError, match="dependency 'sub' uses import-values"):
        load_chart(files, what="top")


def test_unsafe_archive_members_are_refused() -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        info = tarfile.TarInfo("shop/../../etc/evil")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(Exception, match="leaves the chart"):
        read_archive(raw.getvalue(), what="evil")


def test_conditions_tags_and_hooks_decide_what_is_rendered() -> None:
    def hooked(image: str, hook: str) -> str:
        return _pod(image).replace("metadata:\n  name: p\n", f"metadata:\n  name: p\n  annotations:\n    helm.sh/hook: {hook}\n")

    files = {
        "Chart.yaml": (b"apiVersion: v2\nname: top\nversion: 1.0.0\ndependencies:\n  - name: db\n    condition: db.enabled\n"
                       b"  - name: cache\n    tags: [extras]\n  - name: queue\n    condition: queue.enabled,global.queue\n"),
        "values.yaml": b"db:\n  enabled: false\ntags:\n  extras: true\nglobal:\n  queue: true\n",
        # the parent sees each subchart's defaults under its name
        "templates/pod.yaml": _pod("reg.example.com/top:{{ .Values.cache.tag }}").encode(),
        "templates/test.yaml": hooked("reg.example.com/tester:1", "test").encode(),
        "templates/job.yaml": hooked("reg.example.com/migrate:1", "pre-install,pre-upgrade").encode(),
    }
    for name in ("db", "cache", "queue"):
        files[f"charts/{name}/Chart.yaml"] = f"apiVersion: v2\nname: {name}\nversion: 0.1.0\n".encode()
        files[f"charts/{name}/values.yaml"] = b"tag: '7'\n"
        files[f"charts/{name}/templates/pod.yaml"] = _pod(f"reg.example.com/{name}:{{{{ .Values.tag }}}}").encode()
    found = [ref for ref, _ in find_images(load_chart(files, what="top"), (), label="top")]
    assert not any(is_short_name(ref) for ref in found) and is_short_name("nginx:1.16") and is_short_name("org/app")
    assert not is_short_name("localhost/app") and not is_short_name("localhost:5000/app")
    # db is off by its condition; cache on by its tag; queue on by the second path of its condition; the
    # install hook's image is carried, the `helm test` pod's is not
    assert found == ["reg.example.com/cache:7", "reg.example.com/queue:7", "reg.example.com/migrate:1", "reg.example.com/top:7"]


def test_a_dependency_missing_from_charts_is_refused() -> None:
    files = {"Chart.yaml": b"apiVersion: v2\nname: top\nversion: 1.0.0\ndependencies:\n  - name: db\n    version: 1.x\n"}
    with pytest.raises(UsageError, match="dependency 'db' is listed in Chart.yaml but not in its charts/ directory"):
        load_chart(files, what="top")


def test_values_no_image_depends_on_get_stand_ins() -> None:
    files = {
        "Chart.yaml": b"apiVersion: v2\nname: top\nversion: 1.0.0\n",
        "templates/secret.yaml": b"kind: Secret\ndata:\n  pw: {{ randAlphaNum 16 | b64enc }}\n  ca: {{ (genCA \"x\" 365).Cert | b64enc }}\n  at: {{ now | date \"2006\" }}\n",
        "templates/pod.yaml": _pod("reg.example.com/app:1").encode(),
    }
    assert [ref for ref, _ in find_images(load_chart(files, what="top"), (), label="top")] == ["reg.example.com/app:1"]


def test_chart_artifacts_and_images_land_in_a_real_quay(registry_plain: RegistryServer, real_quay: Any, tmp_path: Path, skopeo: Any) -> None:
    """Quay 3.18 stores the chart as a Helm OCI artifact (its Helm support is on by default), digest-exact."""
    digests = _push_images(registry_plain)
    archive = chart_archive(chart_files(registry_plain.host, version="3.1.0"))
    chart_file = tmp_path / "shop-3.1.0.tgz"
    chart_file.write_bytes(archive)
    config = tmp_path / "isc.yaml"
    config.write_text(f"apiVersion: mirror.openshift.io/v2alpha1\nkind: ImageSetConfiguration\nmirror:\n  helm:\n    local:\n      - name: shop\n        path: {chart_file}\n")
    regs = Registries(options=TransportOptions(insecure_hosts=frozenset({registry_plain.host})))
    packed = pack(PackOptions(config=config, out_dir=tmp_path / "b", work_dir=tmp_path / "w"), registries=regs)
    [artifact] = [i.digest for i in packed.images if i.planned.kind == "helm-chart"]

    prefix = "helmq"
    result = unpack_bundle(tmp_path / "b", options=UnpackOptions(
        registry=real_quay.host, prefix=prefix, registry_kind="quay", quay_token=real_quay.token,
        transport=TransportOptions(insecure_hosts=frozenset({real_quay.host})), resources_dir=tmp_path / "res", state_dir=tmp_path / "state"))
    assert {i.status for i in result.images} == {"pushed"}
    creds = f"$oauthtoken:{real_quay.token}"
    raw = skopeo.inspect_raw(f"{real_quay.host}/{prefix}/charts/shop:3.1.0", creds=creds)
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == artifact
    assert json.loads(raw)["config"]["mediaType"] == HELM_CONFIG
    for ref, digest in digests.items():
        assert skopeo.digest(f"{real_quay.host}/{prefix}{ref[len(registry_plain.host):]}", creds=creds) == digest, ref


def test_a_rendered_manifest_that_is_not_yaml_is_refused_naming_its_template() -> None:
    files = {"Chart.yaml": b"apiVersion: v2\nname: top\nversion: 1.0.0\n", "templates/bad.yaml": b"kind: Pod\nspec: {{ print \"[unclosed\" }}\n"}
    with pytest.raises(UsageError, match=r"chart top: a rendered manifest is not valid YAML: top/templates/bad.yaml: "):
        find_images(load_chart(files, what="top"), (), label="top")


def test_cli_dry_run_lists_chart_images_and_a_refusal_is_one_line_exit_2(registry_plain: RegistryServer, tmp_path: Path) -> None:
    from tests.test_unpack import cli

    _push_images(registry_plain)
    good = tmp_path / "shop-3.2.0.tgz"
    good.write_bytes(chart_archive(chart_files(registry_plain.host, version="3.2.0")))
    config = tmp_path / "isc.yaml"
    config.write_text(f"apiVersion: mirror.openshift.io/v2alpha1\nkind: ImageSetConfiguration\nmirror:\n  helm:\n    local:\n      - name: shop\n        path: {good}\n")
    args = ["pack", "--config", str(config), "--out", str(tmp_path / "out"), "--work-dir", str(tmp_path / "w"), "--dry-run", "--insecure-registry", registry_plain.host]
    proc = cli(*args)
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr.decode()
    for ref in expected_images(registry_plain.host):
        assert f"additional         {ref} -> " in out, ref
    assert "helm-chart         charts/shop:3.2.0 -> charts/shop:3.2.0" in out
    assert f"Helm chart shop 3.2.0 from {good}: 6 images; carried as helm/shop-3.2.0.tgz and pushed as charts/shop:3.2.0@sha256:" in out

    good.write_bytes(chart_archive(chart_files(registry_plain.host, version="3.2.0", extra_template="x: {{ toToml .Values }}\n")))
    proc = cli(*args)
    err = proc.stderr.decode().strip()
    assert proc.returncode == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"error: chart shop-3.2.0 ({good}): shop/templates/extra.yaml:1: function 'toToml' is not supported"), err


def test_repository_versions_exact_constraint_and_newest_stable() -> None:
    from bundler.openshift.helm.repo import IndexEntry, select

    def entry(v: str) -> IndexEntry:
        return IndexEntry("app", v, [f"app-{v}.tgz"], None, False)

    index = {"app": [entry(v) for v in ("1.0.0", "1.2.0", "2.0.0-rc.1", "1.10.0")]}
    assert select(index, "app", None, repo="r").version == "1.10.0", "newest stable, semver order, no pre-release"
    assert select(index, "app", "1.2.0", repo="r").version == "1.2.0"
    assert select(index, "app", ">=1.0.0 <1.5.0", repo="r").version == "1.2.0"
    assert select(index, "app", "~1.0", repo="r").version == "1.0.0"
    with pytest.raises(UsageError, match="chart 'app' has no version 3.0.0"):
        select(index, "app", "3.0.0", repo="r")
    with pytest.raises(UsageError, match="no chart 'other'"):
        select(index, "other", None, repo="r")


def test_an_archive_that_differs_from_the_index_digest_is_an_integrity_error() -> None:
    from bundler.base.errors import IntegrityError
    from bundler.openshift.cincinnati import HttpFetcher
    from bundler.openshift.helm.repo import fetch_archive, fetch_index, select

    archive = chart_archive(chart_files("r.example.com"))
    index = {"entries": {"shop": [{"version": "1.2.0", "urls": ["/files/shop.tgz"], "digest": "0" * 64}]}}
    server = StaticServer({"/r/index.yaml": yaml.safe_dump(index).encode(), "/files/shop.tgz": archive})
    try:
        with HttpFetcher() as http:
            entry = select(fetch_index(http, server.url + "/r/", repo="r"), "shop", "1.2.0", repo="r")
            with pytest.raises(IntegrityError, match="helm chart shop-1.2.0 from r: the archive's sha256 is .* the index says 0000"):
                fetch_archive(http, server.url + "/r/", entry, repo="r")
    finally:
        server.close()
