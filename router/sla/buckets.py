"""Where the SLA counts live in Redis: the one module that names an SLA bucket.

The routing scripts count service level in the same step as the transition that causes it
(docs/METRICS.md), into two hashes per routing domain: the minute bucket of the call's time
(``sm:<epoch minute>``, which expires) and the running totals (the routing state's ``sq`` key,
never expiring: Prometheus counters). In each, a queue's counts are one field, ``<queue>`` ->
a MessagePack array ``[offered, answered, ...]`` (COUNT_FIELDS, in that order): a batch reads
and writes each bucket once (HMGET, HSET) however many counts it moves, and a bucket has one
field per queue. (Earlier versions wrote a field per queue and count, ``<queue>|<count>``: it
is still read, and a bucket may hold both; they add up.) The timer rolls each minute, once it
is final (FINAL_AFTER_MS after it ended), into its hour's bucket (``hr:<epoch hour>``, expiring
too): ``~rolled`` there is the last minute added, and an hour whose 60 minutes were all added
in turn is complete. A reader takes a complete hour from its hour bucket and any other from
its minutes (an hour the timer missed a minute of, or the one that just ended). The bucket
keys depend on the time only, so a script declares them in its KEYS (router/routing/state.py
passes them); the snapshot reads them back here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import astuple, fields

import msgspec

from router.sla.windows import MINUTE_MS, Counts

FIELD_SEP = "|"  # the earlier layout's `<queue>|<count>` fields
COUNT_FIELDS = tuple(f.name for f in fields(Counts))  # a packed value's order
WAIT_MAX = "wait_max_ms"  # the count that is a maximum, not a sum
HOUR_MS = 60 * MINUTE_MS
# A bucket is final once its time ended this long ago: transitions count in the bucket of the
# routing stage's clock, so only a worker whose clock lags by more could still add to it.
FINAL_AFTER_MS = 120_000
# The timer rolls the minute that ended FINAL_AFTER_MS ago (and not before) into its hour.
ROLL_LAG_MINUTES = FINAL_AFTER_MS // MINUTE_MS + 1
ROLLED = "~rolled"  # an hour bucket's field: the last minute rolled into it
KEY_DOCS = {  # docs/ROUTING.md's layout table (router/routing/state.py renders it)
    "sm:<minute>": ("hash", "`<queue>` -> its counts for one epoch minute, a MessagePack "
                            "array (router/sla/buckets.py; expires)"),
    "hr:<hour>": ("hash", "the same for one epoch hour, its minutes rolled up by the timer; "
                          "`~rolled`: the last minute added (expires)"),
}


def minute_key(prefix: str, now_ms: int) -> str:
    return f"{prefix}sm:{now_ms // MINUTE_MS}"


def minute_key_of(prefix: str, minute: int) -> str:
    return f"{prefix}sm:{minute}"


def hour_key_of(prefix: str, hour: int) -> str:
    return f"{prefix}hr:{hour}"


def roll_minute(now_ms: int) -> int:
    """The minute the timer rolls into its hour at ``now_ms``."""
    return now_ms // MINUTE_MS - ROLL_LAG_MINUTES


def roll_keys(prefix: str, now_ms: int) -> tuple[str, str]:
    """The minute bucket the timer rolls at ``now_ms`` and the hour bucket it rolls into."""
    minute = roll_minute(now_ms)
    return minute_key_of(prefix, minute), hour_key_of(prefix, minute // 60)


def rolled_by(hour: int, now_minute: int) -> bool:
    """Whether the timer can have rolled the whole hour up by the epoch minute ``now_minute``."""
    return hour * 60 + 59 + ROLL_LAG_MINUTES <= now_minute


def complete(raw_hour: Mapping[bytes | str, bytes | str], hour: int) -> bool:
    """Whether an hour bucket holds all 60 of its minutes (rolled in turn, the last one too)."""
    got = raw_hour.get(ROLLED, raw_hour.get(ROLLED.encode()))
    return got is not None and int(got) == hour * 60 + 59


_PACKED = msgspec.msgpack.Decoder(list[int])


def pack(c: Counts) -> bytes:
    """A queue's counts as a bucket holds them."""
    return msgspec.msgpack.encode(astuple(c))


def unpack(value: bytes | str) -> Counts:
    """A bucket's packed value -> counts (missing trailing counts are 0)."""
    raw = value.encode() if isinstance(value, str) else value
    return Counts(**dict(zip(COUNT_FIELDS, _PACKED.decode(raw), strict=False)))


def per_queue(raw: Mapping[bytes | str, bytes | str]) -> dict[str, Counts]:
    """A bucket hash as Redis returns it -> queue -> counts (both layouts, added up)."""
    out: dict[str, Counts] = {}
    legacy: dict[str, dict[bytes | str, bytes | str]] = {}
    for k, v in raw.items():
        name = k.decode() if isinstance(k, bytes) else k
        if name == ROLLED:
            continue
        queue, sep, count = name.rpartition(FIELD_SEP)
        if sep:
            legacy.setdefault(queue, {})[count] = v
        else:  # a field per queue: each queue's packed counts are met once
            out[name] = unpack(v)
    for queue, counts in legacy.items():
        c = Counts.from_hash(counts)
        out[queue] = out[queue] + c if queue in out else c
    return out
