"""Where the SLA counts live in Redis: the one module that names an SLA bucket.

The routing scripts count service level in the same step as the transition that causes it
(docs/METRICS.md), into three hashes per routing domain: the minute bucket of the call's time
(``sm:<epoch minute>``) and its hour bucket (``sh:<epoch hour>``), which expire, and the running
totals (the routing state's ``sq`` key, never expiring: Prometheus counters). In each, a field
is ``<queue>|<count>``. The bucket keys depend on the time only, so a script declares them in
its KEYS (router/routing/state.py passes them); the snapshot reads them back here.
"""

from __future__ import annotations

from collections.abc import Mapping

from router.sla.windows import MINUTE_MS, Counts

FIELD_SEP = "|"
HOUR_MS = 60 * MINUTE_MS
KEY_DOCS = {  # docs/ROUTING.md's layout table (router/routing/state.py renders it)
    "sm:<minute>": ("hash", "`<queue>|<field>` for one epoch minute (expires)"),
    "sh:<hour>": ("hash", "`<queue>|<field>` for one epoch hour (expires)"),
}


def minute_key(prefix: str, now_ms: int) -> str:
    return f"{prefix}sm:{now_ms // MINUTE_MS}"


def hour_key(prefix: str, now_ms: int) -> str:
    return f"{prefix}sh:{now_ms // HOUR_MS}"


def minute_key_of(prefix: str, minute: int) -> str:
    return f"{prefix}sm:{minute}"


def hour_key_of(prefix: str, hour: int) -> str:
    return f"{prefix}sh:{hour}"


def per_queue(raw: Mapping[bytes | str, bytes | str]) -> dict[str, Counts]:
    """A bucket hash as Redis returns it -> queue -> counts."""
    grouped: dict[str, dict[bytes | str, bytes | str]] = {}
    for k, v in raw.items():
        name = k.decode() if isinstance(k, bytes) else k
        queue, _, count = name.rpartition(FIELD_SEP)
        grouped.setdefault(queue, {})[count] = v
    return {q: Counts.from_hash(fields) for q, fields in grouped.items()}
