"""Conversation state of the bot in Redis: one hash per contact under the domain's hash tag,
``pr:{d:<domain>}:bot:<contact_id>`` (language, tier, channel, phase, last intent and
confidence, turn count, a capped transcript as JSON, last activity, recently handled event ids,
the escalation), with a TTL; plus a per-domain zset of silence deadlines,
``pr:{d:<domain>}:botdue``, that the time-driven tick scans.

The pure half (``Conversation``, ``advance``, field encoding) computes the next state; the
store writes it with one script call per event (idempotent by event id) in one pipeline.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from router.bot.policy import BotDecision, Context, Phase
from router.events import BotAction, Channel, Language, Speaker, Tier, Turn

DOMAINS_KEY = "pr:bot:domains"  # set of domains with bot conversations (for the tick)
SEEN_CAP = 16  # event ids remembered per conversation: Kafka re-delivers a recent suffix
CLOSE_BATCH = 500  # silence closes per domain per tick


def conversation_prefix(domain: str) -> str:
    return f"pr:{{d:{domain}}}:bot:"


def due_key(domain: str) -> str:
    return f"pr:{{d:{domain}}}:botdue"


@dataclass(frozen=True, slots=True)
class Handled:
    """What the bot did with one event: enough to send the same reply again on a repeat."""

    event_id: str
    action: BotAction
    intent: str
    reason: str
    escalated: bool  # this event escalated the contact (re-send the routing request)


@dataclass(frozen=True, slots=True)
class Escalated:
    """The routing request the contact was escalated with."""

    queue: str
    skills: Mapping[str, int]
    priority: int
    intent: str
    reason: str
    confidence: float
    ts_ms: int


@dataclass(frozen=True, slots=True)
class Conversation:
    language: Language = Language.ZH
    tier: Tier = Tier.NORMAL
    channel: Channel = Channel.CHAT
    phase: Phase = Phase.NEW
    intent: str = ""
    confidence: float = 0.0
    rephrases: int = 0
    turns: int = 0  # customer messages handled
    transcript: tuple[Turn, ...] = ()
    last_ms: int = 0
    seen: tuple[Handled, ...] = ()
    escalation: Escalated | None = None

    def context(self) -> Context:
        return Context(self.phase, self.intent, self.confidence, self.rephrases, self.tier)

    def handled(self, event_id: str) -> Handled | None:
        return next((h for h in self.seen if h.event_id == event_id), None)


@dataclass(frozen=True, slots=True)
class Caps:
    """Bounds on what a conversation keeps (from settings)."""

    turns: int
    turn_chars: int


def advance(conv: Conversation, event_id: str, decision: BotDecision, customer_text: str | None,
            now_ms: int, caps: Caps) -> Conversation:
    """The conversation after the bot's decision on one event (``customer_text`` None for a
    button press such as "talk to a person")."""
    turns = list(conv.transcript)
    if customer_text is not None:
        turns.append(Turn(Speaker.CUSTOMER, customer_text[:caps.turn_chars], now_ms))
    turns.append(Turn(Speaker.BOT, decision.reply[:caps.turn_chars], now_ms))
    escalation = conv.escalation
    if decision.new_escalation:
        escalation = Escalated(decision.queue, dict(decision.skills), decision.priority,
                               decision.intent, decision.reason, decision.confidence, now_ms)
    handled = Handled(event_id, decision.action, decision.intent, decision.reason,
                      decision.new_escalation)
    return replace(
        conv,
        phase=decision.phase,
        intent=decision.intent if decision.phase != Phase.REPHRASE else conv.intent,
        confidence=decision.confidence,
        rephrases=conv.rephrases + (decision.phase == Phase.REPHRASE),
        turns=conv.turns + (customer_text is not None),
        transcript=tuple(turns[-caps.turns:]),
        last_ms=now_ms,
        seen=(*conv.seen, handled)[-SEEN_CAP:],
        escalation=escalation,
    )


def silence_deadline(conv: Conversation, silence_ms: int) -> int | None:
    """When silence closes the contact: only while the bot holds it (answered, rephrase)."""
    if conv.phase in (Phase.ANSWERED, Phase.REPHRASE):
        return conv.last_ms + silence_ms
    return None


def encode(conv: Conversation) -> dict[str, str]:
    """The hash fields of a conversation."""
    return {
        "lang": conv.language.value, "tier": conv.tier.value, "chan": conv.channel.value,
        "phase": conv.phase.value, "intent": conv.intent, "conf": repr(conv.confidence),
        "reph": str(conv.rephrases), "turns": str(conv.turns), "last": str(conv.last_ms),
        "tx": orjson.dumps(conv.transcript).decode(),
        "seen": orjson.dumps([[h.event_id, h.action.value, h.intent, h.reason, h.escalated]
                              for h in conv.seen]).decode(),
        "esc": orjson.dumps(conv.escalation).decode() if conv.escalation else "",
        # The same ids, space-delimited, for turn.lua's exact match (ids have no spaces).
        "ids": " " + " ".join(h.event_id for h in conv.seen) + " ",
    }


def decode_fields(raw: Mapping[Any, Any]) -> Conversation | None:
    """A conversation from its hash fields (None if the hash is empty: none or expired)."""
    if not raw:
        return None
    f = {_text(k): _text(v) for k, v in raw.items()}
    esc = orjson.loads(f["esc"]) if f.get("esc") else None
    return Conversation(
        language=Language(f.get("lang", Language.ZH.value)),
        tier=Tier(f.get("tier", Tier.NORMAL.value)),
        channel=Channel(f.get("chan", Channel.CHAT.value)),
        phase=Phase(f.get("phase", Phase.NEW.value)),
        intent=f.get("intent", ""),
        confidence=float(f.get("conf", "0")),
        rephrases=int(f.get("reph", "0")),
        turns=int(f.get("turns", "0")),
        transcript=tuple(Turn(Speaker(t["speaker"]), t["text"], int(t["ts_ms"]))
                         for t in orjson.loads(f.get("tx", "[]"))),
        last_ms=int(f.get("last", "0")),
        seen=tuple(Handled(e, BotAction(a), i, r, bool(x))
                   for e, a, i, r, x in orjson.loads(f.get("seen", "[]"))),
        escalation=Escalated(**esc) if esc else None,
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True, slots=True)
class Write:
    """One event's effect on one conversation."""

    domain: str
    contact_id: str
    event_id: str
    conversation: Conversation
    deadline_ms: int | None


@dataclass(frozen=True, slots=True)
class Closed:
    """A conversation that silence closed."""

    domain: str
    contact_id: str
    language: Language
    intent: str
    last_ms: int  # the last activity before the silence (makes the closing event's id)


@dataclass
class ConversationStore:
    """Reads and writes conversations; every call is one pipeline (one round trip)."""

    redis: aioredis.Redis
    ttl_s: int
    _scripts: dict[str, AsyncScript] = field(default_factory=dict)
    _known_domains: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._scripts = {name: self.redis.register_script(_read_script(name))
                         for name in ("turn", "close")}

    def _call(self, pipe: Any, name: str, keys: Sequence[str], *args: Any) -> None:
        script = self._scripts[name]
        pipe.scripts.add(script)  # the pipeline loads it first if Redis lost it (restart)
        pipe.evalsha(script.sha, len(keys), *keys, *args)

    async def load(self, contacts: Iterable[tuple[str, str]]
                   ) -> dict[tuple[str, str], Conversation | None]:
        """(domain, contact_id) -> its conversation, or None if it has none."""
        keys = list(dict.fromkeys(contacts))
        if not keys:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for domain, cid in keys:
            pipe.hgetall(conversation_prefix(domain) + cid)
        rows = await pipe.execute()
        return {k: decode_fields(row) for k, row in zip(keys, rows, strict=True)}

    async def save(self, writes: Sequence[Write], clears: Sequence[tuple[str, str]] = ()
                   ) -> list[bool]:
        """Apply the writes in order (True where new, False for a repeated event id), then
        delete the cleared conversations (customer left)."""
        if not writes and not clears:
            return []
        pipe = self.redis.pipeline(transaction=False)
        new_domains = {w.domain for w in writes} - self._known_domains
        if new_domains:
            pipe.sadd(DOMAINS_KEY, *new_domains)
        for w in writes:
            fields = [x for kv in encode(w.conversation).items() for x in kv]
            deadline = "" if w.deadline_ms is None else str(w.deadline_ms)
            self._call(pipe, "turn", [conversation_prefix(w.domain) + w.contact_id,
                                      due_key(w.domain)],
                       w.event_id, w.contact_id, self.ttl_s, deadline, *fields)
        for domain, cid in clears:
            pipe.delete(conversation_prefix(domain) + cid)
            pipe.zrem(due_key(domain), cid)
        results = await pipe.execute()
        self._known_domains |= new_domains
        start = 1 if new_domains else 0
        return [bool(r) for r in results[start:start + len(writes)]]

    async def close_due(self, now_ms: int) -> list[Closed]:
        """Take every conversation whose silence deadline passed (at most CLOSE_BATCH per
        domain per call) out of Redis, atomically per domain."""
        domains = sorted(_text(d) for d in await self.redis.smembers(DOMAINS_KEY))
        if not domains:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for domain in domains:
            self._call(pipe, "close", [due_key(domain)], conversation_prefix(domain), now_ms,
                       CLOSE_BATCH)
        results = await pipe.execute()
        return [Closed(domain, _text(row[0]), Language(_text(row[1])), _text(row[2]),
                       int(_text(row[3])))
                for domain, rows in zip(domains, results, strict=True) for row in rows]


def _read_script(name: str) -> str:
    return resources.files("router.bot").joinpath("scripts", f"{name}.lua").read_text()
