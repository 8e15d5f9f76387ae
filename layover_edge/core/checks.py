"""Range checks of single values, shared by the config classes (the Python API, files read back)
and the CLI's argument types (which run them at parse time). Each returns the value, or raises
LayoverError saying what was wanted and what came; ``name`` prefixes the message where given."""
from __future__ import annotations

import math
from typing import Any

from .errors import LayoverError


def _fail(name: str | None, wanted: str, value: Any) -> LayoverError:
    return LayoverError(f"{name + ' ' if name else ''}must be {wanted}, got {value!r}")


def integer(value: Any, name: str | None = None, low: int | None = None, high: int | None = None) -> int:
    """An int (bools refused) in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low) \
            or (high is not None and value > high):
        bounds = " and ".join(filter(None, (f"≥ {low}" if low is not None else "", f"≤ {high}" if high is not None else "")))
        raise _fail(name, "an integer" + (f" {bounds}" if bounds else ""), value)
    return value


def positive_int(value: Any, name: str | None = None) -> int:
    return integer(value, name, 1)


def nonnegative_int(value: Any, name: str | None = None) -> int:
    return integer(value, name, 0)


def number(value: Any, name: str | None = None, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False) -> float:
    """A finite real number in the interval [low, high] (ends open where asked)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (low is None or (value > low if low_open else value >= low))
    ok = ok and (high is None or (value < high if high_open else value <= high))
    if not ok:
        left = "" if low is None else f"{'>' if low_open else '≥'} {low:g}"
        right = "" if high is None else f"{'<' if high_open else '≤'} {high:g}"
        raise _fail(name, "a finite number" + (" " if left or right else "") + " and ".join(filter(None, (left, right))),
                    value)
    return float(value)


def positive_number(value: Any, name: str | None = None) -> float:
    return number(value, name, 0, low_open=True)


def nonnegative_number(value: Any, name: str | None = None) -> float:
    return number(value, name, 0)


def probability(value: Any, name: str | None = None) -> float:
    return number(value, name, 0, 1)
