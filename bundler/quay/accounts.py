"""The accounts of a Quay bring-up: the first user, the organisations, a robot per organisation for pushes,
and a read-only robot per organisation for the cluster's pull secret.

Owns the REST steps after Quay is healthy (through `bundler.quay.api`): initialise the first (super) user and
keep its API token, create each organisation with a robot that may create repositories there (a `creator`
team and a `write` default permission) and a robot that may only pull (a `member` team with `read` on every
repository, now and later), remember every token in the secrets file (0600) as soon as it exists, and write
the docker/containers auth files (0600): one with the push robots, one with the read-only robots.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from bundler.base.errors import AuthenticationError
from bundler.quay.api import QuayAPI, RobotAccount

READER_ROBOT = "cluster_pull"
from bundler.quay.config import QuaySecrets, save_secrets
from bundler.quay.datadir import write_json


@dataclass(frozen=True)
class AccountOptions:
    """Who to create: the first user, and the organisations with a robot named `robot` in each."""

    organizations: Tuple[str, ...]
    robot: str
    init_user: str
    init_email: Optional[str] = None
    reader: str = READER_ROBOT
    """Short name of the read-only robot made in each organisation."""
    api_token: Optional[str] = field(default=None, repr=False)
    """A superuser's OAuth token, for a Quay initialised before (the stored one is used otherwise)."""


@dataclass(frozen=True)
class QuayEndpoint:
    """Where to reach Quay's REST API: its URL, the CA to verify it with, and the address to connect to."""

    url: str
    ca_file: Optional[Path] = None
    connect_to: Optional[str] = None

    def api(self, token: Optional[str]) -> QuayAPI:
        return QuayAPI(self.url, ca_file=self.ca_file, connect_to=self.connect_to, token=token)


def prepare_pushes(
    accounts: AccountOptions,
    secrets: QuaySecrets,
    secrets_file: Path,
    endpoint: QuayEndpoint,
    changes: List[str],
) -> Tuple[bool, List[Tuple[str, str]]]:
    """Initialise the first user, then each organisation with its robot. Returns (initialised now, [(org, robot)])."""
    wanted = [(org, f"{org}+{accounts.robot}") for org in accounts.organizations]
    email = accounts.init_email or f"{accounts.init_user}@localhost.localdomain"
    with endpoint.api(accounts.api_token or secrets.admin_token) as api:
        token = api.initialize_user(accounts.init_user, secrets.init_password, email)
        initialized_now = token is not None
        if initialized_now:
            # A fresh database: whatever robots we remembered belong to an older one.
            secrets.admin_token = token
            secrets.robot_tokens.clear()
            secrets.reader_tokens.clear()
            save_secrets(secrets_file, secrets)
            changes.append(f"initialised the first user {accounts.init_user}")
        missing = [(org, name) for org, name in wanted if name not in secrets.robot_tokens]
        if not missing:
            return initialized_now, wanted
        if accounts.api_token:
            api.token = accounts.api_token
        if not api.token:
            raise AuthenticationError(
                f"Quay at {endpoint.url} was initialised before and no API token is stored to create {', '.join(n for _, n in missing)}",
                url=endpoint.url,
                hint="create an OAuth token for a superuser in Quay's UI and pass it with --api-token-file (quay up) or --quay-token (unpack)",
            )
        for org, _name in missing:
            if api.ensure_organization(org):
                changes.append(f"created organisation {org}")
            robot = api.ensure_robot(org, accounts.robot)
            api.grant_creator(org, robot.name)
            secrets.robot_tokens[robot.name] = robot.token
            save_secrets(secrets_file, secrets)
            changes.append(f"prepared robot {robot.name} (creator in {org})")
    return initialized_now, wanted


def prepare_readers(
    accounts: AccountOptions,
    secrets: QuaySecrets,
    secrets_file: Path,
    endpoint: QuayEndpoint,
    changes: List[str],
) -> List[Tuple[str, str]]:
    """A read-only robot in each organisation (which must exist), allowed to pull every repository there and
    nothing else. Returns [(org, robot)]; a robot already remembered in the secrets is left as it is."""
    wanted = [(org, f"{org}+{accounts.reader}") for org in accounts.organizations]
    missing = [(org, name) for org, name in wanted if name not in secrets.reader_tokens]
    if not missing:
        return wanted
    token = accounts.api_token or secrets.admin_token
    if not token:
        raise AuthenticationError(
            f"no API token is stored to create the read-only robots {', '.join(n for _, n in missing)} in Quay at {endpoint.url}",
            url=endpoint.url,
            hint="create an OAuth token for a superuser in Quay's UI and pass it with --api-token-file",
        )
    with endpoint.api(token) as api:
        for org, _name in missing:
            robot, granted = ensure_reader(api, org, accounts.reader)
            secrets.reader_tokens[robot.name] = robot.token
            save_secrets(secrets_file, secrets)
            changes.append(f"prepared read-only robot {robot.name} (read on {granted} existing and every new repository of {org})")
    return wanted


def ensure_reader(api: QuayAPI, org: str, name: str = READER_ROBOT) -> Tuple[RobotAccount, int]:
    """The read-only robot `org+name` (created when missing), allowed to pull every repository of `org`.
    Returns the robot and how many existing repositories were given to it now."""
    robot = api.ensure_robot(org, name, description="ocp-bundler: pull only (cluster pull secret)")
    return robot, api.grant_reader(org, robot.name)


def write_auth_file(path: Path, server: str, robots: Sequence[Tuple[str, str, str]]) -> bool:
    """Docker/containers auth file: the first robot for the host, and each robot for its organisation."""
    def entry(name: str, token: str) -> Dict[str, str]:
        return {"auth": base64.b64encode(f"{name}:{token}".encode()).decode()}

    auths: Dict[str, Dict[str, str]] = {}
    if robots:
        _, first, first_token = robots[0]
        auths[server] = entry(first, first_token)
    if len(robots) > 1:
        for org, name, token in robots:
            auths[f"{server}/{org}"] = entry(name, token)
    return write_json(path, {"auths": auths}, mode=0o600)
