"""The integer rules of the input checks, in a module that imports nothing from structops.

``structops._validation`` (every public entry point) and ``structops._backend`` (the
thread settings, which ``structops._validation`` builds on) share them from here, so that
one rule gives one message everywhere without an import cycle.
"""

from __future__ import annotations

import numpy as np

__all__ = ["check_optional_int", "check_positive_int"]


def check_positive_int(value, name: str, minimum: int = 1, *, maximum: int | None = None) -> int:
    """Return ``value`` as an int, raising if it is not an integer ``>= minimum`` (and ``<= maximum`` when given).

    Examples
    --------
    >>> check_positive_int(3, "lower", 0, maximum=3)
    3
    >>> check_positive_int(4, "lower", 0, maximum=3)
    Traceback (most recent call last):
    ...
    ValueError: `lower` must lie in [0, 3], got 4.
    """
    return _check_int(value, name, minimum, maximum, or_none=False)


def check_optional_int(value, name: str, minimum: int = 1) -> int | None:
    """:func:`check_positive_int` that lets None (an option left at its default) through."""
    return None if value is None else _check_int(value, name, minimum, None, or_none=True)


def _check_int(value, name: str, minimum: int, maximum: int | None, *, or_none: bool) -> int:
    interval = "" if maximum is None else f" in [{minimum}, {maximum}]"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an integer{' or None' if or_none else ''}{interval}, got {value!r}.")
    if maximum is not None and not minimum <= value <= maximum:
        raise ValueError(f"`{name}` must lie in [{minimum}, {maximum}], got {value!r}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    return int(value)
