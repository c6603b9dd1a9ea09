"""A client of Quay's REST API (the parts a mirror needs), over urllib3 (PROTOCOL-NOTES §4).

Owns the calls that prepare a Quay for pushes: detecting Quay, initialising the first user (which returns
an OAuth token), organisations, robot accounts, a `creator` team holding the robot, a default-permission
prototype giving the robot `write` on repositories others create, and a credentials check; and those that
give a robot pull-only access to an organisation (a `member` team with `read` on every repository, now and
through a default-permission prototype later). Every call is
idempotent: "already exists" and "already initialised" answers are results, not failures.

Errors are `bundler.base.errors` types: connection failures → `RegistryUnreachableError`, 401/403 →
`AuthenticationError` with a hint, anything else unexpected → `RegistryError` with Quay's message. Tokens
and passwords never reach a log or an error message.

Quay robots belong to one namespace: a robot of organisation A can only be given rights inside A. Callers
that push into several organisations create one robot per organisation (see `bundler.quay.bringup`).
"""

from __future__ import annotations

import base64
import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional
from urllib.parse import quote, urlencode, urlsplit

import urllib3

from bundler.base.errors import AuthenticationError, RegistryError, UsageError
from bundler.base.jsonlimits import loads_bounded
from bundler.registry.auth import parse_challenge
from bundler.registry.http import USER_AGENT, HttpPools, Pool, TransportOptions, send_with_retries

log = logging.getLogger(__name__)

#: An API answer is read into memory: at most this.
MAX_API_ANSWER_BYTES = 8 << 20
CREATOR_TEAM = "mirror-creators"
READER_TEAM = "mirror-readers"
HEALTH_PATH = "/health/instance"


@dataclass(frozen=True)
class RobotAccount:
    """A robot: `name` is the full `org+short` login name; `token` is its password."""

    name: str
    token: str = field(repr=False)

    @property
    def organization(self) -> str:
        return self.name.split("+", 1)[0]

    @property
    def short_name(self) -> str:
        return self.name.split("+", 1)[-1]


@dataclass(frozen=True)
class ApiResponse:
    status: int
    body: Any
    headers: Mapping[str, str]


def _message(body: Any) -> str:
    if isinstance(body, dict):
        for key in ("error_message", "message", "detail", "error_description", "error"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value
    if isinstance(body, str):
        return body[:200]
    return ""


class QuayAPI:
    """Quay's REST API at `base_url` (`https://host[:port]`).

    `token`: an OAuth token (from `initialize_user`, or made in Quay's UI) sent as `Authorization: Bearer`.
    `ca_file`: CA to verify Quay's certificate with; `insecure`: do not verify (never the default).
    `connect_to`: connect to this address instead of resolving the URL's host (e.g. "127.0.0.1" on the
    machine that runs Quay before DNS knows the name); TLS is still verified against the URL's host name.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: Optional[str] = None,
        ca_file: Optional[Path] = None,
        insecure: bool = False,
        connect_to: Optional[str] = None,
        timeout: float = 30.0,
        transport: Optional[TransportOptions] = None,
    ) -> None:
        if "://" not in base_url:
            base_url = "https://" + base_url
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"invalid Quay URL {base_url!r}", hint="expected https://HOST[:PORT]")
        self.base_url = f"{parts.scheme}://{parts.netloc}"
        self.scheme = parts.scheme
        self.hostname = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.netloc = parts.netloc
        self.token = token
        self.ca_file = ca_file
        self.insecure = insecure
        self.connect_to = connect_to
        self.timeout = timeout
        if insecure and parts.scheme == "https":
            log.warning("not verifying the TLS certificate of %s", self.netloc)
        # the shared HTTP layer (pools, retries of connection errors, 429 and 5xx, error wording); an API call
        # is small, so fewer attempts and a shorter read timeout than for blobs
        self.transport = transport or TransportOptions(
            ca_file=ca_file,
            insecure_hosts=frozenset({self.netloc}) if insecure else frozenset(),
            connect_timeout=min(timeout, 15.0),
            read_timeout=timeout,
            max_attempts=3,
            pool_size=4,
        )
        self._pools = HttpPools(self.transport)
        pool_kwargs: Dict[str, Any] = {}
        if connect_to and parts.scheme == "https":  # TLS still names (and verifies) the URL's host
            pool_kwargs = {"server_hostname": self.hostname, "assert_hostname": False if insecure else self.hostname}
        manager = self._pools.for_url(self.base_url)
        self._pool: Pool = manager.connection_from_host(connect_to or self.hostname, self.port, parts.scheme, pool_kwargs=pool_kwargs)

    def close(self) -> None:
        self._pools.close()

    def __enter__(self) -> "QuayAPI":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Optional[Mapping[str, Any]] = None,
        auth: bool = True,
        headers: Optional[Mapping[str, str]] = None,
    ) -> ApiResponse:
        """One call (retried by the shared HTTP layer on connection errors, 429 and 5xx); returns status and
        parsed JSON body (or text). Raises only when the server cannot be reached (`RegistryUnreachableError`)."""
        hdrs = {"User-Agent": USER_AGENT, "Accept": "application/json", "Host": self.netloc}
        if auth and self.token:
            hdrs["Authorization"] = f"Bearer {self.token}"
        data: Optional[bytes] = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        hdrs.update(headers or {})
        with warnings.catch_warnings():
            if self.insecure:  # asked for explicitly; said once in the log instead of on every request
                warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
            resp = send_with_retries(
                self._pool, self.transport, method, path, hdrs, data, what=f"Quay API {method} {path.split('?', 1)[0]}", host=self.netloc,
                redirect=False, max_body=MAX_API_ANSWER_BYTES,
            )
        raw = resp.data or b""
        parsed: Any
        try:
            parsed = loads_bounded(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        log.debug("%s %s -> %d", method, path, resp.status)
        return ApiResponse(resp.status, parsed, dict(resp.headers))

    def _fail(self, what: str, resp: ApiResponse, path: str) -> RegistryError:
        url = f"{self.base_url}{path}"
        message = _message(resp.body)
        detail = f": {message}" if message else ""
        if resp.status in (401, 403):
            return AuthenticationError(
                f"{what}: Quay answered {resp.status}{detail}",
                status=resp.status,
                url=url,
                hint="the API token is missing, expired or lacks rights; create an OAuth token for a superuser in Quay's UI (Organization → Applications → Generate Token) and pass it with --api-token-file (quay up) or --quay-token (unpack)",
            )
        return RegistryError(f"{what}: Quay answered {resp.status}{detail}", status=resp.status, url=url, temporary=resp.status >= 500)

    def _need_token(self, what: str) -> None:
        if not self.token:
            raise AuthenticationError(
                f"{what} needs a Quay API token",
                url=self.base_url,
                hint="initialise the first user (ocp-bundler quay up) or pass an OAuth token with --api-token-file (quay up) or --quay-token (unpack)",
            )

    # -- discovery and health ------------------------------------------------------------------------------

    def health(self, path: str = HEALTH_PATH) -> int:
        """The status of `GET path` (200 when healthy); unreachable → `RegistryUnreachableError`."""
        return self.request("GET", path, auth=False).status

    def is_quay(self) -> bool:
        """Whether the server is a Quay: `/api/v1/discovery` answers with Quay's API description, or
        `/health/instance` with Quay's health document. Unreachable → `RegistryUnreachableError`."""
        resp = self.request("GET", "/api/v1/discovery", auth=False)
        if resp.status == 200 and isinstance(resp.body, dict) and ("apis" in resp.body or "paths" in resp.body or "swagger" in resp.body):
            return True
        resp = self.request("GET", HEALTH_PATH, auth=False)
        body = resp.body
        return resp.status in (200, 503) and isinstance(body, dict) and isinstance(body.get("data"), dict) and "status_code" in body

    # -- the first user ------------------------------------------------------------------------------------

    def initialize_user(self, username: str, password: str, email: str) -> Optional[str]:
        """Create the first user (`POST /api/v1/user/initialize`); returns its OAuth token, or None when
        Quay already has users ("already initialised" is not a failure). The token is also kept for the
        calls that follow."""
        if len(password) < 8 or any(c.isspace() for c in password):
            raise UsageError("the first user's password must have at least 8 characters and no spaces")
        path = "/api/v1/user/initialize"
        resp = self.request(
            "POST", path, body={"username": username, "password": password, "email": email, "access_token": True}, auth=False
        )
        if resp.status == 200:
            token = resp.body.get("access_token") if isinstance(resp.body, dict) else None
            if not token:
                raise RegistryError("Quay initialised the first user but returned no access token", status=200, url=f"{self.base_url}{path}")
            self.token = str(token)
            return self.token
        message = _message(resp.body)
        if resp.status == 400 and not message.lower().startswith("failed"):
            log.info("Quay already has users: %s", message or "400")
            return None
        if resp.status == 404:
            raise RegistryError(
                "Quay does not offer first-user initialisation",
                status=404,
                url=f"{self.base_url}{path}",
                hint="set FEATURE_USER_INITIALIZE: true and AUTHENTICATION_TYPE: Database in config.yaml",
            )
        raise self._fail("initialising the first user", resp, path)

    # -- organisations -------------------------------------------------------------------------------------

    def organization_exists(self, name: str) -> bool:
        self._need_token("reading an organisation")
        path = f"/api/v1/organization/{quote(name, safe='')}"
        resp = self.request("GET", path)
        if resp.status == 200:
            return True
        if resp.status in (403, 404):
            # Quay answers 403 for an organisation the caller cannot see; it may exist, but not for us.
            return False
        raise self._fail(f"reading organisation {name}", resp, path)

    def ensure_organization(self, name: str) -> bool:
        """Create organisation `name` unless it exists. Returns True when created now, False when it existed."""
        self._need_token(f"creating organisation {name}")
        path = "/api/v1/organization/"
        resp = self.request("POST", path, body={"name": name})
        if resp.status in (200, 201):
            log.info("created organisation %s", name)
            return True
        if resp.status == 400 and "exist" in _message(resp.body).lower():
            if self.organization_exists(name):
                return False
            raise RegistryError(
                f"the name {name!r} is taken by a user, not an organisation",
                status=400,
                url=f"{self.base_url}{path}",
                hint="choose another organisation name",
            )
        raise self._fail(f"creating organisation {name}", resp, path)

    # -- robots --------------------------------------------------------------------------------------------

    def get_robot(self, org: str, name: str) -> Optional[RobotAccount]:
        self._need_token("reading a robot account")
        path = f"/api/v1/organization/{quote(org, safe='')}/robots/{quote(name, safe='')}"
        resp = self.request("GET", path)
        if resp.status == 200 and isinstance(resp.body, dict) and resp.body.get("token"):
            return RobotAccount(str(resp.body.get("name") or f"{org}+{name}"), str(resp.body["token"]))
        if resp.status in (400, 404):
            return None
        raise self._fail(f"reading robot {org}+{name}", resp, path)

    def ensure_robot(self, org: str, name: str, *, description: str = "ocp-bundler mirror pushes", new_org: bool = False) -> RobotAccount:
        """The robot `org+name`, created when missing; its token either way. `new_org`: the organisation was
        just created, so the robot is made without looking for it first (one request fewer)."""
        name = _short_robot(org, name)
        existing = None if new_org else self.get_robot(org, name)
        if existing is not None:
            return existing
        path = f"/api/v1/organization/{quote(org, safe='')}/robots/{quote(name, safe='')}"
        resp = self.request("PUT", path, body={"description": description})
        if resp.status in (200, 201) and isinstance(resp.body, dict) and resp.body.get("token"):
            log.info("created robot %s+%s", org, name)
            return RobotAccount(str(resp.body.get("name") or f"{org}+{name}"), str(resp.body["token"]))
        if resp.status == 400 and "exist" in _message(resp.body).lower():
            again = self.get_robot(org, name)
            if again is not None:
                return again
        raise self._fail(f"creating robot {org}+{name}", resp, path)

    def grant_creator(self, org: str, robot_name: str, *, team: str = CREATOR_TEAM, new_org: bool = False) -> None:
        """Let the robot create repositories in `org` (a team with role `creator` holding the robot) and
        write to repositories others create there (a default-permission prototype with role `write`).
        `new_org`: the organisation was just created and has no prototypes to look through."""
        self._need_token(f"granting rights in {org}")
        full = f"{org}+{_short_robot(org, robot_name)}"
        org_q = quote(org, safe="")
        path = f"/api/v1/organization/{org_q}/team/{quote(team, safe='')}"
        resp = self.request("PUT", path, body={"role": "creator", "description": "ocp-bundler: may create repositories"})
        if resp.status not in (200, 201):
            raise self._fail(f"creating team {team} in {org}", resp, path)
        path = f"/api/v1/organization/{org_q}/team/{quote(team, safe='')}/members/{quote(full, safe='')}"
        resp = self.request("PUT", path, body={})
        if resp.status not in (200, 201) and not (resp.status == 400 and "already" in _message(resp.body).lower()):
            raise self._fail(f"adding {full} to team {team}", resp, path)
        self._ensure_write_prototype(org, full, new_org=new_org)

    def _ensure_write_prototype(self, org: str, robot_full_name: str, *, new_org: bool = False) -> None:
        path = f"/api/v1/organization/{quote(org, safe='')}/prototypes"
        resp = ApiResponse(200, {}, {}) if new_org else self.request("GET", path)
        if resp.status != 200:
            raise self._fail(f"reading default permissions of {org}", resp, path)
        prototypes = resp.body.get("prototypes", []) if isinstance(resp.body, dict) else []
        for p in prototypes if isinstance(prototypes, list) else []:
            delegate = p.get("delegate") if isinstance(p, dict) else None
            if isinstance(delegate, dict) and delegate.get("name") == robot_full_name and p.get("role") in ("write", "admin") and not p.get("activating_user"):
                return
        body = {"role": "write", "delegate": {"name": robot_full_name, "kind": "user", "is_robot": True}}
        resp = self.request("POST", path, body=body)
        if resp.status not in (200, 201):
            raise self._fail(f"giving {robot_full_name} write on new repositories of {org}", resp, path)

    # -- read-only access ----------------------------------------------------------------------------------

    def grant_reader(self, org: str, robot_name: str, *, team: str = READER_TEAM) -> int:
        """Let the robot pull, and only pull, every repository of `org`: a team with role `member` holding the
        robot, a default-permission prototype giving the team `read` on repositories created later, and
        `read` (exactly: a team given more is set back to read) for the team on each repository that exists now.
        Returns how many repositories got it now."""
        self._need_token(f"granting read access in {org}")
        full = f"{org}+{_short_robot(org, robot_name)}"
        self.ensure_team(org, team, role="member", description="ocp-bundler: may pull every repository")
        self.add_team_member(org, team, full)
        self._ensure_team_prototype(org, team, role="read")
        have = self.team_permissions(org, team)
        missing = [repo for repo in self.list_repositories(org) if have.get(repo) != "read"]
        for repo in missing:
            self.set_team_permission(org, repo, team, role="read")
        return len(missing)

    def ensure_team(self, org: str, team: str, *, role: str, description: str = "") -> None:
        """Create or update team `team` of `org` with `role` (`member`, `creator` or `admin`)."""
        path = f"/api/v1/organization/{quote(org, safe='')}/team/{quote(team, safe='')}"
        resp = self.request("PUT", path, body={"role": role, "description": description})
        if resp.status not in (200, 201):
            raise self._fail(f"creating team {team} in {org}", resp, path)

    def add_team_member(self, org: str, team: str, member: str) -> None:
        path = f"/api/v1/organization/{quote(org, safe='')}/team/{quote(team, safe='')}/members/{quote(member, safe='')}"
        resp = self.request("PUT", path, body={})
        if resp.status not in (200, 201) and not (resp.status == 400 and "already" in _message(resp.body).lower()):
            raise self._fail(f"adding {member} to team {team}", resp, path)

    def _ensure_team_prototype(self, org: str, team: str, *, role: str) -> None:
        path = f"/api/v1/organization/{quote(org, safe='')}/prototypes"
        resp = self.request("GET", path)
        if resp.status != 200:
            raise self._fail(f"reading default permissions of {org}", resp, path)
        prototypes = resp.body.get("prototypes", []) if isinstance(resp.body, dict) else []
        for p in prototypes if isinstance(prototypes, list) else []:
            delegate = p.get("delegate") if isinstance(p, dict) else None
            if isinstance(delegate, dict) and delegate.get("kind") == "team" and delegate.get("name") == team and p.get("role") == role and not p.get("activating_user"):
                return
        resp = self.request("POST", path, body={"role": role, "delegate": {"name": team, "kind": "team"}})
        if resp.status not in (200, 201):
            raise self._fail(f"giving team {team} {role} on new repositories of {org}", resp, path)

    def list_repositories(self, org: str) -> List[str]:
        """The names (without the organisation) of every repository in `org`, all pages."""
        self._need_token(f"listing the repositories of {org}")
        names: List[str] = []
        page: Optional[str] = None
        while True:
            query = {"namespace": org}
            if page:
                query["next_page"] = page
            path = "/api/v1/repository?" + urlencode(query)
            resp = self.request("GET", path)
            if resp.status != 200 or not isinstance(resp.body, dict):
                raise self._fail(f"listing the repositories of {org}", resp, path)
            for repo in resp.body.get("repositories") or []:
                if isinstance(repo, dict) and repo.get("name"):
                    names.append(str(repo["name"]))
            page = resp.body.get("next_page") or None
            if not page:
                return names

    def team_permissions(self, org: str, team: str) -> Dict[str, str]:
        """{repository name: role} for every repository of `org` team `team` has a permission on."""
        path = f"/api/v1/organization/{quote(org, safe='')}/team/{quote(team, safe='')}/permissions"
        resp = self.request("GET", path)
        if resp.status != 200 or not isinstance(resp.body, dict):
            raise self._fail(f"reading the permissions of team {team} in {org}", resp, path)
        out: Dict[str, str] = {}
        for p in resp.body.get("permissions") or []:
            repo = p.get("repository") if isinstance(p, dict) else None
            if isinstance(repo, dict) and repo.get("name"):
                out[str(repo["name"])] = str(p.get("role") or "")
        return out

    def set_team_permission(self, org: str, repo: str, team: str, *, role: str) -> None:
        """Give team `team` `role` on `org/repo`."""
        path = f"/api/v1/repository/{quote(org, safe='')}/{quote(repo, safe='/')}/permissions/team/{quote(team, safe='')}"
        resp = self.request("PUT", path, body={"role": role})
        if resp.status not in (200, 201):
            raise self._fail(f"giving team {team} {role} on {org}/{repo}", resp, path)

    # -- credentials ---------------------------------------------------------------------------------------

    def login_check(self, username: str, password: str) -> bool:
        """Whether registry login works with these credentials (`docker login` does the same exchange)."""
        basic = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        resp = self.request("GET", "/v2/", auth=False)
        challenge = str(resp.headers.get("WWW-Authenticate") or resp.headers.get("www-authenticate") or "")
        if resp.status == 200:
            return True
        parsed = parse_challenge(challenge)
        if parsed is not None and parsed.scheme == "bearer":
            params = parsed.params
            realm = urlsplit(params.get("realm", ""))
            if realm.netloc and realm.netloc != self.netloc:
                raise RegistryError(f"Quay's token realm is on another host ({realm.netloc})", url=self.base_url, hint="check SERVER_HOSTNAME in config.yaml")
            query = {"account": username}
            if params.get("service"):
                query["service"] = params["service"]
            path = (realm.path or "/v2/auth") + "?" + urlencode(query)
            resp = self.request("GET", path, auth=False, headers={"Authorization": basic})
        else:
            resp = self.request("GET", "/v2/", auth=False, headers={"Authorization": basic})
        if resp.status == 200:
            return True
        if resp.status in (401, 403):
            return False
        raise self._fail("checking registry login", resp, "/v2/")


def _short_robot(org: str, name: str) -> str:
    if "+" in name:
        prefix, short = name.split("+", 1)
        if prefix != org:
            raise UsageError(f"robot {name} belongs to {prefix}, not to {org}", hint="Quay robots only get rights inside their own organisation")
        return short
    return name


__all__ = ["CREATOR_TEAM", "HEALTH_PATH", "READER_TEAM", "QuayAPI", "RobotAccount"]
