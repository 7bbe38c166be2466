"""Values every JSON encoder accepts. Gradio's encoder refuses integers beyond 64 bits and the
standard one writes NaN, which browsers refuse, and neither writes a lone surrogate (JSON's
"\\ud800"): a stored record holding any of them would break every response that includes it."""

from __future__ import annotations

import math
from typing import Any

from engine.config import is_unicode

INT64_MAX = 2**63 - 1
MAX_DEPTH = 32


def unsafe_parts(value: Any, where: str = "", depth: int = 0) -> list[str]:
    """Where `value` holds something a JSON client cannot read (empty: nothing)."""
    if depth > MAX_DEPTH:
        return [f"{where or 'value'}: nested more than {MAX_DEPTH} levels"]
    if value is None or isinstance(value, bool):
        return []
    if isinstance(value, str):
        return [] if is_unicode(value) else [f"{where or 'text'}: a lone surrogate is not text"]
    if isinstance(value, int):
        return [] if -INT64_MAX - 1 <= value <= INT64_MAX else [f"{where}: integer out of range"]
    if isinstance(value, float):
        return [] if math.isfinite(value) else [f"{where}: {value} is not a number JSON allows"]
    if isinstance(value, dict):
        found = []
        for key, item in value.items():
            if not isinstance(key, str) or not is_unicode(key):
                found.append(f"{where}: key {key!r} is not text")
            found += unsafe_parts(item, f"{where}.{key}" if where else str(key), depth + 1)
        return found
    if isinstance(value, (list, tuple)):
        found = []
        for index, item in enumerate(value):
            found += unsafe_parts(item, f"{where}[{index}]", depth + 1)
        return found
    return [f"{where}: a {type(value).__name__} is not JSON"]


def made_safe(value: Any, depth: int = 0) -> Any:
    """A copy in which every unreadable part is replaced by its text (or None when too deep)."""
    if depth > MAX_DEPTH:
        return None
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value if is_unicode(value) else value.encode("utf-8", "replace").decode()
    if isinstance(value, int):
        return value if -INT64_MAX - 1 <= value <= INT64_MAX else _short_text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {made_safe(str(k)): made_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [made_safe(v, depth + 1) for v in value]
    return _short_text(value)


def _short_text(value: Any) -> str:
    if isinstance(value, int):  # str() of a huge integer can itself fail (Python's digit limit)
        return f"<an integer of {value.bit_length()} bits>"
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."
