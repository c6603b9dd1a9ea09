"""Small shims so the code reads as modern Python while running on 3.9 (RHEL 8/9 hosts)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, TypeVar

_T = TypeVar("_T")

if TYPE_CHECKING:
    from typing_extensions import dataclass_transform
else:

    def dataclass_transform(**_: Any) -> Callable[[_T], _T]:
        return lambda decorated: decorated


@dataclass_transform(kw_only_default=True, frozen_default=True)
def frozen_keyword_only(cls: "type[_T]") -> "type[_T]":
    """`@dataclass(frozen=True, kw_only=True)`, the same on every Python from 3.9 (where `kw_only` does not exist).

    Positional arguments are refused with "takes keyword arguments only" on every version, so messages and
    field-order rules do not depend on the interpreter.
    """
    cls = dataclass(frozen=True)(cls)
    original: Callable[..., None] = cls.__init__  # type: ignore[misc,unused-ignore]

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if args:
            raise TypeError(f"{cls.__name__}() takes keyword arguments only")
        original(self, **kwargs)

    setattr(cls, "__init__", __init__)  # noqa: B010 (mypy rejects assigning to a method)
    return cls
