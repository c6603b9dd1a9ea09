"""The images a rendered chart names: its manifests read at image paths (a JSONPath subset).

Owns oc-mirror's default paths (`OC_MIRROR_PATHS`: containers and init containers of pods and of pod
templates), the ones ocp-bundler adds (`EXTRA_PATHS`: CronJob job templates, ephemeral containers), the
config's ``imagePaths``, and the JSONPath subset they are written in: ``{.a.b[*].c}``, ``[N]``,
``['key']``; anything else is refused when the config is read (`parse_path`). Install hooks (a
pre-install Job, say) are read, as a disconnected ``helm install`` runs them; ``helm test`` resources are
not (oc-mirror reads neither).
"""

from __future__ import annotations

import re
from typing import Any, Dict, Iterable, List, Sequence, Tuple, Union

import yaml

from bundler.openshift.helm.values import load_yaml

OC_MIRROR_PATHS: Tuple[str, ...] = (
    "{.spec.template.spec.initContainers[*].image}",
    "{.spec.template.spec.containers[*].image}",
    "{.spec.initContainers[*].image}",
    "{.spec.containers[*].image}",
)
EXTRA_PATHS: Tuple[str, ...] = (
    "{.spec.jobTemplate.spec.template.spec.initContainers[*].image}",
    "{.spec.jobTemplate.spec.template.spec.containers[*].image}",
    "{.spec.template.spec.ephemeralContainers[*].image}",
)
DEFAULT_PATHS = OC_MIRROR_PATHS + EXTRA_PATHS

Step = Union[str, int, None]  # a key, an index, or None for [*]
_STEP = re.compile(r"\.([A-Za-z0-9_-]+)|\[\*\]|\[(\d+)\]|\['([^']*)'\]|\[\"([^\"]*)\"\]")


def parse_path(text: str) -> Tuple[Step, ...]:
    """The steps of one image path like ``{.spec.containers[*].image}``; `ValueError` outside the subset."""
    body = text.strip()
    if body.startswith("{") and body.endswith("}"):
        body = body[1:-1].strip()
    if body.startswith("$"):
        body = body[1:]
    steps: List[Step] = []
    pos = 0
    while pos < len(body):
        m = _STEP.match(body, pos)
        if m is None:
            raise ValueError(f"{text!r}: only .field, [*], [N] and ['key'] steps are supported")
        if m.group(1) is not None:
            steps.append(m.group(1))
        elif m.group(2) is not None:
            steps.append(int(m.group(2)))
        elif m.group(3) is not None or m.group(4) is not None:
            steps.append(m.group(3) if m.group(3) is not None else m.group(4))
        else:
            steps.append(None)
        pos = m.end()
    if not steps:
        raise ValueError(f"{text!r}: an empty path")
    return tuple(steps)


def _walk(value: Any, steps: Sequence[Step]) -> Iterable[Any]:
    if not steps:
        yield value
        return
    step, rest = steps[0], steps[1:]
    if step is None:
        if isinstance(value, list):
            for item in value:
                yield from _walk(item, rest)
        elif isinstance(value, dict):
            for item in value.values():
                yield from _walk(item, rest)
    elif isinstance(step, int):
        if isinstance(value, list) and 0 <= step < len(value):
            yield from _walk(value[step], rest)
    elif isinstance(value, dict) and step in value:
        yield from _walk(value[step], rest)


def images_in(rendered: Dict[str, str], paths: Sequence[str]) -> List[Tuple[str, str]]:
    """(image reference, template file) for every string at `paths` in every rendered manifest, in order,
    first occurrence only. `yaml.YAMLError` for a manifest that is not YAML."""
    parsed = [parse_path(p) for p in paths]
    seen: Dict[str, str] = {}
    for name in sorted(rendered):
        try:
            docs = _documents(rendered[name])
        except yaml.YAMLError as exc:
            raise yaml.YAMLError(f"{name}: {str(exc).splitlines()[0]}") from None
        for doc in docs:
            if not isinstance(doc, dict) or is_test_hook(doc):
                continue
            for steps in parsed:
                for found in _walk(doc, steps):
                    if isinstance(found, str):
                        for ref in found.split():
                            seen.setdefault(ref, name)
    return list(seen.items())


TEST_HOOKS = frozenset({"test", "test-success", "test-failure"})


def is_test_hook(doc: Dict[str, Any]) -> bool:
    """A `helm test` resource (annotation ``helm.sh/hook: test``): run only by ``helm test``, not installed."""
    metadata = doc.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    hook = annotations.get("helm.sh/hook") if isinstance(annotations, dict) else None
    if not isinstance(hook, str):
        return False
    kinds = {h.strip() for h in hook.split(",") if h.strip()}
    return bool(kinds) and kinds <= TEST_HOOKS


def _documents(text: str) -> List[Any]:
    return [load_yaml(part) for part in re.split(r"(?m)^---[ \t]*(?:#.*)?$", text) if part.strip()]
