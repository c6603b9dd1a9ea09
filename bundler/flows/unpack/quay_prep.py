"""Quay preparation for unpack (PROTOCOL-NOTES §4): whether the registry is Quay, the Quay bring-up's data
(API token, robots, CA), organisations created and a robot per organisation that may create repositories
there, per-organisation credentials for the pushes, and what a 401 from Quay means.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Sequence, Tuple

from bundler.base.errors import AuthenticationError, BundlerError, RegistryError, UsageError
from bundler.flows.unpack.model import Target, UnpackOptions, host_port, split_registry
from bundler.registry.auth import CredentialStore, Credentials

if TYPE_CHECKING:
    from bundler.quay.api import QuayAPI

log = logging.getLogger(__name__)

#: Short name of the robot unpack creates in each Quay organisation (`<org>+ocp_bundler`).
ROBOT_NAME = "ocp_bundler"

# --- the Quay bring-up's data ------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuayData:
    """What a Quay bring-up left for later runs: its API token, robot credentials per organisation, CA."""

    token: Optional[str] = field(default=None, repr=False)
    robots: Mapping[str, Credentials] = field(default_factory=dict)
    ca_file: Optional[Path] = None


def load_quay_data(data_dir: Optional[Path]) -> QuayData:
    """Read what `ocp-bundler quay up` keeps in its data dir (`bundler.quay.bringup.QuayPaths`): the first user's
    API token and robot tokens from `secrets.json`, and the CA from `ca/ca.crt`. Empty without a dir."""
    if data_dir is None:
        return QuayData()
    from bundler.quay.bringup import QuayPaths
    from bundler.quay.config import load_secrets

    paths = QuayPaths(Path(data_dir))
    if not paths.root.is_dir():
        raise UsageError(f"Quay data dir {paths.root} does not exist", hint="give the --data-dir `ocp-bundler quay up` used")
    secrets = load_secrets(paths.secrets_file)
    robots: Dict[str, Credentials] = {}
    token: Optional[str] = None
    if secrets is not None:
        token = secrets.admin_token
        for name, robot_token in sorted(secrets.robot_tokens.items()):
            robots.setdefault(name.split("+", 1)[0], Credentials(name, robot_token))
    ca = paths.certificates.ca_cert
    return QuayData(token=token, robots=robots, ca_file=ca if ca.is_file() else None)


def bring_up_quay(directory: Path, options: UnpackOptions) -> Tuple[UnpackOptions, List[str]]:
    """Bring Quay up on this host (`bundler.quay.bringup.quay_up`) with the organisations the bundle needs, from the
    registry images the bundle carries; then unpack into it as its robots."""
    from bundler.quay import bringup as quay
    from bundler.bundle.volumes import Bundle

    host, prefix = split_registry(options.registry, options.prefix)
    hostname, port = host_port(host, default_port=8443)
    images = Bundle.open(directory).manifest.images
    orgs = sorted({(f"{prefix}/{i.target_repository}" if prefix else i.target_repository).split("/", 1)[0] for i in images})
    data_dir = Path(options.quay_data_dir) if options.quay_data_dir else quay.default_data_dir()
    log.info("bringing Quay up as %s:%d (data in %s) with organisations %s", hostname, port, data_dir, ", ".join(orgs))
    up = quay.quay_up(
        quay.QuayUpOptions(hostname=hostname, port=port, data_dir=data_dir, organizations=tuple(orgs)),
        quay.images_from_bundle(directory),
    )
    for change in up.changes:
        log.info("quay up: %s", change)
    path = options.registry.strip().partition("/")[2]
    registry = up.server + (f"/{path}" if path else "")
    changed = dataclasses.replace(
        options,
        registry=registry,
        quay_data_dir=data_dir,
        registry_kind="quay" if options.registry_kind == "auto" else options.registry_kind,
    )
    return changed, list(up.warnings)


class OrgCredentials(CredentialStore):
    """Per-organisation credentials (Quay robots) for one registry, in front of the auth files."""

    def __init__(self, fallback: CredentialStore, host: str) -> None:
        super().__init__(files=[])
        self.fallback = fallback
        self.host = host
        self.by_org: Dict[str, Credentials] = {}

    def add(self, registry: str, creds: Credentials) -> None:
        self.fallback.add(registry, creds)

    def lookup(self, registry: str, repository: str = "") -> Optional[Credentials]:
        if repository and registry == self.host:  # the client asks with the host it was made for
            creds = self.by_org.get(repository.split("/", 1)[0])
            if creds is not None:
                return creds
        return self.fallback.lookup(registry, repository)


class QuaySide:
    """The Quay a run pushes into: its API client, the bring-up's data, and what is known of its organisations."""

    def __init__(self, api: "QuayAPI", data: QuayData, *, token: bool, host: str) -> None:
        self.api = api
        self.data = data
        self.token = token
        self.host = host
        self.existing: Dict[str, bool] = {}
        self.organizations_created: List[str] = []
        self.organizations_to_create: List[str] = []

    def close(self) -> None:
        self.api.close()

    def prepare(self, orgs: Sequence[str], credentials: OrgCredentials, *, dry_run: bool) -> None:
        """Create missing organisations; give each one a robot (the bring-up's, or `<org>+ocp_bundler`) in a
        team with role `creator`, and push as that robot."""
        if not self.token:
            return
        api = self.api
        if dry_run:
            self.organizations_to_create = [org for org in orgs if not api.organization_exists(org)]
            return
        for org in orgs:
            if api.ensure_organization(org):
                self.organizations_created.append(org)
                log.info("created organisation %s on %s", org, self.host)
            self.existing[org] = True
            robot = self.data.robots.get(org)
            account = api.ensure_robot(org, robot.username.split("+", 1)[1] if robot is not None else ROBOT_NAME)
            api.grant_creator(org, account.name)
            credentials.by_org[org] = Credentials(account.name, account.token)

    def org_exists(self, org: str) -> Optional[bool]:
        if not self.token:
            return None
        if org not in self.existing:
            try:
                self.existing[org] = self.api.organization_exists(org)
            except RegistryError:
                return None
        return self.existing[org]


def detect_quay(options: UnpackOptions, host: str, credentials: OrgCredentials, warnings: List[str]) -> Optional[QuaySide]:
    """None for a plain registry; for Quay (`is_quay()`, or forced) the API client and bring-up data."""
    kind = options.registry_kind
    if kind == "plain":
        return None
    from bundler.quay.api import QuayAPI

    data = load_quay_data(options.quay_data_dir)
    token = options.quay_token or data.token
    ca_file = options.transport.tls.ca_file or data.ca_file
    insecure = options.transport.tls.is_insecure(host)
    api: Optional[QuayAPI] = None
    # an --insecure-registry host may speak plain HTTP: ask that way first (a TLS port just says 400)
    for scheme in ("http", "https") if insecure else ("https",):
        candidate = QuayAPI(f"{scheme}://{host}", token=token, ca_file=ca_file, insecure=insecure)
        try:
            if scheme == "http" and candidate.request("GET", "/v2/", auth=False).status not in (200, 401):
                candidate.close()
                continue  # not a registry speaking plain HTTP (a TLS port answers 400): try TLS
            if candidate.is_quay():
                api = candidate
                break
            candidate.close()
            break  # it answered and it is not Quay
        except RegistryError as exc:
            log.debug("Quay detection over %s: %s", scheme, exc)
            candidate.close()
    if api is None:
        if kind == "auto":
            log.info("%s is not Quay: no organisations to create", host)
            return None
        api = QuayAPI(f"{'http' if insecure else 'https'}://{host}", token=token, ca_file=ca_file, insecure=insecure)
        warnings.append(f"{host} does not answer like Quay; treating it as Quay anyway (--registry-kind quay)")
    for org, robot in data.robots.items():
        credentials.by_org.setdefault(org, robot)
    if not token:
        message = (
            f"{host} is Quay but there is no API token (--quay-token, or the Quay bring-up's data dir): "
            "organisations cannot be created and must exist already"
        )
        log.warning("%s", message)
        warnings.append(message)
    return QuaySide(api, data, token=bool(token), host=host)


def explain(exc: BundlerError, target: Target, *, host: str, quay: Optional[QuaySide]) -> BundlerError:
    """Quay answers 401 to pushes into an organisation that does not exist (PROTOCOL-NOTES §4): say so."""
    if not isinstance(exc, AuthenticationError) or exc.status != 401:
        return exc
    org = target.org
    fix = "create it or rerun with --registry-kind quay and a token"
    if quay is not None:
        exists = quay.org_exists(org)
        if exists:
            return AuthenticationError(
                f"{host}: the credentials in use{_who(exc)} may not push into organisation '{org}'",
                status=401,
                codes=exc.codes,
                url=exc.url,
                hint=f"give them the creator role in '{org}' (a team or a robot), or rerun with --registry-kind quay and a token",
            )
        if exists is False:
            return AuthenticationError(f"organisation '{org}' does not exist on {host}: {fix}", status=401, codes=exc.codes, url=exc.url)
        return AuthenticationError(
            f"cannot push into organisation '{org}' on {host}: it does not exist, or the credentials in use{_who(exc)} may not create repositories in it",
            status=401,
            codes=exc.codes,
            url=exc.url,
            hint=(
                "with --quay-token unpack creates missing organisations and a robot that may push; without one, ask a Quay "
                f"administrator to create '{org}' and give your robot the creator role there (a team with role creator)"
            ),
        )
    return AuthenticationError(
        exc.message,
        status=401,
        codes=exc.codes,
        url=exc.url,
        hint=f"check the credentials; if {host} is Quay, organisation '{org}' may not exist: {fix}",
    )


def _who(exc: AuthenticationError) -> str:
    """" (user 'x')" as the registry client named the credentials in its message, else ""."""
    match = re.search(r" as (user '[^']*'|anonymous access)", exc.message)
    return f" ({match.group(1)})" if match else ""
