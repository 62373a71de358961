"""The event contract: one frozen dataclass per event type on every topic, and its JSON form.

Each event is a JSON object with ``type`` (name and version, e.g. ``contact.arrived.v1``),
``event_id`` and ``ts_ms`` (epoch milliseconds) beside its own fields. Field constraints are
declared with ``Annotated`` markers below; :mod:`router.decode` enforces them. docs/EVENTS.md
documents every type with an example that ``kcat -P`` can send as is.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from typing import Annotated, Any, ClassVar, TypeAlias

import orjson

# Per event class, its fields' names in order (``dataclasses.fields`` builds a tuple of Field
# objects on every call: too slow for once per record).
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


class Kind(enum.Enum):
    """What a field may hold; the decoder validates each kind (see router.decode)."""

    ID = "id"  # [A-Za-z0-9._:@-], 1..64 chars
    TEXT = "text"  # customer-visible text, at most Settings.max_text_chars
    LABEL = "label"  # short free label (reason, intent, wrap-up code), at most 64 chars
    TS = "ts"  # epoch milliseconds in 2015..2100
    LEVELS = "levels"  # {skill id: level 1..10}, at most 32 entries
    CAPACITY = "capacity"  # {channel: 0..32}
    PRIORITY = "priority"  # 0..9, higher is more urgent
    COUNT = "count"  # 0..2**31
    FLAG = "flag"  # true/false
    SCORE = "score"  # a number in 0..1
    TRANSCRIPT = "transcript"  # [{speaker, text, ts_ms}], at most 50 turns


Id: TypeAlias = Annotated[str, Kind.ID]
Text: TypeAlias = Annotated[str, Kind.TEXT]
Label: TypeAlias = Annotated[str, Kind.LABEL]
Ts: TypeAlias = Annotated[int, Kind.TS]
Levels: TypeAlias = Annotated[dict[str, int], Kind.LEVELS]
Capacity: TypeAlias = Annotated[dict[str, int], Kind.CAPACITY]
Priority: TypeAlias = Annotated[int, Kind.PRIORITY]
Count: TypeAlias = Annotated[int, Kind.COUNT]
Flag: TypeAlias = Annotated[bool, Kind.FLAG]
Score: TypeAlias = Annotated[float, Kind.SCORE]


class Channel(enum.StrEnum):
    CHAT = "chat"
    VOICE = "voice"
    EMAIL = "email"
    CALLBACK = "callback"  # a queued callback: the agent calls the customer back


class Language(enum.StrEnum):
    ZH = "zh"
    EN = "en"


class Tier(enum.StrEnum):
    NORMAL = "normal"
    VIP = "vip"


class AgentState(enum.StrEnum):
    READY = "ready"
    NOT_READY = "not_ready"  # break, training, redirected after no answer
    OFFLINE = "offline"


class BotAction(enum.StrEnum):
    ANSWERED = "answered"  # the bot replied itself (the contact stays with the bot: contained)
    ESCALATED = "escalated"  # handed to a human queue


class Speaker(enum.StrEnum):
    CUSTOMER = "customer"
    BOT = "bot"


@dataclass(frozen=True, slots=True)
class Turn:
    """One line of a conversation with the bot, as an escalation carries it to the agent."""

    speaker: Speaker
    text: str
    ts_ms: int


Transcript: TypeAlias = Annotated[tuple[Turn, ...], Kind.TRANSCRIPT]


class Decision(enum.StrEnum):
    """Routing transitions written to routing.decisions (the audit log)."""

    QUEUED = "queued"
    OFFERED = "offered"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    EXPIRED = "expired"
    RESCINDED = "rescinded"
    RELAXED = "relaxed"  # the contact's next ring opened: a wider pool may take it
    ABANDONED = "abandoned"
    COMPLETED = "completed"
    PREFERRED = "preferred"  # the preferred agent's ring: used, or skipped and why
    CALLBACK = "callback"  # the customer left the line for a callback: it keeps its place


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Fields every event has. ``TYPE`` is the wire name of the concrete class."""

    TYPE: ClassVar[str] = ""
    event_id: Id
    ts_ms: Ts

    def to_dict(self) -> dict[str, Any]:
        names = _FIELD_NAMES.get(type(self))
        if names is None:
            names = _FIELD_NAMES[type(self)] = tuple(f.name for f in fields(self))
        out: dict[str, Any] = {"type": self.TYPE}
        for name in names:
            out[name] = getattr(self, name)
        return out

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


# --- contacts.inbound (gateway -> bot stage), key: contact_id -------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ContactArrived(Event):
    TYPE: ClassVar[str] = "contact.arrived.v1"
    contact_id: Id
    domain: Id
    customer_id: Id
    channel: Channel = Channel.CHAT
    language: Language = Language.ZH
    tier: Tier = Tier.NORMAL
    text: Text = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class CustomerMessage(Event):
    TYPE: ClassVar[str] = "customer.message.v1"
    contact_id: Id
    domain: Id
    text: Text
    language: Language = Language.ZH


@dataclass(frozen=True, slots=True, kw_only=True)
class CustomerLeft(Event):
    TYPE: ClassVar[str] = "customer.left.v1"
    contact_id: Id
    domain: Id


@dataclass(frozen=True, slots=True, kw_only=True)
class CustomerCallbackRequested(Event):
    """The waiting customer leaves the line and asks to be called back: the contact keeps its
    place and is offered, when its turn comes, as a callback (channel ``callback``)."""

    TYPE: ClassVar[str] = "customer.callback_requested.v1"
    contact_id: Id
    domain: Id
    callback_to: Label  # a phone number or a channel reference to call the customer back on


@dataclass(frozen=True, slots=True, kw_only=True)
class HumanRequested(Event):
    """The customer pressed "talk to a person" (or the gateway detected the request)."""

    TYPE: ClassVar[str] = "customer.human_requested.v1"
    contact_id: Id
    domain: Id
    language: Language = Language.ZH


# --- bot.replies (bot stage -> gateway), key: contact_id ----------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class BotReplied(Event):
    TYPE: ClassVar[str] = "bot.replied.v1"
    contact_id: Id
    domain: Id
    text: Text
    intent: Label
    action: BotAction
    language: Language = Language.ZH


@dataclass(frozen=True, slots=True, kw_only=True)
class ContactClosed(Event):
    """The bot closed a contact it had answered, after the customer stayed silent."""

    TYPE: ClassVar[str] = "contact.closed.v1"
    contact_id: Id
    domain: Id
    text: Text  # the closing message to show
    intent: Label = ""  # the subject of the bot's last answer
    reason: Label = "silence"
    language: Language = Language.ZH


@dataclass(frozen=True, slots=True, kw_only=True)
class ContactWaitUpdated(Event):
    """Sent by the routing stage: a waiting customer's position in line and estimated wait,
    when the contact is queued and again while it waits (docs/ROUTING.md)."""

    TYPE: ClassVar[str] = "contact.wait_updated.v1"
    contact_id: Id
    domain: Id
    position: Count  # 1: next in line (the contacts of its lane ahead of it, plus one)
    estimated_wait_s: Count  # from now, rounded up
    queue: Label = ""
    lane: Label = ""  # queue and language, e.g. refunds.zh: the line the position is in
    agents: Count = 0  # agents ready in the lane's first ring now
    callback_offered: Flag = False  # the wait is long: offer the customer a callback
    estimated_wait_ms: Count = 0  # the same estimate in milliseconds (not rounded)


# --- routing.requests (bot stage -> routing stage), key: domain ---------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RoutingRequested(Event):
    """An escalation: find a human with these skills. The 30-second clock starts here."""

    TYPE: ClassVar[str] = "routing.requested.v1"
    contact_id: Id
    domain: Id
    channel: Channel = Channel.CHAT
    language: Language = Language.ZH
    tier: Tier = Tier.NORMAL
    skills: Levels = field(default_factory=dict)  # extra skills beyond the queue's own
    priority: Priority = 0
    intent: Label = ""
    reason: Label = ""
    queue: Label = ""  # a queue of the routing policy; "" = the domain's default queue
    confidence: Score = 0.0  # the bot's confidence in the intent
    transcript: Transcript = ()  # the conversation with the bot so far (last turns, capped)


@dataclass(frozen=True, slots=True, kw_only=True)
class RoutingRequestedV2(RoutingRequested):
    """Version 2 of the escalation (v1 stays valid): it may name the customer, whose last agent
    is then looked up and recorded, and a preferred agent (the policy's preferred ring)."""

    TYPE: ClassVar[str] = "routing.requested.v2"
    customer_id: Id | None = None
    preferred_agent: Id | None = None  # none: the customer's last agent within the window


# --- agents.events (agent desktops -> routing stage), key: domain -------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentLoggedIn(Event):
    TYPE: ClassVar[str] = "agent.logged_in.v1"
    agent_id: Id
    domain: Id
    skills: Levels
    capacity: Capacity
    ready: Flag = True


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentStateChanged(Event):
    TYPE: ClassVar[str] = "agent.state_changed.v1"
    agent_id: Id
    domain: Id
    state: AgentState
    reason: Label = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class OfferAccepted(Event):
    TYPE: ClassVar[str] = "offer.accepted.v1"
    agent_id: Id
    domain: Id
    offer_id: Id
    contact_id: Id


@dataclass(frozen=True, slots=True, kw_only=True)
class OfferDeclined(Event):
    TYPE: ClassVar[str] = "offer.declined.v1"
    agent_id: Id
    domain: Id
    offer_id: Id
    contact_id: Id
    reason: Label = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ContactCompleted(Event):
    TYPE: ClassVar[str] = "contact.completed.v1"
    agent_id: Id
    domain: Id
    contact_id: Id
    wrap_up: Label = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentLoggedOut(Event):
    TYPE: ClassVar[str] = "agent.logged_out.v1"
    agent_id: Id
    domain: Id


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentProfileChanged(Event):
    """A supervisor or `peakroute agents set` changed an agent's routing profile (issue 9).
    A logged-in agent is seated again with it at once (state and work in progress kept);
    one not logged in gets it at its next login. Audited as ``agent.profile_applied.v1``."""

    TYPE: ClassVar[str] = "agent.profile_changed.v1"
    agent_id: Id
    domain: Id
    skills: Levels
    capacity: Capacity
    changed_by: Id  # who made the change: a supervisor's id, or cli:<user>
    reason: Label = ""


# --- assignments (routing stage -> agent desktops), key: domain ---------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AssignmentOffered(Event):
    TYPE: ClassVar[str] = "assignment.offered.v1"
    offer_id: Id
    contact_id: Id
    agent_id: Id
    domain: Id
    channel: Channel
    expires_at_ms: Ts
    waited_ms: Count = 0
    priority: Priority = 0
    skills: Levels = field(default_factory=dict)
    queue: Label = ""
    preferred: Flag = False  # the agent is the contact's preferred agent (its own ring)
    callback_to: Label = ""  # a callback (channel callback): whom to call back


@dataclass(frozen=True, slots=True, kw_only=True)
class AssignmentRescinded(Event):
    TYPE: ClassVar[str] = "assignment.rescinded.v1"
    offer_id: Id
    contact_id: Id
    agent_id: Id
    domain: Id
    reason: Label


# --- routing.decisions (audit), key: domain -----------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RoutingDecision(Event):
    TYPE: ClassVar[str] = "routing.decision.v1"
    domain: Id
    contact_id: Id
    decision: Decision
    agent_id: Id | None = None
    offer_id: Id | None = None
    waited_ms: Count = 0
    within_target: Flag = False
    reason: Label = ""
    queue: Label = ""
    lane: Label = ""  # queue and language, e.g. refunds.zh
    ring: Count = 0  # the outermost ring open for the contact at this transition


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentProfileApplied(Event):
    """Audit of an ``agent.profile_changed.v1``: who changed which agent's profile, and
    whether it changed a live seat (``logged_in``) or waits for the agent's next login."""

    TYPE: ClassVar[str] = "agent.profile_applied.v1"
    agent_id: Id
    domain: Id
    skills: Levels
    capacity: Capacity
    changed_by: Id
    reason: Label = ""
    logged_in: Flag = False
    source_event_id: Id


# --- deadletter, key: the original key ----------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter(Event):
    """A record the router could not use, kept whole (base64) with the reason."""

    TYPE: ClassVar[str] = "deadletter.v1"
    reason: Label
    detail: str
    source_topic: str
    source_partition: int
    source_offset: int
    original_b64: str
    key_b64: str | None = None


EVENT_TYPES: dict[str, type[Event]] = {
    cls.TYPE: cls
    for cls in (
        ContactArrived, CustomerMessage, CustomerLeft, CustomerCallbackRequested, HumanRequested,
        BotReplied,
        ContactClosed, ContactWaitUpdated, RoutingRequested, RoutingRequestedV2, AgentLoggedIn,
        AgentStateChanged, OfferAccepted, OfferDeclined, ContactCompleted, AgentLoggedOut,
        AssignmentOffered, AssignmentRescinded, RoutingDecision, DeadLetter, AgentProfileChanged,
        AgentProfileApplied,
    )
}

ContactEvent: TypeAlias = ContactArrived | CustomerMessage | CustomerLeft | HumanRequested
RoutingEvent: TypeAlias = RoutingRequested | CustomerLeft | CustomerCallbackRequested
AgentEvent: TypeAlias = (
    AgentLoggedIn | AgentStateChanged | OfferAccepted | OfferDeclined | ContactCompleted
    | AgentLoggedOut | AgentProfileChanged
)

# Which event types each input topic accepts (by logical role, see Settings.topics).
ACCEPTED_ON: dict[str, tuple[type[Event], ...]] = {
    "contacts_inbound": (ContactArrived, CustomerMessage, CustomerLeft, HumanRequested),
    "routing_requests": (RoutingRequested, RoutingRequestedV2, CustomerLeft,
                         CustomerCallbackRequested),
    "agents_events": (
        AgentLoggedIn, AgentStateChanged, OfferAccepted, OfferDeclined, ContactCompleted,
        AgentLoggedOut, AgentProfileChanged,
    ),
}
