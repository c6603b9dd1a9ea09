"""The real Quay test instance itself (``tests.infra.real_quay``): it starts, its superuser token works on
the REST API and on ``/v2/auth``, and it behaves as ``../shared/quay/README.md`` says on the points the
project relies on (a robot's pull-only token on a missing repository has no actions; pull,push creates it)."""

from __future__ import annotations

import base64
import json
import urllib.request

from tests.infra.real_quay import RealQuay


def _token(quay: RealQuay, scope: str, user: str, secret: str) -> dict:
    req = urllib.request.Request(
        "%s/v2/auth?service=%s&scope=%s" % (quay.url, quay.host, scope),
        headers={"Authorization": "Basic " + base64.b64encode(("%s:%s" % (user, secret)).encode()).decode()},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        body = json.loads(resp.read())
    payload = body["token"].split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_superuser_token_creates_organisations_and_robots(real_quay: RealQuay) -> None:
    real_quay.create_org("infraorg")
    name, token = real_quay.create_robot("infraorg", "pusher")
    assert name == "infraorg+pusher" and len(token) > 20
    status, body = real_quay.api("GET", "/api/v1/organization/infraorg")
    assert status == 200 and body["name"] == "infraorg"


def test_pull_only_scope_on_a_missing_repository_has_no_actions(real_quay: RealQuay) -> None:
    real_quay.create_org("infrascope")
    robot, secret = real_quay.create_robot("infrascope", "pusher")
    pull = _token(real_quay, "repository:infrascope/missing:pull", robot, secret)
    assert [a["actions"] for a in pull["access"]] == [[]]
    both = _token(real_quay, "repository:infrascope/missing:pull,push", robot, secret)
    assert sorted(both["access"][0]["actions"]) == ["pull", "push"]
