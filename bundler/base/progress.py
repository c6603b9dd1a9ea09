"""Progress reporting as a tiny callback protocol.

The library reports bytes and finished items through a `Progress`; it never draws anything. The CLI turns
it into a tqdm bar on a TTY or plain periodic lines otherwise (see `cli_progress`).
"""

from __future__ import annotations

import threading
from typing import Protocol


class Progress(Protocol):
    def add_total(self, nbytes: int) -> None:
        """More work became known (bytes to move)."""

    def advance(self, nbytes: int) -> None:
        """Bytes moved (or skipped because present)."""

    def item_done(self, name: str, status: str) -> None:
        """One item (image, volume, blob) finished with a status word."""

    def add_items(self, count: int) -> None:
        """More items became known (the images a pack will write), for "N of M" displays."""


class NullProgress:
    def add_total(self, nbytes: int) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        pass

    def item_done(self, name: str, status: str) -> None:
        pass

    def add_items(self, count: int) -> None:
        pass


class CountingProgress:
    """Thread-safe totals, for tests and summaries."""

    def __init__(self) -> None:
        self.total = 0
        self.done = 0
        self.items: "list[tuple[str, str]]" = []
        self.items_total = 0
        self._lock = threading.Lock()

    def add_total(self, nbytes: int) -> None:
        with self._lock:
            self.total += nbytes

    def advance(self, nbytes: int) -> None:
        with self._lock:
            self.done += nbytes

    def item_done(self, name: str, status: str) -> None:
        with self._lock:
            self.items.append((name, status))

    def add_items(self, count: int) -> None:
        with self._lock:
            self.items_total += count
