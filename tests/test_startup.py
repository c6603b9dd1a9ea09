"""What `ocp-bundler pack` loads: only what a pack needs, so it sends its first request sooner.

A pack without `--release-key` checks no signature: cryptography, the release-signature checks, the
update-graph client and the far side's resource writers stay unloaded, as do the modules of the other
commands and tqdm when stderr is not a terminal. TOML is read only when a registries.conf exists.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import List, Sequence

from tests.infra.images import make_image, push
from tests.infra.registry import RegistryServer

#: Modules (and packages) a pack without keys, catalogs, Helm charts or releases never needs.
NOT_FOR_PACK = (
    "cryptography",
    "tqdm",
    "sqlite3",
    "bundler.bundle.signing",
    "bundler.bundle.verify",
    "bundler.openshift.cincinnati",
    "bundler.openshift.release_signatures",
    "bundler.openshift.resources",
    "bundler.openshift.catalog",
    "bundler.openshift.helm",
    "bundler.flows.unpack",
    "bundler.flows.serve",
    "bundler.flows.prune",
    "bundler.quay",
    "bundler.cli.unpack",
    "bundler.cli.serve",
    "bundler.cli.prune",
    "bundler.cli.quay",
    "bundler.cli.listing",
)

#: Prints, as JSON, the loaded modules that `NOT_FOR_PACK` names (when the program exits).
_REPORT = (
    "import atexit, json, sys\n"
    "def _report(names={names!r}):\n"
    "    print(json.dumps(sorted(m for m in sys.modules if any(m == n or m.startswith(n + '.') for n in names))), file=sys.stderr)\n"
    "atexit.register(_report)\n"
)


def _loaded(code: str, args: Sequence[str] = (), names: Sequence[str] = NOT_FOR_PACK) -> List[str]:
    proc = subprocess.run([sys.executable, "-c", _REPORT.format(names=tuple(names)) + code, *args], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found: List[str] = json.loads(proc.stderr.strip().splitlines()[-1])
    return found


def test_the_modules_of_a_pack_load_nothing_it_does_not_use() -> None:
    modules = [
        "bundler.cli.main", "bundler.cli.pack", "bundler.flows.pack", "bundler.flows.plan", "bundler.flows.signatures",
        "bundler.openshift.sigstore", "bundler.bundle.fill", "bundler.registry.registries_conf",
    ]
    assert _loaded("import " + ", ".join(modules), names=NOT_FOR_PACK + ("tomllib",)) == []


def test_planning_a_release_loads_its_signature_store_but_not_the_checks_or_the_far_side() -> None:
    needed = ("bundler.openshift.cincinnati", "bundler.openshift.release_signatures")
    names = tuple(n for n in NOT_FOR_PACK if n not in needed)
    assert _loaded("import bundler.flows.pack, bundler.openshift.release, bundler.openshift.samples", names=names) == []


def test_a_pack_without_keys_loads_no_cryptography(registry_plain: RegistryServer, repo: str, tmp_path: Path) -> None:
    push(registry_plain.url, repo, make_image(random_layers=[20_000], seed="startup"), "v1")
    config = tmp_path / "image-set.yaml"
    config.write_text(f"apiVersion: ocp-bundler.io/v1alpha1\nkind: ImageSet\nadditionalImages:\n  - {registry_plain.host}/{repo}:v1\n")
    run = "import sys\nfrom bundler.cli import main\nsys.argv[0] = 'ocp-bundler'\nmain()\n"
    args = ["pack", "--config", str(config), "--out", str(tmp_path / "out"), "--insecure-registry", registry_plain.host, "--json"]
    assert _loaded(run, args) == []
    assert (tmp_path / "out").is_dir()
