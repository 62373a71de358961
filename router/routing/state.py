"""The routing state in Redis, and its one owner: everything that depends on its layout is here.

Like h11's ``_state.py`` owns its state machine and arq's ``constants.py`` its keys, this module
holds the routing state's keys, the records kept under them (field names and codes), the
arguments each script takes and the transitions it returns (typed, one class per kind), the Lua
prelude the scripts are built on (generated from these definitions), and the readers that every
other module (the SLA snapshot, the books, the gateway's console, ``peakroute status``, the load
tools and the tests) uses instead of raw Redis commands.

Layout (docs/ROUTING.md, "Redis layout", is checked against :data:`KEY_DOCS` by a test). Every
key of a routing domain is under the prefix ``pr:{d:<domain>}:``: one hash tag, one Redis
Cluster slot. The set of keys is fixed per domain (contacts and agents are records in one hash
each; waiting lists, free-agent indexes and unanswered contacts are lexicographic sorted sets
whose members carry their list, place and id), so every script declares every key it touches
in ``KEYS``, correct by the book on Redis Cluster and on stores that enforce declared keys.
Records, script arguments and results are MessagePack (``cmsgpack`` in Lua, msgspec here).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, ClassVar

import msgspec
import redis.asyncio as aioredis

from router import transient
from router.errors import RoutingStoreError
from router.sla import buckets

PREFIX_HEAD = "pr:{d:"
CALLBACK_CHANNEL = "callback"  # router.events.Channel.CALLBACK: a queued callback's channel
DOMAINS_KEY = "pr:domains"  # set of routing domains seen: the timers walk it (no hash tag)


def prefix(domain: str) -> str:
    """The prefix of every routing key of a domain: ``pr:{d:<domain>}:``."""
    return f"{PREFIX_HEAD}{domain}}}:"


class Key(enum.StrEnum):
    """The keys of one routing domain (after its prefix)."""

    CONTACTS = "c"
    CONTEXT = "cx"
    AGENTS = "a"
    AGENT_PROFILES = "ap"
    SEATED = "agents"
    WAITING = "q"
    WAITING_COUNTS = "wn"
    LIST_URGENCY = "qw"
    FREE = "f"
    READY_COUNTS = "rc"
    OFFERS = "ox"
    RINGS = "rx"
    RETAINED = "fin"
    PENDING = "pend"
    STATS = "stats"
    UNANSWERED = "uw"
    UNANSWERED_TARGETS = "ut"
    SLA_QUEUES = "slaq"
    SLA_TOTALS = "sq"
    OUTBOX = "ob"
    OUTBOX_TIMES = "obz"
    META = "meta"
    ROSTER = "roster"
    PREFERRED = "pq"
    LAST_AGENT = "la"
    LAST_AGENT_TIMES = "laz"
    LANE_PACE = "pace"
    WAIT_NOTICES = "wnx"
    LANE_LINE = "ql"


# What each key holds: docs/ROUTING.md's layout table is checked against this (a test).
KEY_DOCS: dict[str, tuple[str, str]] = {
    Key.CONTACTS: ("hash", "contact id -> its record (ContactRecord, MessagePack)"),
    Key.CONTEXT: ("hash", "contact id -> the offer's context as JSON (intent, tier, language, "
                          "confidence, reason, transcript), until the contact is forgotten"),
    Key.AGENTS: ("hash", "agent id -> its record (AgentRecord, MessagePack): state, idle time, "
                         "capacity and load, turns, where it sits in the free index, offers"),
    Key.AGENT_PROFILES: ("hash", "agent id -> its profile (AgentProfile, MessagePack): skills, "
                                 "lanes served, seats; only a login changes it"),
    Key.SEATED: ("set", "agents logged in"),
    Key.WAITING: ("zset (lex)", "waiting contacts: `<list>|<place>|<contact>`, list = "
                                "`<lane>:<channel>:<class>:<ring>[:<extra skills>]`"),
    Key.WAITING_COUNTS: ("hash", "list -> contacts waiting in it (only non-empty lists)"),
    Key.LIST_URGENCY: ("hash", "`<lane>:<class>` -> `<target_ms>|<weight>`"),
    Key.FREE: ("zset (lex)", "free agents: `<pool>:<channel>|<score>|<agent>`"),
    Key.READY_COUNTS: ("hash", "pool -> agents logged in and ready in it"),
    Key.OFFERS: ("zset", "contact -> when its outstanding offer lapses"),
    Key.RINGS: ("zset", "waiting contact -> when its next ring opens"),
    Key.RETAINED: ("zset", "finished contact -> when it is forgotten (contact retention)"),
    Key.PENDING: ("zset", "waiting contacts whose match ran out of its scan budget -> since "
                          "when (the timer finishes the match)"),
    Key.STATS: ("hash", "the books and counters (STAT_FIELDS)"),
    Key.UNANSWERED: ("zset (lex)", "escalated contacts not yet answered nor abandoned: "
                                   "`<queue>:<class>|<escalated at>|<contact>`"),
    Key.UNANSWERED_TARGETS: ("hash", "`<queue>:<class>` -> target_ms"),
    Key.SLA_QUEUES: ("set", "queues with SLA figures"),
    Key.SLA_TOTALS: ("hash", "`<queue>` -> its running totals, packed as a minute's "
                             "(router/sla/buckets.py)"),
    Key.OUTBOX: ("hash", "entry id (the input event's id, or a timer step's) -> the "
                         "transitions it produced, until Kafka has them (MessagePack)"),
    Key.OUTBOX_TIMES: ("zset", "outbox entry id -> when it was recorded or last re-sent"),
    Key.META: ("hash", "policy digest and since when, for re-seating agents"),
    Key.ROSTER: ("hash", "agent id -> profile JSON (the agent gateway's roster)"),
    Key.PREFERRED: ("zset (lex)", "contacts in their preferred ring, waiting for that agent "
                                  "only: `<agent>|<place>|<contact>`"),
    Key.LAST_AGENT: ("hash", "customer id -> `<agent>|<answered at ms>`: the agent who last "
                             "answered the customer (preferred-agent history)"),
    Key.LAST_AGENT_TIMES: ("zset", "customer id -> when its last agent answered (the timer "
                                   "forgets entries past the policy's history window)"),
    Key.LANE_PACE: ("hash", "lane, and `*` for the domain -> `<ms of wait per place in line>|"
                            "<answers>`: a running median over the contacts answered after "
                            "being told a position (the estimated wait's pace)"),
    Key.WAIT_NOTICES: ("zset", "waiting contact -> when the timer next looks whether to tell "
                               "the customer their position and wait again"),
    Key.LANE_LINE: ("zset (lex)", "the waiting contacts of each lane in place order (any "
                                  "channel, class or ring; not in a preferred ring): "
                                  "`<lane>|<place>|<contact>` (positions in line)"),
}
SLA_KEY_DOCS = buckets.KEY_DOCS


def key(domain: str, k: Key) -> str:
    return prefix(domain) + k.value


def layout_markdown() -> str:
    """The layout table of docs/ROUTING.md ("State in Redis"), as this module defines it (a
    test checks the document holds it verbatim; ``python -m router.routing.state`` prints
    it)."""
    rows = ["| key | type | holds |", "| --- | --- | --- |"]
    for k, (kind, holds) in [*KEY_DOCS.items(), *SLA_KEY_DOCS.items()]:
        cell = holds.replace("|", "\\|")  # a pipe inside a table cell
        rows.append(f"| `{k}` | {kind} | {cell} |")
    return "\n".join(rows) + "\n"


# Fields of the META hash.
META_POLICY = "policy"  # digest of the routing policy loaded last by any worker
META_POLICY_AT = "policy_at"  # when that worker loaded it (ms)
META_RESEATED = "reseated"  # digest under which every logged-in agent is seated
# Claims the domain for a worker's policy: its digest is current, or it was loaded later than
# the current one (the last deployed wins, a rollback too). Returns 1 when the worker's policy is
# the domain's and not every agent is seated under it yet (the worker re-seats), else 0.
# KEYS[1] META; ARGV digest, loaded ms.
POLICY_CLAIM = "claim"
POLICY_CLAIM_SCRIPT = f"""
local cur, at, seated = unpack(redis.call('HMGET', KEYS[1], '{META_POLICY}', '{META_POLICY_AT}',
                                          '{META_RESEATED}'))
if cur == ARGV[1] then
  if seated == ARGV[1] then return 0 end
  return 1
end
if not at or tonumber(ARGV[2]) > tonumber(at) then
  redis.call('HSET', KEYS[1], '{META_POLICY}', ARGV[1], '{META_POLICY_AT}', ARGV[2])
  redis.call('HDEL', KEYS[1], '{META_RESEATED}')
  return 1
end
return 0
"""


# --- the gateway's own keys (same hash tag: a reconnect is served from the same slot) -------


def gateway_day_key(domain: str, day: str, agent_id: str) -> str:
    """An agent's figures of one day, counted once per decision (the gateway's sync)."""
    return f"{prefix(domain)}gw:day:{day}:{agent_id}"


def gateway_active_key(domain: str, agent_id: str) -> str:
    """Contacts an agent accepted and has not completed, as the gateway saw them."""
    return f"{prefix(domain)}gw:act:{agent_id}"


def gateway_online_key(domain: str) -> str:
    """Agents with a desktop connected, by when a gateway last saw them."""
    return f"{prefix(domain)}gw:online"


def gateway_seen_key(domain: str, event_id: str) -> str:
    """A decision the gateway counted already (dedupe across instances)."""
    return f"{prefix(domain)}gw:seen:{event_id}"


def gateway_revoked_key(domain: str, agent_id: str) -> str:
    """When an agent's tokens were revoked (ms): a token issued at or before it is refused."""
    return f"{prefix(domain)}gw:revoked:{agent_id}"


def gateway_ends_key() -> str:
    """Stream of sessions to end (revoked, removed, disabled, logged out), read by every gateway
    instance: one key for all domains (no hash tag), capped by length."""
    return "pr:gw:ends"


# --- records --------------------------------------------------------------------------------


class ContactState(enum.StrEnum):
    CONTAINED = "contained"  # the bot closed it (books only)
    ESCALATING = "escalating"  # handed off by the bot, the request not routed yet
    QUEUED = "queued"
    OFFERED = "offered"
    ANSWERED = "answered"
    DONE = "done"
    ABANDONED = "abandoned"


class ServiceClass(enum.StrEnum):
    VIP = "v"
    NORMAL = "n"


class AgentStateCode(enum.StrEnum):
    READY = "ready"
    NOT_READY = "not_ready"
    OFFLINE = "offline"


class ContactRecord(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=False):
    """One contact, as the scripts keep it (field names are the record's keys in Lua)."""

    st: str = ""  # ContactState
    arr: int = 0  # the bot's first decision (ms)
    esc: int = 0  # escalated at (ms): the 30-second clock
    ch: str = ""  # channel
    ln: str = ""  # lane (queue.language)
    cls: str = ""  # ServiceClass
    qn: str = ""  # queue
    score: int = 0  # place in line (lower first)
    pri: int = 0  # priority 0..9
    tg: int = 0  # answer target (ms)
    wt: float = 1.0  # urgency weight
    rd: list[int] = []  # ring delays (ms)
    rp: list[str] = []  # the free-agent pool of each ring
    xs: str = ""  # extra skills "a=1,b=2" (bind at ring 0)
    sg: str = ""  # the queue's strategy
    rg: int = 0  # ring open now
    ag: str = ""  # agent holding it (offered, answered, done)
    of: str = ""  # current offer id
    att: int = 0  # offers made (the offer id derives from it)
    n: int = 0  # queued and relaxed transitions so far (distinct event ids)
    ans: int = 0  # answered at (ms)
    cu: str = ""  # customer id (routing.requested.v2): answered, it is the customer's last agent
    pa: str = ""  # the preferred agent while the preferred ring is open ("" otherwise)
    pu: int = 0  # when the preferred ring ends (ms)
    pf: str = ""  # the preferred agent the request named or history found (kept for the offer)
    wa: int = 0  # when the customer was last told their position and wait (ms)
    we: int = 0  # the estimated wait they were told then (ms)
    wk: int = 0  # notices sent so far (distinct event ids)
    wf: int = 0  # when the customer was first told their position (ms; 0: never)
    wp: int = 0  # the position they were first told (the lane's pace learns from it)
    cb: str = ""  # a callback: whom to call back (the contact's channel is then callback)
    och: str = ""  # a callback's channel before it became one


class AgentRecord(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=False):
    """One agent's hot record: what offers, answers and state changes rewrite. (An empty map
    arrives as [] from Lua.)"""

    st: str = "offline"  # AgentStateCode
    last: int = 0  # idle since (ms): only moves forward
    cap: dict[str, int] | list[Any] = {}  # capacity per channel (the policy's cap applied)
    load: dict[str, int] | list[Any] = {}  # contacts held per channel (offered or answered)
    lo: bool = False  # sits in a least_occupied pool
    rr: dict[str, int] | list[Any] = {}  # pool -> last offer from it (round robin)
    fx: dict[str, str] | list[Any] = {}  # "<pool>:<channel>" -> its score in the free index
    offers: list[str] = []  # contacts offered to it, not yet answered


class AgentProfile(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=False):
    """One agent's profile, as its last login seated it (read only where needed)."""

    sk: dict[str, int] | list[Any] = {}  # skills
    rq: dict[str, int] | list[Any] = {}  # capacity asked for
    serves: dict[str, int] | list[Any] = {}  # lane -> the ring it serves from
    seats: list[list[Any]] = []  # [pool, rank, strategy] per pool it sits in
    chs: list[str] = []  # channels with capacity (or work in progress)
    pd: str = ""  # policy digest it was seated under


def _map(value: Mapping[str, Any] | list[Any]) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


STAT_FIELDS = (
    "arrived", "contained", "escalating", "escalated", "offered", "answered",
    "answered_within_target", "wait_sum_ms", "abandoned", "short_abandoned", "completed",
    "declined", "expired", "relaxed", "rescinded", "invariant_violations", "clamped",
)


# --- script arguments -----------------------------------------------------------------------


def _read(name: str) -> str:
    return (resources.files("router.routing") / "scripts" / f"{name}.lua").read_text()


class Args(msgspec.Struct):
    """One script call's arguments (one MessagePack map: ARGV[4]); ARGV[1..3] are the outbox
    entry id, the time and the SLA buckets' expiry, common to every call."""

    SCRIPT: ClassVar[str]


class RequestArgs(Args):
    SCRIPT: ClassVar[str] = "request"
    contact_id: str
    channel: str
    lane: str
    service_class: str
    score: int
    escalated_at: int
    priority: int
    target_ms: int
    weight: float
    ring_delays: list[int]
    ring_pools: list[str]
    extra_skills: str
    queue: str
    strategy: str
    offer_timeout_ms: int
    scan_limit: int
    context: str  # JSON: what the offer shows the agent
    reason: str = ""  # why it queues (the queue differs from the one asked for), if it does
    customer_id: str = ""  # routing.requested.v2: whose last agent is looked up and recorded
    preferred_agent: str = ""  # routing.requested.v2: named by the request ("" = history's)
    preferred_ring_ms: int = 0  # the policy's preferred ring (0: none)
    history_ms: int = 0  # how far back a last agent counts (0: history not used)
    wait_notice_ms: int = 0  # how often the timer looks at a waiting contact's estimate (0: never)


class AcceptArgs(Args):
    SCRIPT: ClassVar[str] = "accept"
    agent_id: str
    offer_id: str
    contact_id: str


class DeclineArgs(Args):
    SCRIPT: ClassVar[str] = "decline"
    agent_id: str
    offer_id: str
    contact_id: str
    offer_timeout_ms: int
    scan_limit: int
    on_decline: str
    reason: str


class CompleteArgs(Args):
    SCRIPT: ClassVar[str] = "complete"
    agent_id: str
    contact_id: str
    offer_timeout_ms: int
    scan_limit: int
    retention_s: int


class CallbackArgs(Args):
    SCRIPT: ClassVar[str] = "callback"
    contact_id: str
    callback_to: str
    offer_timeout_ms: int
    scan_limit: int


class LeftArgs(Args):
    SCRIPT: ClassVar[str] = "left"
    contact_id: str
    short_abandon_ms: int
    offer_timeout_ms: int
    scan_limit: int
    retention_s: int


class LoginMode(enum.StrEnum):
    LOGIN = "login"  # an agent logs in (or re-sends its profile at login)
    PROFILE = "profile"  # its profile changed: only if logged in, state kept
    RESEAT = "reseat"  # another policy: only if its profile is still the one read


class LoginArgs(Args):
    SCRIPT: ClassVar[str] = "login"
    agent_id: str
    mode: str  # LoginMode
    skills: dict[str, int]
    capacity: dict[str, int]  # the policy's cap applied
    asked: dict[str, int]
    ready: bool
    serves: dict[str, int]  # lane -> ring (policy.memberships)
    seats: list[list[Any]]  # [pool, rank, strategy] (policy.seats)
    digest: str
    offer_timeout_ms: int
    scan_limit: int
    expect_skills: dict[str, int] = {}  # reseat: the profile it was read with
    expect_asked: dict[str, int] = {}
    expect_digest: str = ""


class StateArgs(Args):
    SCRIPT: ClassVar[str] = "state"
    agent_id: str
    state: str
    offer_timeout_ms: int
    scan_limit: int


class LogoutArgs(Args):
    SCRIPT: ClassVar[str] = "logout"
    agent_id: str
    offer_timeout_ms: int
    scan_limit: int


class TickArgs(Args):
    SCRIPT: ClassVar[str] = "tick"
    offer_timeout_ms: int
    scan_limit: int
    max_per_step: int
    on_no_answer: str
    outbox_lease_ms: int
    pending_budget: int
    purge_max: int
    history_ms: int = 0  # last agents answered longer ago are forgotten
    wait_update_ms: int = 0  # tell a waiting customer again after this long (0: never)
    wait_threshold_ms: int = 0  # ... or sooner when the estimate moved by more than this


class BotArgs(Args):
    SCRIPT: ClassVar[str] = "bot"
    contact_id: str
    outcome: str  # contained | escalating
    retention_s: int


ARG_TYPES: tuple[type[Args], ...] = (RequestArgs, AcceptArgs, DeclineArgs, CompleteArgs,
                                     LeftArgs, CallbackArgs, LoginArgs, StateArgs, LogoutArgs,
                                     TickArgs, BotArgs)
SCRIPTS = tuple(t.SCRIPT for t in ARG_TYPES)
_ENCODER = msgspec.msgpack.Encoder()


def encode_args(args: Args) -> bytes:
    return _ENCODER.encode(args)


# Keys each script declares (KEYS[1..n], in Key's order), worked out from the Lua itself: the
# keys its body and every common.lua function it can reach (and the outbox wrapper) name. A
# script that counts service level also declares, last, the call's SLA minute bucket and the
# minute the timer rolls up now with the hour bucket it rolls into (buckets.roll_keys).
_LUA_FUNCTION = re.compile(r"^local function (\w+)\(", re.M)
_KEY_NAME = re.compile(r"\bK_([A-Z_]+)\b")
_CALLED = re.compile(r"\b([a-z_]+)\(")
SLA_KEY_NAMES = ("SLA_MINUTE", "SLA_ROLL_MINUTE", "SLA_ROLL_HOUR")


def _common_functions() -> dict[str, str]:
    src = _read("common")
    starts = [(m.start(), m.group(1)) for m in _LUA_FUNCTION.finditer(src)]
    return {name: src[at:starts[i + 1][0] if i + 1 < len(starts) else len(src)]
            for i, (at, name) in enumerate(starts)}


APPLY = "apply"  # the routing stage's function library (its driver: apply.lua)
BOT = "bot"  # the bot stage's script


def keys_named(script: str) -> set[str]:
    """The K_ names a script can reach (body, common functions it calls, the wrapper and the
    batch driver, which write the outbox and the books once per batch)."""
    functions = {} if script == BOT else _common_functions()
    todo = [_read(script)] + ([functions["outboxed"], _read(APPLY)] if functions else [])
    seen: set[str] = set()
    names: set[str] = set()
    while todo:
        text = todo.pop()
        names |= set(_KEY_NAME.findall(text))
        for called in _CALLED.findall(text):
            if called in functions and called not in seen:
                seen.add(called)
                todo.append(functions[called])
    return names


def _declared(script: str) -> tuple[Key, ...]:
    names = keys_named(script)
    unknown = names - {k.name for k in Key} - set(SLA_KEY_NAMES)
    if unknown:
        raise ValueError(f"{script}.lua names keys state.Key does not have: {sorted(unknown)}")
    return tuple(k for k in Key if k.name in names)


SCRIPT_KEYS: dict[str, tuple[Key, ...]] = {name: _declared(name) for name in SCRIPTS}
SLA_SCRIPTS = frozenset(n for n in SCRIPTS if set(SLA_KEY_NAMES) & keys_named(n))

# Redis runs two scripts. `apply` is the routing stage's (a function library): one call per
# domain and batch runs the batch's transitions in order (each script above but `bot` is a body
# of it, atomic on its own terms: its own outbox entry, its own error), so a batch costs one
# FCALL per domain instead of one call per event. It declares every key its bodies can reach.
# `bot` counts the bot's outcomes.
BODIES = tuple(n for n in SCRIPTS if n != BOT)
SCRIPT_KEYS[APPLY] = tuple(k for k in Key if any(k in SCRIPT_KEYS[b] for b in BODIES))
SLA_SCRIPTS = SLA_SCRIPTS | ({APPLY} if SLA_SCRIPTS & set(BODIES) else set())
RUN_SCRIPTS = (APPLY, BOT)


def script_keys(name: str, domain: str, now_ms: int) -> list[str]:
    p = prefix(domain)
    keys = [p + k.value for k in SCRIPT_KEYS[name]]
    if name in SLA_SCRIPTS:
        keys += [buckets.minute_key(p, now_ms), *buckets.roll_keys(p, now_ms)]
    return keys


# --- transitions (what a script did) --------------------------------------------------------


class T(msgspec.Struct, tag_field="k", frozen=True, array_like=True):
    """One thing a script did. ``domain`` is filled in by the store. On the wire (MessagePack
    from the scripts, kept in the outbox) an array: the kind, then the fields in order."""

    contact_id: str = ""
    agent_id: str = ""
    domain: str = ""

    @property
    def kind(self) -> str:
        return str(self.__struct_config__.tag)


class Placed(T, frozen=True):
    """Transitions of a contact in a lane (they carry where it stands)."""

    channel: str = ""
    lane: str = ""
    ring: int = 0
    waited_ms: int = 0
    priority: int = 0

    @property
    def queue(self) -> str:
        return self.lane.partition(".")[0]


class Queued(Placed, tag="queued", frozen=True):
    seq: int = 0  # the contact's own count of queued/relaxed (distinct event ids)
    reason: str = ""


class Relaxed(Placed, tag="relaxed", frozen=True):
    seq: int = 0
    reason: str = ""  # waited | no_agent_ready


class Offered(Placed, tag="offered", frozen=True):
    offer_id: str = ""
    expires_at_ms: int = 0
    preferred: bool = False  # offered in the contact's preferred ring (to its preferred agent)
    callback_to: str = ""  # a callback: whom to call back


class Answered(Placed, tag="answered", frozen=True):
    offer_id: str = ""
    within_target: bool = False


class Declined(Placed, tag="declined", frozen=True):
    offer_id: str = ""
    reason: str = ""


class Expired(Placed, tag="expired", frozen=True):
    offer_id: str = ""
    reason: str = ""


class Rescinded(Placed, tag="rescinded", frozen=True):
    offer_id: str = ""
    reason: str = ""


class Abandoned(Placed, tag="abandoned", frozen=True):
    reason: str = ""


class Completed(Placed, tag="completed", frozen=True):
    pass


class Waiting(Placed, tag="waiting", frozen=True):
    """What a waiting customer is told: their position in the lane's line (1: next) and the
    estimated wait (docs/ROUTING.md, "Position and estimated wait")."""

    position: int = 0
    estimate_ms: int = 0
    agents: int = 0  # agents logged in and ready in the lane's ring-0 pool
    seq: int = 0  # the contact's own count of notices (distinct event ids)


class Callback(Placed, tag="callback", frozen=True):
    """The customer left the line for a callback: the contact keeps its place (channel now
    callback)."""

    seq: int = 0
    reason: str = ""


class Preferred(Placed, tag="preferred", frozen=True):
    """The request's preferred agent (named, or the customer's last agent): its ring used, or
    skipped and why (``reason``: used | disabled | absent | offline | not_serving)."""

    used: bool = False
    source: str = ""  # named | last_agent
    reason: str = ""


class Duplicate(T, tag="duplicate", frozen=True):
    state: str = ""  # the state the contact was in


class Stale(T, tag="stale", frozen=True):
    offer_id: str = ""
    state: str = ""


class LoggedIn(T, tag="logged_in", frozen=True):
    pass


class LoggedOut(T, tag="logged_out", frozen=True):
    pass


class StateSet(T, tag="state", frozen=True):
    state: str = ""


class ProfilePending(T, tag="profile_pending", frozen=True):
    """A profile change for an agent not logged in: the roster has it for the next login."""


class ReseatSkipped(T, tag="reseat_skipped", frozen=True):
    """The agent's profile changed since it was read: re-seating waits for the next step."""


class UnknownAgent(T, tag="unknown_agent", frozen=True):
    pass


Transition = (Queued | Relaxed | Offered | Answered | Declined | Expired | Rescinded | Abandoned
              | Completed | Preferred | Waiting | Callback | Duplicate | Stale | LoggedIn
              | LoggedOut | StateSet | ProfilePending | ReseatSkipped | UnknownAgent)
TRANSITION_TYPES: tuple[type[T], ...] = (Queued, Relaxed, Offered, Answered, Declined, Expired,
                                         Rescinded, Abandoned, Completed, Preferred,
                                         Waiting, Callback, Duplicate, Stale,
                                         LoggedIn, LoggedOut, StateSet, ProfilePending,
                                         ReseatSkipped, UnknownAgent)
# Kinds that publish something: only these are kept in the outbox until Kafka has them.
PUBLISHED = (Queued, Relaxed, Offered, Answered, Declined, Expired, Rescinded, Abandoned,
             Completed, Preferred, Waiting, Callback)


class Entry(msgspec.Struct, array_like=True, frozen=True):
    """What one script call returns: the outbox entry its transitions are kept under ('' when
    nothing was kept: none of them publishes anything) and the transitions."""

    id: str
    rows: list[Transition]


# --- the Lua prelude, generated from the definitions above ----------------------------------


def _lua_str(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _lua_value(value: object) -> str:
    if isinstance(value, str):
        return _lua_str(value)
    if isinstance(value, int | float):
        return repr(value)
    raise TypeError(f"no Lua literal for {value!r}")


def _constructor(cls: type[T]) -> str:
    """``local function T_offered(contact_id, ...) return {'offered', contact_id or '', ...}
    end``: an array in the struct's field order (array_like), the tag first, a field the caller
    leaves nil at its default (a nil would end the array early), the domain '' (the store's)."""
    names = [f for f in cls.__struct_fields__ if f != "domain"]
    tag = str(cls.__struct_config__.tag)
    values = [_lua_str(tag)]
    for name, default in zip(cls.__struct_fields__, cls.__struct_defaults__, strict=True):
        if name == "domain":
            values.append("''")
        elif isinstance(default, bool):  # `x or true` would turn a false into true
            values.append(f"{name} == true" if default is False else f"{name} ~= false")
        else:
            values.append(f"{name} or {_lua_value(default)}")
    return (f"local function T_{tag}({', '.join(names)}) return {{{', '.join(values)}}} end")


def lua_prelude(script: str) -> str:
    """The generated head of one script: its declared keys by name, the common arguments and
    its own (decoded), the codes, and one constructor per transition kind."""
    lines = ["-- Generated by router/routing/state.py (lua_prelude): the layout's one owner."]
    names = [f"K_{k.name}" for k in SCRIPT_KEYS[script]]
    if script in SLA_SCRIPTS:
        names += [f"K_{k}" for k in SLA_KEY_NAMES]
    if script == APPLY:
        # A function library: loaded once, its functions run per call. The call's keys and
        # arguments are bound for each call (bind): ARGV is the time, the SLA buckets' expiry
        # and the calls (encode_calls); A and EID are each call's own, set by the driver.
        lines += ["local ARGV, NOW, SLA_TTL", "local A, EID = {}, ''",
                  "local " + ", ".join(names),
                  "local function bind(keys, args)", "  ARGV = args",
                  "  NOW, SLA_TTL = tonumber(args[1]), tonumber(args[2])"]
        lines += [f"  {name} = keys[{i}]" for i, name in enumerate(names, start=1)]
        lines.append("end")
    else:  # ARGV: the outbox entry id, the time, the SLA buckets' expiry, the arguments
        lines += ["local A = cmsgpack.unpack(ARGV[4])",
                  "local EID, NOW, SLA_TTL = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])"]
        lines += [f"local {name} = KEYS[{i}]" for i, name in enumerate(names, start=1)]
    for enum_cls in (ContactState, ServiceClass, AgentStateCode):
        prefix_ = {"ContactState": "CS", "ServiceClass": "SC", "AgentStateCode": "AS"}[
            enum_cls.__name__]
        for member in enum_cls:
            lines.append(f"local {prefix_}_{member.name} = {_lua_str(member.value)}")
    lines.append("local PUBLISHED = {" + ", ".join(
        f"[{_lua_str(str(c.__struct_config__.tag))}]=true" for c in PUBLISHED) + "}")
    counts = buckets.COUNT_FIELDS  # a bucket's packed value: these, in this order
    lines.append("local SLA_INDEX = {" + ", ".join(
        f"{name} = {i}" for i, name in enumerate(counts, start=1)) + "}")
    lines.append(f"local SLA_N, SLA_MAX_AT = {len(counts)}, "
                 f"{counts.index(buckets.WAIT_MAX) + 1}")
    lines.append(f"local SLA_ROLLED, SLA_ROLL_LAG = {_lua_str(buckets.ROLLED)}, "
                 f"{buckets.ROLL_LAG_MINUTES}")
    lines.append(f"local CH_CALLBACK = {_lua_str(CALLBACK_CHANNEL)}")
    lines.append(f"local META_POLICY, META_RESEATED = {_lua_str(META_POLICY)}, "
                 f"{_lua_str(META_RESEATED)}")
    lines.extend(_constructor(c) for c in TRANSITION_TYPES)
    return "\n".join(lines) + "\n"


def script_source(name: str) -> str:
    """What Redis runs (``RUN_SCRIPTS``). ``bot``: a script, its prelude and body. ``apply``: a
    function library (FUNCTION LOAD once, FCALL ``APPLY_FUNCTION`` per batch: the ~1,300 lines
    are not run again on every call, as a script's are) of the generated prelude, common.lua,
    each body as a function, and the driver (apply.lua), which runs each call's body wrapped so
    that its transitions are kept in the outbox (a call that finds its entry there gets the
    kept transitions back instead of running again)."""
    if name == BOT:  # books only: no outbox, no common functions
        return lua_prelude(name) + _read(name)
    if name != APPLY:
        raise ValueError(f"{name} is a body of {APPLY}, not a script of its own")
    return _LIBRARY


def _library() -> tuple[str, str, str]:
    """The apply library's source and its function's name, both named by the source's digest:
    workers of different versions (a rolling deploy) each call their own, side by side; and
    the same code as a script, for a Redis older than 7 (no functions: EVALSHA per batch)."""
    bodies = "".join(f"local function body_{b}()\n{_read(b)}\nend\n" for b in BODIES)
    table = "local BODIES = {" + ", ".join(f"{b} = body_{b}" for b in BODIES) + "}\n"
    refusals = "local REFUSALS = {" + ", ".join(
        f"[{_lua_str(code)}] = true" for code in REFUSAL_CODES) + "}\n"
    code = (lua_prelude(APPLY) + _read("common") + "\n" + bodies + table + refusals
            + "local function apply(keys, args)\nbind(keys, args)\n" + _read(APPLY) + "end\n")
    digest = hashlib.sha1(code.encode()).hexdigest()[:16]
    function = f"peakroute_apply_{digest}"
    head = f"#!lua name=peakroute_routing_{digest}\n"
    library = head + code + (f"redis.register_function{{function_name={_lua_str(function)}, "
                             "callback=apply}\n")
    # The prelude's own ARGV hides the script's global: it is taken first.
    script = "local G_KEYS, G_ARGV = KEYS, ARGV\n" + code + "return apply(G_KEYS, G_ARGV)\n"
    return library, function, script


# The error replies a body may meet that are the server's, not the call's: the driver stops
# the batch with them (the caller retries it: router/transient.py), instead of reporting them
# as that call's failure.
REFUSAL_CODES = (*transient.REPLY_CODES, "NOSCRIPT")
_LIBRARY, APPLY_FUNCTION, APPLY_SCRIPT = _library()


class CallFailed(RoutingStoreError):
    """One call of a batch raised an error in its body (its data, or a bug): the other calls
    are unaffected."""


_APPLIED = msgspec.msgpack.Decoder(list[list[Entry] | str])


def encode_calls(calls: Iterable[tuple[str, Args]]) -> bytes:
    """The ``apply`` script's calls: (outbox entry id, arguments) each, run in this order."""
    return _ENCODER.encode([(a.SCRIPT, entry, a) for entry, a in calls])


_BY_KIND: dict[str, type[T]] = {str(c.__struct_config__.tag): c for c in TRANSITION_TYPES}


def _legacy_row(row: Any) -> Transition:
    """A transition as workers before array-form transitions kept it in the outbox (a map, its
    kind in "k"), or as now (an array)."""
    if isinstance(row, dict):
        kind = row.get("k")
        cls = _BY_KIND.get(kind) if isinstance(kind, str) else None
        if cls is None:  # as the array decoder says of an unknown kind
            raise msgspec.ValidationError(f"unknown transition kind {kind!r}")
        row = [cls.__struct_config__.tag, *(row.get(f, d) for f, d in zip(
            cls.__struct_fields__, cls.__struct_defaults__, strict=True))]
    converted: Transition = msgspec.convert(row, Transition)
    return converted


def _decode_mixed(raw: bytes) -> list[list[Entry] | str]:
    """The slow path of decode_applied: a result holding transitions in the map form of an
    earlier version (entries kept in the outbox before an upgrade, re-sent by the timer)."""
    out: list[list[Entry] | str] = []
    for result in msgspec.msgpack.decode(raw):
        if isinstance(result, str):
            out.append(result)
        else:
            out.append([Entry(eid, [_legacy_row(r) for r in rows]) for eid, rows in result])
    return out


def decode_applied(raw: bytes, domain: str) -> list[list[Entry] | CallFailed]:
    """Per call of an ``apply``: its outbox entries with their transitions, or its error."""
    out: list[list[Entry] | CallFailed] = []
    try:
        results = _APPLIED.decode(raw)
    except msgspec.ValidationError:
        results = _decode_mixed(raw)
    for result in results:
        if isinstance(result, str):
            out.append(CallFailed(result))
        else:
            out.append([Entry(e.id, [msgspec.structs.replace(t, domain=domain) for t in e.rows])
                        for e in result])
    return out


# --- lexicographic members ------------------------------------------------------------------

SEP = "|"
PLACE_DIGITS = 16


def place(n: int) -> str:
    """A score as a fixed-width string, so that member order is score order."""
    return str(min(max(int(n), 0), 10**PLACE_DIGITS - 1)).zfill(PLACE_DIGITS)


def split_member(member: Any) -> tuple[str, int, str]:
    """``<group>|<place>|<id>`` -> (group, place, id)."""
    text = member.decode() if isinstance(member, bytes) else member
    group, at, ident = text.rsplit(SEP, 2)
    return group, int(at), ident


def list_id(lane: str, channel: str, service_class: str, ring: int, extra: str = "") -> str:
    base = f"{lane}:{channel}:{service_class}:{ring}"
    return f"{base}:{extra}" if extra and ring == 0 else base


@dataclass(frozen=True, slots=True)
class ListId:
    lane: str
    channel: str
    service_class: str
    ring: int
    extra: str  # extra skills the list's contacts need (ring 0 only)

    @property
    def queue(self) -> str:
        return self.lane.partition(".")[0]

    @classmethod
    def parse(cls, text: str) -> ListId:
        parts = text.split(":")
        lane, channel, service_class, ring = parts[:4]
        return cls(lane, channel, service_class, int(ring), ":".join(parts[4:]))


# --- readers ----------------------------------------------------------------------------------


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


_CONTACT = msgspec.msgpack.Decoder(ContactRecord)
_AGENT = msgspec.msgpack.Decoder(AgentRecord)
_PROFILE = msgspec.msgpack.Decoder(AgentProfile)


@dataclass(frozen=True, slots=True)
class ContactView:
    contact_id: str
    state: str
    channel: str
    lane: str
    queue: str
    service_class: str
    ring: int
    priority: int
    escalated_at_ms: int
    target_ms: int
    agent_id: str
    offer_id: str
    answered_at_ms: int
    score: int
    extra_skills: str
    ring_pools: tuple[str, ...]
    ring_delays_ms: tuple[int, ...]
    weight: float
    customer_id: str = ""
    preferred_agent: str = ""  # while its preferred ring is open
    preferred_until_ms: int = 0
    preferred_noted: str = ""  # the preferred agent found at the request (used or not)
    callback_to: str = ""  # a callback: whom to call back

    @property
    def vip(self) -> bool:
        return self.service_class == ServiceClass.VIP

    @property
    def waiting_list(self) -> str:
        return list_id(self.lane, self.channel, self.service_class, self.ring,
                       self.extra_skills)

    @classmethod
    def of(cls, contact_id: str, r: ContactRecord) -> ContactView:
        return cls(contact_id, r.st, r.ch, r.ln, r.qn, r.cls, r.rg, r.pri, r.esc, r.tg, r.ag,
                   r.of, r.ans, r.score, r.xs, tuple(r.rp), tuple(r.rd), r.wt, r.cu, r.pa,
                   r.pu, r.pf, r.cb)


@dataclass(frozen=True, slots=True)
class Seat:
    pool: str
    rank: int
    strategy: str


@dataclass(frozen=True, slots=True)
class AgentView:
    agent_id: str
    state: str  # offline when not logged in
    logged_in: bool
    skills: dict[str, int]
    capacity: dict[str, int]
    load: dict[str, int]
    asked: dict[str, int]
    serves: dict[str, int]  # lane -> ring
    seats: tuple[Seat, ...]
    last_ms: int
    last_from_pool_ms: dict[str, int]
    free_scores: dict[str, int]  # "<pool>:<channel>" -> score in the free index
    offers: tuple[str, ...]
    digest: str

    @property
    def ready(self) -> bool:
        return self.state == AgentStateCode.READY

    def has_room(self, channel: str) -> bool:
        return self.ready and self.load.get(channel, 0) < self.capacity.get(channel, 0)

    @classmethod
    def of(cls, agent_id: str, r: AgentRecord | None, p: AgentProfile | None,
           logged_in: bool) -> AgentView:
        r = r or AgentRecord()
        p = p or AgentProfile()
        return cls(agent_id, r.st if logged_in else AgentStateCode.OFFLINE.value, logged_in,
                   _map(p.sk), _map(r.cap), _map(r.load), _map(p.rq), _map(p.serves),
                   tuple(Seat(str(s[0]), int(s[1]), str(s[2])) for s in p.seats), r.last,
                   _map(r.rr), {k: int(v) for k, v in _map(r.fx).items()}, tuple(r.offers),
                   p.pd)


@dataclass(frozen=True, slots=True)
class OfferContext:
    """What the desktop shows with an offer (written by the request, read by the gateway)."""

    intent: str = ""
    tier: str = ""
    language: str = ""
    confidence: float = 0.0
    reason: str = ""
    transcript: tuple[dict[str, Any], ...] = ()


def decode_contact(raw: Any) -> ContactRecord | None:
    return None if raw is None else _CONTACT.decode(raw)


def decode_agent(raw: Any) -> AgentRecord | None:
    return None if raw is None else _AGENT.decode(raw)


def decode_profile(raw: Any) -> AgentProfile | None:
    return None if raw is None else _PROFILE.decode(raw)


async def read_contacts(client: aioredis.Redis, domain: str, contact_ids: Sequence[str]
                        ) -> dict[str, ContactView]:
    """The contacts that exist (finished ones until they are forgotten)."""
    if not contact_ids:
        return {}
    raw = await client.hmget(key(domain, Key.CONTACTS), list(contact_ids))
    return {cid: ContactView.of(cid, rec) for cid, r in zip(contact_ids, raw, strict=True)
            if (rec := decode_contact(r)) is not None}


async def contact_states(client: aioredis.Redis, domain: str, contact_ids: Sequence[str],
                         chunk: int = 5000) -> dict[str, str | None]:
    """Each contact's state (None: unknown or forgotten)."""
    out: dict[str, str | None] = {}
    for start in range(0, len(contact_ids), chunk):
        part = list(contact_ids[start:start + chunk])
        raw = await client.hmget(key(domain, Key.CONTACTS), part)
        for cid, r in zip(part, raw, strict=True):
            rec = decode_contact(r)
            out[cid] = rec.st if rec is not None else None
    return out


async def read_agents(client: aioredis.Redis, domain: str,
                      agent_ids: Sequence[str] | None = None) -> dict[str, AgentView]:
    """Agents by id (all logged in when ``agent_ids`` is None); one that never logged in is
    offline with nothing. Agents by id cost one round trip, whatever the domain's size (their
    seats are checked one by one, not by reading every seated agent)."""
    if agent_ids is None:
        ids = sorted(_text(a) for a in await client.smembers(key(domain, Key.SEATED)))
    else:
        ids = list(agent_ids)
    if not ids:
        return {}
    async with client.pipeline(transaction=True) as pipe:
        pipe.smismember(key(domain, Key.SEATED), ids)
        pipe.hmget(key(domain, Key.AGENTS), ids)
        pipe.hmget(key(domain, Key.AGENT_PROFILES), ids)
        seated, raw, profiles = await pipe.execute()
    return {aid: AgentView.of(aid, decode_agent(r), decode_profile(p), bool(s))
            for aid, s, r, p in zip(ids, seated, raw, profiles, strict=True)}


async def seated_agents(client: aioredis.Redis, domain: str) -> list[str]:
    return sorted(_text(a) for a in await client.smembers(key(domain, Key.SEATED)))


async def read_context(client: aioredis.Redis, domain: str, contact_id: str) -> OfferContext:
    return _context(await client.hget(key(domain, Key.CONTEXT), contact_id))


async def read_contexts(client: aioredis.Redis, domain: str, contact_ids: Sequence[str]
                        ) -> dict[str, OfferContext]:
    """read_context of many contacts in one round trip."""
    if not contact_ids:
        return {}
    raw = await client.hmget(key(domain, Key.CONTEXT), list(contact_ids))
    return {cid: _context(r) for cid, r in zip(contact_ids, raw, strict=True)}


async def read_offered(client: aioredis.Redis, by_domain: Mapping[str, Sequence[str]]
                       ) -> dict[tuple[str, str], tuple[ContactView | None, OfferContext]]:
    """(domain, contact) -> the contact (None if unknown) and its request's context, for
    contacts of any number of domains in one round trip (a pipeline of two reads a domain)."""
    items = [(domain, list(cids)) for domain, cids in by_domain.items() if cids]
    if not items:
        return {}
    async with client.pipeline(transaction=False) as pipe:
        for domain, cids in items:
            pipe.hmget(key(domain, Key.CONTACTS), cids)
            pipe.hmget(key(domain, Key.CONTEXT), cids)
        rows = await pipe.execute()
    out: dict[tuple[str, str], tuple[ContactView | None, OfferContext]] = {}
    for n, (domain, cids) in enumerate(items):
        contacts, contexts = rows[2 * n], rows[2 * n + 1]
        for cid, c, x in zip(cids, contacts, contexts, strict=True):
            rec = decode_contact(c)
            out[(domain, cid)] = (ContactView.of(cid, rec) if rec is not None else None,
                                  _context(x))
    return out


def _context(raw: Any) -> OfferContext:
    if not raw:
        return OfferContext()
    data = msgspec.json.decode(raw)
    return OfferContext(
        str(data.get("intent", "")), str(data.get("tier", "")),
        str(data.get("language", "")), float(data.get("confidence", 0.0)),
        str(data.get("reason", "")),
        tuple(t for t in data.get("transcript", ()) if isinstance(t, dict)))


async def offers_of(client: aioredis.Redis, domain: str, agent_id: str
                    ) -> list[tuple[ContactView, int]]:
    """The agent's outstanding offers: (contact, expires at ms)."""
    agents = await read_agents(client, domain, [agent_id])
    agent = agents.get(agent_id)
    if agent is None or not agent.offers:
        return []
    contacts = await read_contacts(client, domain, agent.offers)
    async with client.pipeline(transaction=False) as pipe:
        for cid in agent.offers:
            pipe.zscore(key(domain, Key.OFFERS), cid)
        expiries = await pipe.execute()
    return [(contacts[cid], int(exp)) for cid, exp in zip(agent.offers, expiries, strict=True)
            if cid in contacts and exp is not None and contacts[cid].agent_id == agent_id
            and contacts[cid].state == ContactState.OFFERED]


@dataclass(frozen=True, slots=True)
class ListFigures:
    """One waiting list, live."""

    list: ListId
    waiting: int
    oldest_place: int | None  # place in line of its head
    head: str | None
    at_risk: int  # contacts whose place is before the at-risk mark
    target_ms: int
    weight: float


async def waiting_lists(client: aioredis.Redis, domain: str, now_ms: int,
                        at_risk_share: float) -> list[ListFigures]:
    """Every non-empty waiting list: size, head and at risk (a place earlier than now minus
    the share of the list's target)."""
    counts = {_text(k): int(v) for k, v in
              (await client.hgetall(key(domain, Key.WAITING_COUNTS))).items()}
    urgency = {_text(k): _text(v) for k, v in
               (await client.hgetall(key(domain, Key.LIST_URGENCY))).items()}
    names = sorted(n for n, c in counts.items() if c > 0)
    wkey = key(domain, Key.WAITING)
    out = []
    for name in names:
        lid = ListId.parse(name)
        tg_text, _, wt_text = urgency.get(f"{lid.lane}:{lid.service_class}", "").partition("|")
        target = int(float(tg_text or 30000))
        mark = now_ms - int(target * at_risk_share)
        async with client.pipeline(transaction=False) as pipe:
            pipe.zrangebylex(wkey, f"[{name}{SEP}", f"({name}}}", start=0, num=1)
            pipe.zlexcount(wkey, f"[{name}{SEP}", f"({name}{SEP}{place(mark + 1)}")
            head_raw, risk = await pipe.execute()
        head = split_member(head_raw[0]) if head_raw else None
        out.append(ListFigures(lid, counts[name], head[1] if head else None,
                               head[2] if head else None, int(risk), target,
                               float(wt_text or 1)))
    return out


async def waiting_members(client: aioredis.Redis, domain: str) -> dict[str, list[str]]:
    """list -> its contacts in order (tests and tools: the whole set)."""
    out: dict[str, list[str]] = {}
    for member in await client.zrange(key(domain, Key.WAITING), 0, -1):
        group, _, cid = split_member(member)
        out.setdefault(group, []).append(cid)
    return out


async def free_index(client: aioredis.Redis, domain: str) -> dict[str, dict[str, int]]:
    """"<pool>:<channel>" -> {agent: score} (tests and tools)."""
    out: dict[str, dict[str, int]] = {}
    for member in await client.zrange(key(domain, Key.FREE), 0, -1):
        group, score, aid = split_member(member)
        out.setdefault(group, {})[aid] = score
    return out


@dataclass(frozen=True, slots=True)
class UnansweredFigures:
    """Escalated, not yet answered nor abandoned, per queue and class."""

    queue: str
    service_class: str
    target_ms: int
    waiting: int
    oldest_escalated_ms: int | None
    at_risk: int


async def unanswered(client: aioredis.Redis, domain: str, now_ms: int,
                     at_risk_share: float) -> list[UnansweredFigures]:
    targets = {_text(k): int(v) for k, v in
               (await client.hgetall(key(domain, Key.UNANSWERED_TARGETS))).items()}
    ukey = key(domain, Key.UNANSWERED)
    names = sorted(targets)
    async with client.pipeline(transaction=True) as pipe:
        for name in names:
            mark = now_ms - int(targets[name] * at_risk_share)
            pipe.zlexcount(ukey, f"[{name}{SEP}", f"({name}}}")
            pipe.zrangebylex(ukey, f"[{name}{SEP}", f"({name}}}", start=0, num=1)
            pipe.zlexcount(ukey, f"[{name}{SEP}", f"({name}{SEP}{place(mark)}")
        res = iter(await pipe.execute()) if names else iter(())
    out = []
    for name in names:
        n, head, risk = next(res), next(res), next(res)
        q, _, cls = name.rpartition(":")
        out.append(UnansweredFigures(q, cls, targets[name], int(n),
                                     split_member(head[0])[1] if head else None, int(risk)))
    return out


async def stats(client: aioredis.Redis, domain: str) -> dict[str, int]:
    raw = await client.hgetall(key(domain, Key.STATS))
    out = dict.fromkeys(STAT_FIELDS, 0)
    out.update({_text(k): int(v) for k, v in raw.items()})
    return out


async def live(client: aioredis.Redis, domain: str) -> dict[str, int]:
    """Contacts waiting for an agent and contacts with an outstanding offer, right now."""
    async with client.pipeline(transaction=True) as pipe:
        pipe.zcard(key(domain, Key.OFFERS))
        pipe.hvals(key(domain, Key.WAITING_COUNTS))
        offered, waiting = await pipe.execute()
    return {"waiting": sum(int(n) for n in waiting), "offered": int(offered)}


async def domains(client: aioredis.Redis) -> list[str]:
    return sorted(_text(d) for d in await client.smembers(DOMAINS_KEY))


async def outbox_size(client: aioredis.Redis, domain: str) -> int:
    return int(await client.zcard(key(domain, Key.OUTBOX_TIMES)))


async def roster_get(client: aioredis.Redis, domain: str, agent_id: str) -> bytes | None:
    raw: Any = await client.hget(key(domain, Key.ROSTER), agent_id)
    return None if raw is None else bytes(raw)


async def roster_all(client: aioredis.Redis, domain: str) -> dict[str, bytes]:
    raw: Any = await client.hgetall(key(domain, Key.ROSTER))
    return {_text(k): bytes(v) for k, v in raw.items()}


def roster_key(domain: str) -> str:
    return key(domain, Key.ROSTER)


def levels(text: str) -> dict[str, int]:
    """``"refund=2,zh=1"`` -> ``{"refund": 2, "zh": 1}``."""
    out: dict[str, int] = {}
    for part in filter(None, text.split(",")):
        name, _, level = part.partition("=")
        out[name] = int(level)
    return out


def format_levels(values: Mapping[str, int]) -> str:
    """``{"zh": 1, "refund": 2}`` -> ``"refund=2,zh=1"`` (sorted: one list per requirement)."""
    return ",".join(f"{name}={int(level)}" for name, level in sorted(values.items()))


def seat_rows(seats: Iterable[tuple[str, int, str]]) -> list[list[Any]]:
    return [[pool, int(rank), strategy] for pool, rank, strategy in seats]


def rows(entries: Iterable[Entry]) -> list[Transition]:
    """The transitions of some outbox entries, in order."""
    return [t for e in entries for t in e.rows]


@dataclass(frozen=True, slots=True)
class DomainDump:
    """The whole routing state of a domain (tests and tools; O(state))."""

    contacts: dict[str, ContactView]
    agents: dict[str, AgentView]
    seated: frozenset[str]
    offers: dict[str, int]  # contact -> offer expiry
    waiting: dict[str, list[str]]  # list -> contacts in order
    waiting_counts: dict[str, int]
    free: dict[str, dict[str, int]]  # "<pool>:<channel>" -> agent -> score
    ready_counts: dict[str, int]
    pending: frozenset[str]
    stats: dict[str, int]
    outbox: frozenset[str]
    preferred: dict[str, list[str]]  # agent -> contacts in its preferred ring, in order


async def dump(client: aioredis.Redis, domain: str) -> DomainDump:
    async with client.pipeline(transaction=True) as pipe:
        pipe.hgetall(key(domain, Key.CONTACTS))
        pipe.hgetall(key(domain, Key.AGENTS))
        pipe.hgetall(key(domain, Key.AGENT_PROFILES))
        pipe.smembers(key(domain, Key.SEATED))
        pipe.zrange(key(domain, Key.OFFERS), 0, -1, withscores=True)
        pipe.zrange(key(domain, Key.WAITING), 0, -1)
        pipe.hgetall(key(domain, Key.WAITING_COUNTS))
        pipe.zrange(key(domain, Key.FREE), 0, -1)
        pipe.hgetall(key(domain, Key.READY_COUNTS))
        pipe.zrange(key(domain, Key.PENDING), 0, -1)
        pipe.hgetall(key(domain, Key.STATS))
        pipe.hkeys(key(domain, Key.OUTBOX))
        pipe.zrange(key(domain, Key.PREFERRED), 0, -1)
        (contacts, agents, profiles, seated, offers, waiting, counts, free, ready, pending,
         stats_, outbox, preferred) = await pipe.execute()
    preferred_lists: dict[str, list[str]] = {}
    for member in preferred:
        group, _, cid = split_member(member)
        preferred_lists.setdefault(group, []).append(cid)
    seated_ids = frozenset(_text(a) for a in seated)
    waiting_lists: dict[str, list[str]] = {}
    for member in waiting:
        group, _, cid = split_member(member)
        waiting_lists.setdefault(group, []).append(cid)
    free_index_: dict[str, dict[str, int]] = {}
    for member in free:
        group, score, aid = split_member(member)
        free_index_.setdefault(group, {})[aid] = score
    figures = dict.fromkeys(STAT_FIELDS, 0)
    figures.update({_text(k): int(v) for k, v in stats_.items()})
    return DomainDump(
        contacts={_text(k): ContactView.of(_text(k), _CONTACT.decode(v))
                  for k, v in contacts.items()},
        agents={_text(k): AgentView.of(_text(k), _AGENT.decode(v),
                                       decode_profile(profiles.get(k)), _text(k) in seated_ids)
                for k, v in agents.items()},
        seated=seated_ids,
        offers={_text(k): int(v) for k, v in offers},
        waiting=waiting_lists,
        waiting_counts={_text(k): int(v) for k, v in counts.items()},
        free=free_index_,
        ready_counts={_text(k): int(v) for k, v in ready.items()},
        pending=frozenset(_text(c) for c in pending),
        stats=figures,
        outbox=frozenset(_text(e) for e in outbox),
        preferred=preferred_lists)


async def contact_state(client: aioredis.Redis, domain: str, contact_id: str) -> str | None:
    """One contact's state (None: unknown or forgotten)."""
    return (await contact_states(client, domain, [contact_id]))[contact_id]


async def agent_state(client: aioredis.Redis, domain: str, agent_id: str) -> str | None:
    """One agent's state (None: never logged in; offline once logged out)."""
    rec = decode_agent(await client.hget(key(domain, Key.AGENTS), agent_id))
    if rec is None:
        return None
    seated = await client.sismember(key(domain, Key.SEATED), agent_id)
    return rec.st if seated else AgentStateCode.OFFLINE.value


async def sla_totals(client: aioredis.Redis, domain: str) -> dict[str, dict[str, int]]:
    """Queue -> its running SLA totals (the Prometheus counters' source)."""
    raw = await client.hgetall(key(domain, Key.SLA_TOTALS))
    return {q: dataclasses.asdict(c) for q, c in buckets.per_queue(raw).items()}


if __name__ == "__main__":
    print(layout_markdown(), end="")
