"""Conversation state of the bot in Redis, and its outbox.

One hash per contact, ``pb:{<domain>/<contact_id>}`` (its own hash tag: conversations spread
over a Redis Cluster's slots): language, tier, channel, phase, last intent and confidence, turn
count, a capped transcript as JSON, last activity, the escalation, every event id handled
(``ids``), and the outbox: the records an event produced (``ob:<event id>``) or the silence
close (``ob:close``), kept until Kafka has them. It expires ``bot_conversation_ttl_s`` after the
last message. Per domain, a zset of silence deadlines (``pb:{d:<domain>}:due``) that the timer
scans, and the set of domains (``pb:domains``).

The pure half (``Conversation``, ``advance``, field encoding) computes the next state; the
store writes it with one script call per event (idempotent by event id: a handled event gets
its kept records back, or nothing once Kafka has them), in one pipeline.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from router.bot.policy import BotDecision, Context, Phase
from router.events import Channel, Language, Speaker, Tier, Turn
from router.redis_client import check_waits, load_scripts, queue_wait

DOMAINS_KEY = "pb:domains"  # set of domains with bot conversations (for the tick)
CLOSE_BATCH = 500  # silence closes per domain per tick
OUTBOX_FIELD = "ob:"  # + event id: the records the event produced, until Kafka has them
CLOSE_FIELD = "ob:close"  # the silence close, until Kafka has it


def conversation_key(domain: str, contact_id: str) -> str:
    return f"pb:{{{domain}/{contact_id}}}"


def conversation_pattern(domain: str) -> str:
    """A SCAN pattern for every conversation of a domain (tools)."""
    return f"pb:{{{domain}/*"


def due_key(domain: str) -> str:
    return f"pb:{{d:{domain}}}:due"


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
    escalation: Escalated | None = None
    customer: str = ""  # the arrival's customer_id: the escalation names it (last agent)

    def context(self) -> Context:
        return Context(self.phase, self.intent, self.confidence, self.rephrases, self.tier)


@dataclass(frozen=True, slots=True)
class Caps:
    """Bounds on what a conversation keeps (from settings)."""

    turns: int
    turn_chars: int


def advance(conv: Conversation, decision: BotDecision, customer_text: str | None,
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
    return replace(
        conv,
        phase=decision.phase,
        intent=decision.intent if decision.phase != Phase.REPHRASE else conv.intent,
        confidence=decision.confidence,
        rephrases=conv.rephrases + (decision.phase == Phase.REPHRASE),
        turns=conv.turns + (customer_text is not None),
        transcript=tuple(turns[-caps.turns:]),
        last_ms=now_ms,
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
        "esc": orjson.dumps(conv.escalation).decode() if conv.escalation else "",
        "cust": conv.customer,
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
        escalation=Escalated(**esc) if esc else None,
        customer=f.get("cust", ""),
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True, slots=True)
class Loaded:
    """A conversation as the batch finds it: its state, the event ids it handled, and the
    records still kept in its outbox (event id -> the records, as ``Kept`` encodes them)."""

    conversation: Conversation | None
    handled: frozenset[str] = frozenset()
    kept: Mapping[str, bytes] = field(default_factory=dict)


def load_fields(raw: Mapping[Any, Any]) -> Loaded:
    f = {_text(k): v for k, v in raw.items()}
    # Silence closed it: the next message starts a new conversation (event ids stay).
    conv = None if CLOSE_FIELD in f else decode_fields(raw)
    ids = frozenset(_text(f.get("ids", b"")).split())
    kept = {k[len(OUTBOX_FIELD):]: v if isinstance(v, bytes) else str(v).encode()
            for k, v in f.items() if k.startswith(OUTBOX_FIELD) and k != CLOSE_FIELD}
    return Loaded(conv, ids, kept)


@dataclass(frozen=True, slots=True)
class Write:
    """One event's effect on one conversation, and the records it produced (kept until
    Kafka has them)."""

    domain: str
    contact_id: str
    event_id: str
    conversation: Conversation
    deadline_ms: int | None
    records: bytes


@dataclass(frozen=True, slots=True)
class Saved:
    """What writing one event did: applied, or the event was handled before (``kept``: its
    records if they are still in the outbox, None if Kafka has them)."""

    applied: bool
    kept: bytes | None = None


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
    wait_replicas: int = 0  # PEAKROUTE_REDIS_WAIT_REPLICAS (router/redis_client.queue_wait)
    wait_timeout_ms: int = 1000
    _scripts: dict[str, AsyncScript] = field(default_factory=dict)
    _acks: set[tuple[str, str]] = field(default_factory=set)  # (conversation key, field)

    def __post_init__(self) -> None:
        self._scripts = {name: self.redis.register_script(_read_script(name))
                         for name in ("turn", "close")}

    def _call(self, pipe: Any, name: str, keys: Sequence[str], *args: Any) -> None:
        pipe.evalsha(self._scripts[name].sha, len(keys), *keys, *args)

    async def _execute(self, build: Callable[[Any], None]) -> list[Any]:
        """A pipeline of what ``build`` queues, sent in one round trip. A Redis that lost the
        scripts (a restart, a replica promoted in a Cluster failover) answers NOSCRIPT: they
        are loaded (on every primary of a Cluster) and the pipeline is sent again whole, which
        is safe because every command in it is idempotent (the scripts by event id)."""
        for attempt in (1, 2):
            pipe = self.redis.pipeline(transaction=False)
            build(pipe)
            if not len(pipe):
                return []
            try:
                return list(await pipe.execute())
            except NoScriptError:
                if attempt == 2:
                    raise
                await load_scripts(self.redis, (s.script for s in self._scripts.values()))
        raise AssertionError("unreachable")

    def ack(self, entries: Iterable[tuple[str, str]]) -> None:
        """Kafka has these records ((conversation key, outbox field)): delete them with the
        next write (or the next tick)."""
        self._acks.update(entries)

    def _queue_acks(self, pipe: Any, acks: set[tuple[str, str]]) -> None:
        for conv_key, name in sorted(acks):
            if name == CLOSE_FIELD:  # the conversation ended: it goes, its deadline too
                domain, _, cid = conv_key[len("pb:{"):-1].partition("/")
                self._call(pipe, "close", [conv_key], "ack", 0, 0)
                pipe.zrem(due_key(domain), cid)
            else:
                pipe.hdel(conv_key, name)

    async def load(self, contacts: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Loaded]:
        """(domain, contact_id) -> its conversation, handled ids and kept records."""
        keys = list(dict.fromkeys(contacts))
        if not keys:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for domain, cid in keys:
            pipe.hgetall(conversation_key(domain, cid))
        rows = await pipe.execute()
        return {k: load_fields(row) for k, row in zip(keys, rows, strict=True)}

    async def save(self, writes: Sequence[Write], clears: Sequence[tuple[str, str]] = ()
                   ) -> list[Saved]:
        """Apply the writes in order, then delete the cleared conversations (customer left).
        Beside the scripts: the domains are registered (Redis may have lost them), the silence
        deadlines set, and outbox records Kafka has deleted. Every command touches one key (one
        Cluster slot)."""
        acks, self._acks = self._acks, set()
        head = waits = 0

        def build(pipe: Any) -> None:
            nonlocal head, waits
            self._queue_acks(pipe, acks)
            head = len(pipe)
            domains = sorted({w.domain for w in writes})
            if domains:
                pipe.sadd(DOMAINS_KEY, *domains)
                head += 1
            for w in writes:
                fields = [x for kv in encode(w.conversation).items() for x in kv]
                self._call(pipe, "turn", [conversation_key(w.domain, w.contact_id)],
                           w.event_id, self.ttl_s, w.records, *fields)
            # Beside the turns, not inside: another key (and Cluster slot). Each conversation's
            # deadline as its last write of the batch leaves it, one command per domain.
            deadlines = {(w.domain, w.contact_id): w.deadline_ms for w in writes}
            due: dict[str, dict[str, int]] = {}
            gone: dict[str, list[str]] = {}
            for (domain, cid), deadline in deadlines.items():
                if deadline is None:
                    gone.setdefault(domain, []).append(cid)
                else:
                    due.setdefault(domain, {})[cid] = deadline
            for domain, cids in gone.items():
                pipe.zrem(due_key(domain), *cids)
            for domain, mapping in due.items():
                pipe.zadd(due_key(domain), mapping)
            for domain, cid in clears:
                pipe.delete(conversation_key(domain, cid))
                pipe.zrem(due_key(domain), cid)
            waits = queue_wait(pipe, self.redis, [
                *(conversation_key(w.domain, w.contact_id) for w in writes),
                *(due_key(d) for d in domains),
                *(k for d, c in clears for k in (conversation_key(d, c), due_key(d)))],
                self.wait_replicas, self.wait_timeout_ms)

        try:
            results = await self._execute(build)
            check_waits(results[len(results) - waits:], self.wait_replicas)
        except Exception:
            self._acks |= acks
            raise
        out = []
        for r in results[head:head + len(writes)]:
            applied = int(r[0]) == 1
            kept = r[1] if len(r) > 1 and not applied else None
            out.append(Saved(applied, kept))
        return out

    async def close_due(self, now_ms: int, silence_ms: int) -> list[Closed]:
        """Close every conversation whose silence deadline passed (at most CLOSE_BATCH per
        domain per call): each is marked closed with its close kept in its outbox, in one step
        per conversation, so a close whose record never reached Kafka is found again (and the
        conversation goes once Kafka has it: ``ack``)."""
        acks, self._acks = self._acks, set()
        try:
            await self._execute(lambda pipe: self._queue_acks(pipe, acks))
        except Exception:
            self._acks |= acks
            raise
        domains = sorted(_text(d) for d in await self.redis.smembers(DOMAINS_KEY))
        if not domains:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for domain in domains:
            pipe.zrangebyscore(due_key(domain), "-inf", now_ms, start=0, num=CLOSE_BATCH)
        due = [(d, _text(c)) for d, cids in zip(domains, await pipe.execute(), strict=True)
               for c in cids]
        if not due:
            return []

        def closes(pipe: Any) -> None:
            for domain, cid in due:
                self._call(pipe, "close", [conversation_key(domain, cid)], "close", now_ms,
                           silence_ms)

        results = await self._execute(closes)
        out: list[Closed] = []
        pipe = self.redis.pipeline(transaction=False)
        for (domain, cid), row in zip(due, results, strict=True):
            if not row:  # gone, or a person has it now: not the bot's to close
                pipe.zrem(due_key(domain), cid)
            elif _text(row[0]) == "wait":  # it spoke again: the deadline moved
                pipe.zadd(due_key(domain), {cid: int(_text(row[1]))})
            else:
                out.append(Closed(domain, cid, Language(_text(row[1])), _text(row[2]),
                                  int(_text(row[3]))))
        if len(pipe):
            await pipe.execute()
        return out


def _read_script(name: str) -> str:
    return resources.files("router.bot").joinpath("scripts", f"{name}.lua").read_text()
