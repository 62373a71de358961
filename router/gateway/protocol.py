"""The agent protocol's frames (docs/AGENT_PROTOCOL.md), pure: parsing and checking what a
client sends, building what the server sends, and the flood limiter (one per agent)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import orjson

from router.decode import ID_RE

STRIKES_FORGOTTEN_S = 10.0  # refused frames this far apart do not add up to a close
LABEL_MAX = 64  # reasons and wrap-up codes: the contract's label rule (docs/EVENTS.md)


class ErrorCode(enum.StrEnum):
    """The ``code`` of an ``error`` frame."""

    MALFORMED = "malformed"  # not UTF-8 JSON, not an object, no string `type`
    UNKNOWN_TYPE = "unknown_type"  # a `type` the protocol does not have
    INVALID_FIELD = "invalid_field"  # a field missing or of the wrong kind
    UNAUTHENTICATED = "unauthenticated"  # a frame other than hello before a valid hello
    INVALID_TOKEN = "invalid_token"  # forged, malformed, wrong issuer or audience
    TOKEN_EXPIRED = "token_expired"  # at hello, or on an open socket at the token's `exp`
    TOKEN_REVOKED = "token_revoked"  # the agent's tokens were revoked (`peakroute agents revoke`)
    AGENT_REMOVED = "agent_removed"  # the agent left the roster (`peakroute agents remove`)
    AGENT_DISABLED = "agent_disabled"  # the agent is disabled (`peakroute agents disable`)
    LOGGED_OUT = "logged_out"  # a supervisor logged the agent out from the console
    FOREIGN_ORIGIN = "foreign_origin"  # /ws opened by a page of an origin not allowed (403)
    TOO_MANY_SOCKETS = "too_many_sockets"  # the identity holds its limit of sockets already
    FORBIDDEN = "forbidden"  # acting for someone else, or a supervisor action without the role
    UNKNOWN_OFFER = "unknown_offer"  # no outstanding offer of this agent has that id
    UNKNOWN_CONTACT = "unknown_contact"  # no active contact of this agent has that id
    NO_PROFILE = "no_profile"  # the agent has no routing profile in the roster
    RATE_LIMITED = "rate_limited"  # frames beyond the per-agent rate (flooding)
    TOO_LARGE = "too_large"  # a frame above the size limit (the socket is closed, 1009)
    UNAVAILABLE = "unavailable"  # the gateway could not reach Kafka or Redis; try again
    INTERNAL = "internal_error"  # the gateway failed on this frame (logged); nothing changed


class ClientType(enum.StrEnum):
    HELLO = "hello"
    STATE = "state"
    ACCEPT = "accept"
    DECLINE = "decline"
    COMPLETE = "complete"
    PING = "ping"
    REFRESH = "refresh"  # HS256: a new token of the same claims before this one expires
    # Supervisors only
    SET_PROFILE = "set_profile"
    SET_AGENT_STATE = "set_agent_state"


class DeskState(enum.StrEnum):
    """What a desktop's `state` frame may ask for."""

    READY = "ready"
    NOT_READY = "not_ready"
    LOGOUT = "logout"


SUPERVISOR_ONLY = frozenset({ClientType.SET_PROFILE, ClientType.SET_AGENT_STATE})


@dataclass(frozen=True, slots=True)
class Frame:
    """A parsed client frame: its type, its fields and the client's correlation id."""

    type: ClientType
    data: dict[str, Any]
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class FrameError:
    code: ErrorCode
    message: str
    ref: str | None = None


def parse(raw: str | bytes, max_bytes: int) -> Frame | FrameError:
    """One client frame (text or binary) -> a Frame or the error to answer. Never raises."""
    size = len(raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw)
    if size > max_bytes:
        return FrameError(ErrorCode.TOO_LARGE, f"frames are limited to {max_bytes} bytes")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return FrameError(ErrorCode.MALFORMED, "a frame is one JSON object (UTF-8)")
    if not isinstance(data, dict):
        return FrameError(ErrorCode.MALFORMED, "a frame is one JSON object")
    ref = data.get("id")
    ref = ref if isinstance(ref, str) and ID_RE.fullmatch(ref) else None
    kind = data.get("type")
    if not isinstance(kind, str):
        return FrameError(ErrorCode.MALFORMED, "a frame needs a string `type`", ref)
    try:
        ctype = ClientType(kind)
    except ValueError:
        return FrameError(ErrorCode.UNKNOWN_TYPE, f"unknown frame type {kind[:40]!r}", ref)
    problem = _check(ctype, data)
    if problem is not None:
        return FrameError(ErrorCode.INVALID_FIELD, problem, ref)
    return Frame(ctype, data, ref)


def _is_id(value: object) -> bool:
    return isinstance(value, str) and ID_RE.fullmatch(value) is not None


def _is_label(value: object) -> bool:
    return isinstance(value, str) and len(value) <= LABEL_MAX


# Per frame type: the fields that must be ids, and the optional ones that are labels.
_IDS = {ClientType.ACCEPT: ("offer_id",), ClientType.DECLINE: ("offer_id",),
        ClientType.COMPLETE: ("contact_id",), ClientType.SET_PROFILE: ("agent_id",),
        ClientType.SET_AGENT_STATE: ("agent_id",)}
_LABELS = {ClientType.STATE: ("reason",), ClientType.DECLINE: ("reason",),
           ClientType.COMPLETE: ("wrap_up",), ClientType.SET_PROFILE: ("reason",),
           ClientType.SET_AGENT_STATE: ("reason",)}


def _check(ctype: ClientType, d: dict[str, Any]) -> str | None:
    """What is wrong with a frame's own fields (None: nothing). Skills and capacity are
    checked again against the event contract when the event is built (router.decode)."""
    for name in _IDS.get(ctype, ()):
        if not _is_id(d.get(name)):
            return f"{ctype.value} needs `{name}` (an id)"
    for name in _LABELS.get(ctype, ()):
        if not _is_label(d.get(name, "")):
            return f"`{name}` must be a string of at most {LABEL_MAX} characters"
    match ctype:
        case ClientType.HELLO if not isinstance(d.get("token"), str) or not d["token"]:
            return "hello needs `token` (a string)"
        case ClientType.STATE if d.get("state") not in set(DeskState):
            return "`state` must be ready, not_ready or logout"
        case ClientType.SET_PROFILE if not isinstance(d.get("skills"), dict):
            return "set_profile needs `skills` ({skill: level})"
        case ClientType.SET_PROFILE if "capacity" in d and not isinstance(d["capacity"], dict):
            return "`capacity` must be {channel: count}"
        case ClientType.SET_AGENT_STATE if d.get("state") not in {DeskState.NOT_READY,
                                                                   DeskState.LOGOUT}:
            return "a supervisor may set `state` to not_ready or logout"
    return None


def error(code: ErrorCode, message: str, ref: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "error", "code": code.value, "message": message}
    if ref is not None:
        out["ref"] = ref
    return out


def ack(of: ClientType, ref: str | None) -> dict[str, Any]:
    """The gateway published what the frame asked for (routing applies it next)."""
    out: dict[str, Any] = {"type": "ack", "of": of.value}
    if ref is not None:
        out["ref"] = ref
    return out


@dataclass
class FloodGate:
    """Token bucket per agent (all its sockets; per socket before hello): ``rate`` frames per
    second sustained, ``burst`` at once.
    ``strikes`` counts refused frames; the server closes the socket past its limit."""

    rate: float
    burst: int
    tokens: float = 0.0
    last_s: float | None = None
    strikes: int = 0
    last_strike_s: float = 0.0

    def allow(self, now_s: float) -> bool:
        if self.last_s is None:
            self.tokens = float(self.burst)
        else:
            self.tokens = min(float(self.burst), self.tokens + (now_s - self.last_s) * self.rate)
        self.last_s = now_s
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        if now_s - self.last_strike_s > STRIKES_FORGOTTEN_S:  # an old burst is forgiven
            self.strikes = 0
        self.last_strike_s = now_s
        self.strikes += 1
        return False
