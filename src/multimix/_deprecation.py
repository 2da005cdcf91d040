"""Renamed names keep working: the old name warns (``DeprecationWarning``) and names its replacement.

One helper per kind of rename: :func:`deprecated_alias` for a function, :func:`renamed_keyword` for a
keyword argument, :func:`warn_renamed` for anything else (an attribute). The warning points at the
caller's line, so that ``python -W error::DeprecationWarning`` finds every use.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., object])


def warn_renamed(old: str, new: str, *, note: str = "", stacklevel: int = 3) -> None:
    """Warn that ``old`` is deprecated in favour of ``new``.

    Args:
        old, new: how a user writes the old and the new spelling, e.g. ``"multimix.functional.mixup_params"``.
        note: appended to the message, e.g. ``" (same arguments, same result)"``.
        stacklevel: as :func:`warnings.warn`; the default 3 points at the caller of the function that
            calls this one.
    """
    warnings.warn(
        f"{old} is deprecated; use {new} instead{note}", DeprecationWarning, stacklevel=stacklevel
    )


def deprecated_alias(new: F, old_name: str, *, where: str) -> F:
    """A function called ``old_name`` that warns on every call, then returns ``new(*args, **kwargs)``.

    Args:
        new: the function that replaced it.
        old_name: the old name (unqualified).
        where: the public module both names are imported from, e.g. ``"multimix.functional"``.
    """

    @functools.wraps(new)
    def alias(*args: object, **kwargs: object) -> object:
        warn_renamed(
            f"{where}.{old_name}", f"{where}.{new.__name__}", note=" (same arguments, same result)"
        )
        return new(*args, **kwargs)

    alias.__name__ = alias.__qualname__ = old_name
    alias.__doc__ = f"Deprecated alias of :func:`{where}.{new.__name__}` (warns on every call)."
    return alias  # type: ignore[return-value]


def renamed_keyword(
    owner: str, old: str, new: str, old_value: T | None, new_value: T | None, *, stacklevel: int = 4
) -> T:
    """The value of keyword argument ``new``, which was called ``old``: warns when ``old`` is given.

    Both are None when not given. Passing both, or neither, raises ``TypeError`` naming both.

    Args:
        owner: what takes the argument, as the user writes it, e.g. ``"MultiMix"``.
        stacklevel: as :func:`warnings.warn`; the default 4 points at the line that called ``owner``
            when ``owner`` (e.g. a constructor) calls this function directly.
    """
    if old_value is None:
        if new_value is None:
            raise TypeError(f"{owner}() missing required keyword argument {new}= (formerly {old}=)")
        return new_value
    if new_value is not None:
        raise TypeError(
            f"{owner}() got both {new}={new_value!r} and its deprecated alias {old}={old_value!r}; "
            f"pass only {new}="
        )
    warn_renamed(f"{owner}({old}=...)", f"{owner}({new}=...)", stacklevel=stacklevel)
    return old_value
