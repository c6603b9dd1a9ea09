"""One image-reference grammar: the image-set schema, the reference parser and the cluster resources agree."""

from __future__ import annotations

import json

import pytest

from bundler.base.errors import ConfigError, InvalidReferenceError
from bundler.oci.reference import Reference
from bundler.openshift.image_set import parse_image_set

DIGEST = "sha256:" + "ab" * 32

CASES = [
    ("quay.io/org/repo:v1", True),
    (f"quay.io/org/repo@{DIGEST}", True),
    (f"registry.example.com:8443/a/b-c__d.e:4.14.0-x86_64@{DIGEST}", True),
    ("[::1]:5000/org/repo:1", True),
    ("localhost/repo:latest", True),
    ("quay.io/org/repo:t\u00e1g", False),  # tags are ASCII: distribution's \w is Go's, not Unicode's
    ("quay.io:123456/org/repo:v1", False),  # a port has at most five digits
    ("quay.io/Org/repo:v1", False),
    ("quay.io/org/repo:-v1", False),
    ("quay.io/org//repo:v1", False),
]


def _config_accepts(reference: str) -> bool:
    text = "apiVersion: ocp-bundler.io/v1alpha1\nkind: ImageSet\nadditionalImages: [" + json.dumps(reference) + "]\n"
    try:
        parse_image_set(text, source_name="t.yaml")
    except ConfigError:
        return False
    return True


def _parser_accepts(reference: str) -> bool:
    try:
        Reference.parse(reference)
    except InvalidReferenceError:
        return False
    return True


@pytest.mark.parametrize("reference, valid", CASES)
def test_config_and_parser_agree(reference: str, valid: bool) -> None:
    assert _config_accepts(reference) is valid
    assert _parser_accepts(reference) is valid
