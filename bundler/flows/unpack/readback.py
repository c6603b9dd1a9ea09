"""Reading back: HEAD every pushed tag (full Accept) and compare its digest with the signed bundle manifest's."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence, Tuple

from bundler.base.errors import RegistryError
from bundler.flows.unpack.model import Outcome, Target
from bundler.oci.digest import Digest
from bundler.registry.client import RegistryClient

log = logging.getLogger(__name__)


def read_back(client: RegistryClient, targets: Sequence[Target], outcomes: Dict[str, Outcome], *, threads: int) -> List[str]:
    """HEAD every pushed tag and compare; mark failures and mismatches in `outcomes`, return the mismatches."""

    def head(target: Target) -> Tuple[Target, Optional[Digest], Optional[RegistryError]]:
        try:
            found = client.head_manifest(target.repo, target.tag)
        except RegistryError as exc:
            return target, None, exc
        return target, (found.digest if found is not None else None), None

    mismatches: List[str] = []
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="read-back") as pool:
        for target, digest, error in pool.map(head, targets):
            outcome = outcomes[target.text]
            if error is not None:
                outcome.status, outcome.error, outcome.exception = "failed", f"read-back failed: {error}", error
            elif digest != target.digest:
                outcome.status = "mismatch"
                outcome.error = f"{target.text} reads back as {digest or 'nothing'}, the signed bundle manifest says {target.digest}"
                mismatches.append(f"{outcome.error} (source {target.image.source})")
    log.info("read back %d tags: %d mismatches", len(targets), len(mismatches))
    return mismatches
