"""Turns raw Kafka record bytes into a typed event, or into a :class:`Rejection` saying why not.

Decoding never raises on bad input: whatever bytes arrive, the result is an event or a
rejection with a stable ``reason`` (a metric label) and a human ``detail``. The stages turn
rejections into deadletter records that keep the original bytes.
"""

from __future__ import annotations

import base64
import enum
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from typing import Any

import orjson

from router.events import (
    ACCEPTED_ON,
    EVENT_TYPES,
    Channel,
    DeadLetter,
    Event,
    Kind,
    Speaker,
    Turn,
)

ID_RE = re.compile(r"[A-Za-z0-9._:@-]{1,64}")
TS_MIN_MS = 1_420_070_400_000  # 2015-01-01
TS_MAX_MS = 4_102_444_800_000  # 2100-01-01
LABEL_MAX = 64
MAX_LEVELS = 32
LEVEL_RANGE = (1, 10)
CAPACITY_RANGE = (0, 32)
PRIORITY_RANGE = (0, 9)
COUNT_RANGE = (0, 2**31 - 1)
MAX_TURNS = 50
TURN_FIELDS = frozenset({"speaker", "text", "ts_ms"})


class Reason(enum.StrEnum):
    """Why a record went to the deadletter topic (the ``reason`` label of the metric)."""

    EMPTY = "empty"
    TOO_LARGE = "too_large"
    NOT_UTF8 = "not_utf8"
    INVALID_JSON = "invalid_json"
    TOO_DEEP = "too_deep"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_TYPE = "missing_type"
    UNKNOWN_TYPE = "unknown_type"
    UNEXPECTED_TYPE = "unexpected_type"
    MISSING_FIELD = "missing_field"
    UNKNOWN_FIELD = "unknown_field"
    WRONG_TYPE = "wrong_type"
    INVALID_ID = "invalid_id"
    TEXT_TOO_LONG = "text_too_long"
    OUT_OF_RANGE = "out_of_range"
    INVALID_VALUE = "invalid_value"
    PROCESSING_FAILED = "processing_failed"  # valid, but the routing script refused it


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: Reason
    detail: str


class _Invalid(Exception):
    """Internal: one field failed; carries the rejection out of the nested checks."""

    def __init__(self, reason: Reason, detail: str) -> None:
        self.rejection = Rejection(reason, detail)


@dataclass(frozen=True, slots=True)
class Limits:
    max_record_bytes: int = 65_536
    max_text_chars: int = 4_000


Check = Callable[[str, Any], Any]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_in(name: str, value: Any, lo: int, hi: int) -> int:
    if not _is_int(value):
        raise _Invalid(Reason.WRONG_TYPE, f"{name} must be an integer")
    if not lo <= value <= hi:
        raise _Invalid(Reason.OUT_OF_RANGE, f"{name}={value} is outside {lo}..{hi}")
    return int(value)


def _str(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise _Invalid(Reason.WRONG_TYPE, f"{name} must be a string")
    return value


def _check_id(name: str, value: object) -> str:
    value = _str(name, value)
    if not ID_RE.fullmatch(value):
        shown = value[:20] + ("..." if len(value) > 20 else "")
        raise _Invalid(Reason.INVALID_ID, f"{name}={shown!r}: use 1-64 of A-Z a-z 0-9 . _ : @ -")
    return value


def _check_label(name: str, value: object) -> str:
    value = _str(name, value)
    if len(value) > LABEL_MAX:
        raise _Invalid(Reason.TEXT_TOO_LONG, f"{name} is {len(value)} chars, max {LABEL_MAX}")
    return value


def _check_mapping(
    name: str, value: Any, key_check: Callable[[str, Any], str], lo: int, hi: int
) -> dict[str, int]:
    if not isinstance(value, dict):
        raise _Invalid(Reason.WRONG_TYPE, f"{name} must be an object")
    if len(value) > MAX_LEVELS:
        raise _Invalid(Reason.OUT_OF_RANGE, f"{name} has {len(value)} entries, max {MAX_LEVELS}")
    return {key_check(f"{name} key", k): _int_in(f"{name}.{k}", v, lo, hi)
            for k, v in value.items()}


def _channel_key(name: str, value: object) -> str:
    if value not in Channel._value2member_map_:
        raise _Invalid(Reason.INVALID_VALUE, f"{name} {value!r} is not one of "
                       f"{', '.join(c.value for c in Channel)}")
    return str(value)


def _checker(kind: Kind, limits: Limits) -> Check:
    def text(name: str, value: object) -> str:
        value = _str(name, value)
        if len(value) > limits.max_text_chars:
            raise _Invalid(Reason.TEXT_TOO_LONG,
                           f"{name} is {len(value)} chars, max {limits.max_text_chars}")
        return value

    def score(name: str, value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Invalid(Reason.WRONG_TYPE, f"{name} must be a number")
        if not 0.0 <= value <= 1.0:  # also rejects NaN
            raise _Invalid(Reason.OUT_OF_RANGE, f"{name}={value} is outside 0..1")
        return float(value)

    def flag(name: str, value: object) -> bool:
        if not isinstance(value, bool):
            raise _Invalid(Reason.WRONG_TYPE, f"{name} must be true or false")
        return value

    speaker = _enum_checker(Speaker)

    def transcript(name: str, value: object) -> tuple[Turn, ...]:
        if not isinstance(value, list):
            raise _Invalid(Reason.WRONG_TYPE, f"{name} must be an array")
        if len(value) > MAX_TURNS:
            raise _Invalid(Reason.OUT_OF_RANGE, f"{name} has {len(value)} turns, max {MAX_TURNS}")
        turns = []
        for i, turn in enumerate(value):
            at = f"{name}[{i}]"
            if not isinstance(turn, dict):
                raise _Invalid(Reason.WRONG_TYPE, f"{at} must be an object")
            if turn.keys() - TURN_FIELDS:
                raise _Invalid(Reason.UNKNOWN_FIELD, f"{at} may only have speaker, text, ts_ms")
            if TURN_FIELDS - turn.keys():
                raise _Invalid(Reason.MISSING_FIELD, f"{at} needs speaker, text and ts_ms")
            turns.append(Turn(speaker(f"{at}.speaker", turn["speaker"]),
                              text(f"{at}.text", turn["text"]),
                              _int_in(f"{at}.ts_ms", turn["ts_ms"], TS_MIN_MS, TS_MAX_MS)))
        return tuple(turns)

    table: dict[Kind, Check] = {
        Kind.ID: _check_id,
        Kind.TEXT: text,
        Kind.LABEL: _check_label,
        Kind.TS: lambda n, v: _int_in(n, v, TS_MIN_MS, TS_MAX_MS),
        Kind.LEVELS: lambda n, v: _check_mapping(n, v, _check_id, *LEVEL_RANGE),
        Kind.CAPACITY: lambda n, v: _check_mapping(n, v, _channel_key, *CAPACITY_RANGE),
        Kind.PRIORITY: lambda n, v: _int_in(n, v, *PRIORITY_RANGE),
        Kind.COUNT: lambda n, v: _int_in(n, v, *COUNT_RANGE),
        Kind.FLAG: flag,
        Kind.SCORE: score,
        Kind.TRANSCRIPT: transcript,
    }
    return table[kind]


def _enum_checker(enum_type: type[enum.Enum]) -> Check:
    allowed = ", ".join(str(m.value) for m in enum_type)

    def check(name: str, value: Any) -> enum.Enum:
        if not isinstance(value, str):  # enum values are strings; never format a nested value
            raise _Invalid(Reason.INVALID_VALUE, f"{name} must be one of {allowed}")
        try:
            return enum_type(value)
        except ValueError:
            raise _Invalid(Reason.INVALID_VALUE, f"{name} must be one of {allowed}") from None

    return check


def _plain_checker(typ: Any) -> Check:
    if typ is int:
        return lambda n, v: _int_in(n, v, 0, 2**62)
    return _str


def _field_checker(hint: Any, limits: Limits) -> tuple[Check, bool]:
    """The check for one annotated field, and whether null is allowed."""
    nullable = False
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        nullable, hint = True, args[0]
    if typing.get_origin(hint) is typing.Annotated:
        kind = next(m for m in hint.__metadata__ if isinstance(m, Kind))
        return _checker(kind, limits), nullable
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _enum_checker(hint), nullable
    return _plain_checker(hint), nullable


@dataclass(frozen=True, slots=True)
class _Spec:
    cls: type[Event]
    checks: tuple[tuple[str, Check, bool, bool], ...]  # name, check, required, nullable
    names: frozenset[str]


def _spec(cls: type[Event], limits: Limits) -> _Spec:
    hints = typing.get_type_hints(cls, include_extras=True)
    checks = []
    for f in fields(cls):
        check, nullable = _field_checker(hints[f.name], limits)
        required = f.default is MISSING and f.default_factory is MISSING
        checks.append((f.name, check, required, nullable))
    return _Spec(cls, tuple(checks), frozenset(f.name for f in fields(cls)) | {"type"})


_UNPARSED: Any = object()  # Decoder.decode: the value was not parsed by the caller


class Decoder:
    """Validating decoder for the topics the router consumes. Build once, reuse."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._specs = {name: _spec(cls, self.limits) for name, cls in EVENT_TYPES.items()}
        self._accepted = {role: frozenset(c.TYPE for c in classes)
                          for role, classes in ACCEPTED_ON.items()}

    def decode(self, raw: bytes | None, role: str | None = None,
               parsed: Any = _UNPARSED) -> Event | Rejection:
        """Decode one record value; ``role`` (e.g. ``"agents_events"``) limits the types.
        ``parsed``: the value as ``orjson.loads(raw)`` gave it, for a reader that parsed it
        to look at it first (it is not parsed again)."""
        try:
            return self._decode(raw, role, parsed)
        except _Invalid as invalid:
            return invalid.rejection
        except RecursionError:  # a value nested just under orjson's limit, met by a check
            return Rejection(Reason.TOO_DEEP, "a value is nested too deeply")

    def _decode(self, raw: bytes | None, role: str | None, parsed: Any) -> Event:
        if not raw:
            raise _Invalid(Reason.EMPTY, "the record has no value")
        if len(raw) > self.limits.max_record_bytes:
            raise _Invalid(Reason.TOO_LARGE,
                           f"{len(raw)} bytes, max {self.limits.max_record_bytes}")
        data = _parse(raw) if parsed is _UNPARSED else parsed
        if not isinstance(data, dict):
            raise _Invalid(Reason.NOT_AN_OBJECT, f"top level is {type(data).__name__}, "
                           "expected an object")
        type_name = data.get("type")
        if type_name is None:
            raise _Invalid(Reason.MISSING_TYPE, "no 'type' field")
        spec = self._specs.get(type_name) if isinstance(type_name, str) else None
        if spec is None:
            shown = type_name[:64] if isinstance(type_name, str) else type(type_name).__name__
            raise _Invalid(Reason.UNKNOWN_TYPE, f"type {shown!r} is not known")
        if role is not None and type_name not in self._accepted.get(role, frozenset()):
            raise _Invalid(Reason.UNEXPECTED_TYPE, f"{type_name} does not belong on {role}")
        extra = data.keys() - spec.names
        if extra:
            raise _Invalid(Reason.UNKNOWN_FIELD,
                           f"unknown field(s): {', '.join(sorted(k[:32] for k in extra)[:5])}")
        values: dict[str, Any] = {}
        for name, check, required, nullable in spec.checks:
            if name not in data:
                if required:
                    raise _Invalid(Reason.MISSING_FIELD, f"{name} is required")
                continue
            value = data[name]
            values[name] = None if (value is None and nullable) else check(name, value)
        return spec.cls(**values)


def _parse(raw: bytes) -> Any:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        message = str(exc)
        if "UTF-8" in message or "utf-8" in message:
            raise _Invalid(Reason.NOT_UTF8, "the value is not valid UTF-8") from None
        if "depth limit" in message or "recursion" in message:
            raise _Invalid(Reason.TOO_DEEP, "nested too deeply") from None
        raise _Invalid(Reason.INVALID_JSON, message[:200]) from None
    if isinstance(data, float) and not math.isfinite(data):  # pragma: no cover - orjson rejects
        raise _Invalid(Reason.INVALID_JSON, "not a finite number")
    return data


def dead_letter(
    raw: bytes | None,
    key: bytes | None,
    rejection: Rejection,
    *,
    topic: str,
    partition: int,
    offset: int,
    now_ms: int,
) -> DeadLetter:
    """The deadletter record for a rejected input: original bytes kept whole, and why."""
    return DeadLetter(
        event_id=f"dl-{partition}-{offset}-{topic}"[:64],
        ts_ms=now_ms,
        reason=rejection.reason.value,
        detail=rejection.detail,
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        original_b64=base64.b64encode(raw or b"").decode("ascii"),
        key_b64=None if key is None else base64.b64encode(key).decode("ascii"),
    )
