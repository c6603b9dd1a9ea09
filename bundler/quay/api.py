"""A client of Quay's REST API (the parts a mirror needs), over urllib3 (PROTOCOL-NOTES §4).

Owns the calls that prepare a Quay for pushes: detecting Quay, initialising the first user (which returns
an OAuth token), organisations, robot accounts, a `creator` team holding the robot, a default-permission
prototype giving the robot `write` on repositories others create, and a credentials check. Every call is
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
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional
from urllib.parse import quote, urlencode, urlsplit

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error

from bundler import __version__
from bundler.base.errors import AuthenticationError, RegistryError, RegistryUnreachableError, UsageError
from bundler.base.jsonlimits import loads_bounded
from bundler.registry.http import BodyTooLargeError, Progress, StalledError, discard, read_bounded

log = logging.getLogger(__name__)

USER_AGENT = f"ocp-bundler/{__version__}"
#: An API answer is read into memory: at most this.
MAX_API_ANSWER_BYTES = 8 << 20
CREATOR_TEAM = "mirror-creators"
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
        timeout_obj = urllib3.Timeout(connect=min(timeout, 15.0), read=timeout)
        kwargs: Dict[str, Any] = {"timeout": timeout_obj, "retries": False, "maxsize": 4}
        if parts.scheme == "https":
            if insecure:
                kwargs.update(cert_reqs="CERT_NONE", assert_hostname=False)
            else:
                kwargs.update(cert_reqs="CERT_REQUIRED")
                if ca_file is not None:
                    kwargs["ca_certs"] = str(ca_file)
            if connect_to:
                kwargs.update(server_hostname=self.hostname)
                if not insecure:
                    kwargs.update(assert_hostname=self.hostname)
            self._pool: urllib3.HTTPConnectionPool = urllib3.HTTPSConnectionPool(connect_to or self.hostname, self.port, **kwargs)
        else:
            self._pool = urllib3.HTTPConnectionPool(connect_to or self.hostname, self.port, **kwargs)

    def close(self) -> None:
        self._pool.close()

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
        """One call; returns status and parsed JSON body (or text). Raises only when the server is unreachable."""
        hdrs = {"User-Agent": USER_AGENT, "Accept": "application/json", "Host": self.netloc}
        if auth and self.token:
            hdrs["Authorization"] = f"Bearer {self.token}"
        data: Optional[bytes] = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        hdrs.update(headers or {})
        url = f"{self.base_url}{path}"
        try:
            with warnings.catch_warnings():
                if self.insecure:  # asked for explicitly; said once in the log instead of on every request
                    warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
                resp = self._pool.urlopen(method, path, body=data, headers=hdrs, redirect=False, preload_content=False, assert_same_host=False)
            try:
                raw = read_bounded(resp, MAX_API_ANSWER_BYTES, Progress(self.timeout, deadline=self.timeout))
            except BodyTooLargeError as exc:
                raise RegistryError(f"{method} {path}: Quay at {self.netloc} answered with a body {exc}", url=url) from None
            finally:
                discard(resp, drain=False)
        except urllib3.exceptions.SSLError as exc:
            raise RegistryUnreachableError(
                f"TLS with {self.netloc} failed: {_short(exc)}",
                url=url,
                hint="pass the registry's CA (--ca-file), or check the host name matches its certificate",
            ) from None
        except (Urllib3Error, OSError, StalledError) as exc:
            raise RegistryUnreachableError(f"cannot reach Quay at {self.base_url}: {_short(exc)}", url=url, temporary=True, hint="check that it runs (ocp-bundler quay status) and the host and port") from None
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

    def ensure_robot(self, org: str, name: str, *, description: str = "ocp-bundler mirror pushes") -> RobotAccount:
        """The robot `org+name`, created when missing; its token either way."""
        name = _short_robot(org, name)
        existing = self.get_robot(org, name)
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

    def grant_creator(self, org: str, robot_name: str, *, team: str = CREATOR_TEAM) -> None:
        """Let the robot create repositories in `org` (a team with role `creator` holding the robot) and
        write to repositories others create there (a default-permission prototype with role `write`)."""
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
        self._ensure_write_prototype(org, full)

    def _ensure_write_prototype(self, org: str, robot_full_name: str) -> None:
        path = f"/api/v1/organization/{quote(org, safe='')}/prototypes"
        resp = self.request("GET", path)
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

    # -- credentials ---------------------------------------------------------------------------------------

    def login_check(self, username: str, password: str) -> bool:
        """Whether registry login works with these credentials (`docker login` does the same exchange)."""
        basic = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        resp = self.request("GET", "/v2/", auth=False)
        challenge = str(resp.headers.get("WWW-Authenticate") or resp.headers.get("www-authenticate") or "")
        if resp.status == 200:
            return True
        if challenge.lower().startswith("bearer"):
            params = _challenge_params(challenge)
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


def _challenge_params(header: str) -> Dict[str, str]:
    out: Dict[str, str] = {}
    rest = header.split(" ", 1)[1] if " " in header else ""
    for part in rest.split(","):
        key, sep, value = part.strip().partition("=")
        if sep:
            out[key.strip()] = value.strip().strip('"')
    return out


def _short(exc: BaseException) -> str:
    """A connection failure in a few words ("connection refused"), without urllib3's object dump."""
    reason = getattr(exc, "reason", None)
    text = str(reason or exc)
    if "Failed to resolve " in text:
        name = text.split("Failed to resolve ", 1)[1].split(" (", 1)[0]
        return f"cannot resolve {name}"
    if "Failed to establish a new connection: " in text:
        text = text.split("Failed to establish a new connection: ", 1)[1]
    text = re.sub(r"^\[Errno -?\d+\] ", "", text)
    if "object at 0x" in text:
        text = text.split(": ", 1)[-1]
    text = text.strip()
    return (text[:1].lower() + text[1:])[:200]


__all__ = ["CREATOR_TEAM", "HEALTH_PATH", "QuayAPI", "RobotAccount"]
