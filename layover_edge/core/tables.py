"""Markdown tables, the summary every verb prints."""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence


def _cell(value: Any) -> str:
    if isinstance(value, float) or type(value).__name__.startswith("float"):
        return "-" if math.isnan(value) else f"{value:.1f}"
    return "-" if value is None else str(value)


def format_table(rows: Mapping[str, Mapping[str, Any]], columns: Sequence[str], first: str = "Method") -> str:
    """One row per key of ``rows``, like the paper's Table 1.

    Floats get one decimal, other values (ints, strings) are printed as they are,
    missing or NaN values as "-".
    """
    # ``first`` may name several key columns ("backbone | tap | method"): one rule cell each
    lines = ["| " + " | ".join([first, *columns]) + " |", "|" + "---|" * (first.count("|") + 1) + "---:|" * len(columns)]
    lines += ["| " + " | ".join([name, *(_cell(m.get(c)) for c in columns)]) + " |" for name, m in rows.items()]
    return "\n".join(lines)
