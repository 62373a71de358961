"""Pure routing policy of the foundation (no I/O): queue order and the wire form of skill levels.

The Lua side only executes; what "first" means is decided here. Issue-level policies (rings,
earliest deadline first, agent selection strategies) grow in this module.
"""

from __future__ import annotations

from collections.abc import Mapping

# Each priority step puts a contact this far ahead of contacts that escalated at the same time.
PRIORITY_STEP_MS = 60_000


def queue_score(escalated_at_ms: int, priority: int) -> int:
    """Position in the waiting queue: lower is served first (earlier, or more urgent)."""
    return escalated_at_ms - priority * PRIORITY_STEP_MS


def format_levels(levels: Mapping[str, int]) -> str:
    """``{"zh": 1, "refund": 2}`` -> ``"refund=2,zh=1"``: the form the Lua scripts parse."""
    return ",".join(f"{name}={int(level)}" for name, level in sorted(levels.items()))


def parse_levels(text: str) -> dict[str, int]:
    """Inverse of :func:`format_levels`."""
    out: dict[str, int] = {}
    for part in filter(None, text.split(",")):
        name, _, level = part.partition("=")
        out[name] = int(level)
    return out
