"""A small validator for Kubernetes objects against the OpenAPI v3 schemas inside CRD YAMLs.

Test helper (not shipped): checks what `bundler.openshift.resources` generates against the real CRDs in
`/work/shared/fixtures/cluster-resources/crds/` (PROTOCOL-NOTES §5 "Cluster resources"), the way the API
server would with strict field validation, for the keywords those CRDs use:

    type, properties, required, items, enum, pattern, maxLength, minLength, maxItems, minItems,
    additionalProperties, anyOf, nullable, x-kubernetes-int-or-string, x-kubernetes-preserve-unknown-fields

`format` is ignored, as are the other `x-kubernetes-*` keys (list types, CEL `x-kubernetes-validations`).
Fields a schema does not declare are reported (the API server rejects them with `--validate=strict`).
Besides the schema, `metadata.name` must be a DNS-1123 subdomain, `metadata.namespace` a DNS-1123 label,
and the namespace must be present exactly when the CRD is namespaced.

Every function returns a list of error strings, each starting with the JSON path it refers to; an empty
list means valid.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class CrdVersion:
    """One served version of a CRD: what an object of that apiVersion/kind must look like."""

    group: str
    version: str
    kind: str
    namespaced: bool
    schema: Mapping[str, Any]

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


SchemaIndex = dict[tuple[str, str], CrdVersion]


def load_crds(paths: Iterable[Path]) -> SchemaIndex:
    """Index every CRD document found in `paths` by (apiVersion, kind); other documents are skipped."""
    index: SchemaIndex = {}
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            documents = list(yaml.safe_load_all(handle))
        for document in documents:
            if not isinstance(document, dict) or document.get("kind") != "CustomResourceDefinition":
                continue
            spec = document["spec"]
            for version in spec.get("versions", []):
                schema = version.get("schema", {}).get("openAPIV3Schema")
                if schema is None:
                    continue
                crd = CrdVersion(
                    group=spec["group"],
                    version=version["name"],
                    kind=spec["names"]["kind"],
                    namespaced=spec.get("scope") == "Namespaced",
                    schema=schema,
                )
                index[(crd.api_version, crd.kind)] = crd
    return index


def validate_object(obj: Any, crds: SchemaIndex, *, require_name: bool = True) -> list[str]:
    """Validate one Kubernetes object against the CRD of its apiVersion/kind, plus its metadata."""
    if not isinstance(obj, dict):
        return [f"$: expected an object, got {_type_name(obj)}"]
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    crd = crds.get((api_version, kind)) if isinstance(api_version, str) and isinstance(kind, str) else None
    if crd is None:
        return [f"$: no CRD loaded for apiVersion={api_version!r} kind={kind!r}"]
    errors = validate_metadata(obj.get("metadata"), namespaced=crd.namespaced, require_name=require_name)
    errors.extend(validate_schema(obj, crd.schema))
    return errors


def validate_metadata(metadata: Any, *, namespaced: bool | None, require_name: bool = True) -> list[str]:
    """Check `metadata.name` (DNS-1123 subdomain), `metadata.namespace` and labels.

    `namespaced=None` skips the namespace presence check.
    """
    errors: list[str] = []
    if metadata is None:
        if require_name:
            errors.append("$.metadata: missing")
        return errors
    if not isinstance(metadata, dict):
        return [f"$.metadata: expected object, got {_type_name(metadata)}"]
    name = metadata.get("name")
    if name is None:
        if require_name:
            errors.append("$.metadata.name: missing")
    elif not isinstance(name, str) or len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
        errors.append(f"$.metadata.name: {name!r} is not a DNS-1123 subdomain")
    namespace = metadata.get("namespace")
    if namespace is not None and (
        not isinstance(namespace, str) or len(namespace) > 63 or not DNS1123_LABEL.match(namespace)
    ):
        errors.append(f"$.metadata.namespace: {namespace!r} is not a DNS-1123 label")
    if namespaced is True and namespace is None:
        errors.append("$.metadata.namespace: missing for a namespaced kind")
    if namespaced is False and namespace is not None:
        errors.append("$.metadata.namespace: set on a cluster-scoped kind")
    labels = metadata.get("labels")
    if labels is not None:
        if not isinstance(labels, dict):
            errors.append("$.metadata.labels: expected object")
        else:
            for label, value in labels.items():
                if not isinstance(value, str) or len(value) > 63:
                    errors.append(f"$.metadata.labels[{label!r}]: value must be a string of at most 63 chars")
    return errors


def validate_schema(instance: Any, schema: Mapping[str, Any], path: str = "$") -> list[str]:
    """Validate `instance` against one OpenAPI v3 (structural) schema node, recursively."""
    errors: list[str] = []
    if instance is None:
        if not schema.get("nullable", False):
            errors.append(f"{path}: null is not allowed")
        return errors

    if schema.get("x-kubernetes-int-or-string"):
        if not (isinstance(instance, str) or _is_integer(instance)):
            errors.append(f"{path}: expected integer or string, got {_type_name(instance)}")
            return errors
    elif "anyOf" in schema:
        branches = [validate_schema(instance, branch, path) for branch in schema["anyOf"]]
        if all(branch for branch in branches):
            errors.append(f"{path}: matches none of anyOf ({'; '.join(b[0] for b in branches)})")
            return errors

    expected = schema.get("type")
    if expected is not None and not _has_type(instance, expected):
        errors.append(f"{path}: expected {expected}, got {_type_name(instance)}")
        return errors

    if "enum" in schema and instance not in schema["enum"]:
        errors.append(f"{path}: {instance!r} is not one of {schema['enum']!r}")

    if isinstance(instance, str):
        if "maxLength" in schema and len(instance) > schema["maxLength"]:
            errors.append(f"{path}: longer than maxLength {schema['maxLength']}")
        if "minLength" in schema and len(instance) < schema["minLength"]:
            errors.append(f"{path}: shorter than minLength {schema['minLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], instance):
            errors.append(f"{path}: {instance!r} does not match pattern {schema['pattern']!r}")

    if isinstance(instance, list):
        if "maxItems" in schema and len(instance) > schema["maxItems"]:
            errors.append(f"{path}: more than maxItems {schema['maxItems']}")
        if "minItems" in schema and len(instance) < schema["minItems"]:
            errors.append(f"{path}: fewer than minItems {schema['minItems']}")
        items = schema.get("items")
        if isinstance(items, dict):
            for position, item in enumerate(instance):
                errors.extend(validate_schema(item, items, f"{path}[{position}]"))

    if isinstance(instance, dict):
        properties: Mapping[str, Any] = schema.get("properties", {})
        for required in schema.get("required", []):
            if required not in instance:
                errors.append(f"{path}.{required}: required but missing")
        additional = schema.get("additionalProperties")
        preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        for key, value in instance.items():
            child = f"{path}.{key}"
            if not isinstance(key, str):
                errors.append(f"{path}: non-string key {key!r}")
            elif key in properties:
                errors.extend(validate_schema(value, properties[key], child))
            elif isinstance(additional, dict):
                errors.extend(validate_schema(value, additional, child))
            elif additional is True or preserve:
                continue
            elif properties or additional is False:
                errors.append(f"{child}: unknown field")
            # An object schema without properties (e.g. `metadata: {type: object}`) accepts anything.
    return errors


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _has_type(value: Any, expected: str) -> bool:
    if expected == "object":
        return isinstance(value, dict)
    if expected == "array":
        return isinstance(value, list)
    if expected == "string":
        return isinstance(value, str)
    if expected == "boolean":
        return isinstance(value, bool)
    if expected == "integer":
        return _is_integer(value)
    if expected == "number":
        return _is_integer(value) or isinstance(value, float)
    return False


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return type(value).__name__
