"""Reading back: HEAD every pushed tag (full Accept) and compare its digest with the signed bundle manifest's.

`ReadBack.check` runs as each image's push ends (on the thread that pushed it, so reading back overlaps the
other pushes instead of waiting for the last one); `ReadBack.apply` then marks the outcomes.
"""

from __future__ import annotations

import logging
import threading
from typing import Dict, List, Optional, Tuple

from bundler.base.errors import RegistryError
from bundler.flows.unpack.model import Outcome, Target
from bundler.oci.digest import Digest
from bundler.registry.client import RegistryClient

log = logging.getLogger(__name__)


class ReadBack:
    """What each pushed tag reads back as."""

    def __init__(self, client: RegistryClient) -> None:
        self.client = client
        self._lock = threading.Lock()
        self._found: Dict[str, Tuple[Optional[Digest], Optional[RegistryError]]] = {}

    def check(self, target: Target) -> None:
        try:
            head = self.client.head_manifest(target.repo, target.tag)
            found: Tuple[Optional[Digest], Optional[RegistryError]] = (head.digest if head is not None else None, None)
        except RegistryError as exc:
            found = (None, exc)
        with self._lock:
            self._found[target.text] = found

    def apply(self, targets: List[Target], outcomes: Dict[str, Outcome]) -> List[str]:
        """Mark failures and mismatches among the pushed `targets` in `outcomes`; return the mismatches."""
        mismatches: List[str] = []
        for target in targets:
            if target.text not in self._found:
                self.check(target)
            digest, error = self._found[target.text]
            outcome = outcomes[target.text]
            if error is not None:
                outcome.status, outcome.error, outcome.exception = "failed", f"read-back failed: {error}", error
            elif digest != target.digest:
                outcome.status = "mismatch"
                outcome.error = f"{target.text} reads back as {digest or 'nothing'}, the signed bundle manifest says {target.digest}"
                mismatches.append(f"{outcome.error} (source {target.image.source})")
        log.info("read back %d tags: %d mismatches", len(targets), len(mismatches))
        return mismatches
