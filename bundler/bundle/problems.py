"""What verification found wrong: one problem each, and the one error that names them all.

Owns `Problem` (a category, the line that names it, and the volume to re-copy when that is the cure) and
`raise_problems`, which turns the collected problems into a single error: a summary line (how many, which
volumes to re-copy) and one line per problem; unsafe members make it `UnsafeArchiveError`, a signature
alone `SignatureError`, anything else `IntegrityError` (exit 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from bundler.base.errors import IntegrityError, SignatureError, UnsafeArchiveError



@dataclass(frozen=True)
class Problem:
    category: str  # signature, manifest, volume, member, unsafe, blob, graph
    text: str
    volume: Optional[str] = None
    """A volume to re-copy, when that is the cure."""


def raise_problems(directory: Path, problems: Sequence[Problem], *, suppressed: int = 0) -> None:
    recopy: List[str] = []
    for p in problems:
        if p.volume and p.volume not in recopy:
            recopy.append(p.volume)
    summary = f"bundle {directory} failed verification: {len(problems)} problem{'s' if len(problems) != 1 else ''}"
    if recopy:
        summary += f"; re-copy {', '.join(sorted(recopy))} from the source media"
    lines = [summary] + [f"  - {p.text}" for p in problems]
    if suppressed:
        lines.append(f"  ({suppressed} blobs and files in those volumes could not be checked: verify again once the volumes are fixed)")
    message = "\n".join(lines)
    cats = {p.category for p in problems}
    cls = UnsafeArchiveError if "unsafe" in cats else SignatureError if cats == {"signature"} else IntegrityError
    err = cls(message)
    setattr(err, "problems", list(problems))
    raise err
