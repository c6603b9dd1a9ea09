"""One piece of work per key at a time: the de-duplication of blob transfers.

Owns `SingleFlight`: the first caller for a key becomes its owner and does the work; callers that come while
it runs get the owner's future and wait for it instead of doing the work again. A key whose work failed is
free again, so the next caller retries as the new owner. The copy engine uses it for blobs per sink, unpack
for uploads across a whole registry.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Dict, Generic, Hashable, Tuple, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class SingleFlight(Generic[K, T]):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._futures: Dict[K, "Future[T]"] = {}

    def claim(self, key: K) -> Tuple[bool, "Future[T]"]:
        """(True, a new future the caller must settle) when the caller owns the work for `key`; otherwise
        (False, the future of the work under way or done)."""
        with self._lock:
            fut = self._futures.get(key)
            if fut is not None and not (fut.done() and fut.exception() is not None):
                return False, fut
            fut = Future()
            self._futures[key] = fut
            return True, fut
