"""The bot stage's batch handler: contacts.inbound in; bot.replies (answers, hand-off notices,
closings) and routing.requests (escalations, forwarded customer.left) out.

A batch is one conversation read (pipeline), one classifier call for every text in it, the
pure policy per event in order, and one conversation write (pipeline, a script call per event,
idempotent by event id) that keeps each event's records in the conversation's outbox until
Kafka has them. A re-delivered or retried event changes no state and counts nothing: while its
records are kept they are sent again as they were (same ids), after that nothing is.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import orjson

from router import metrics
from router.bot.conversation import (
    CLOSE_FIELD,
    OUTBOX_FIELD,
    Caps,
    Conversation,
    ConversationStore,
    Loaded,
    Write,
    advance,
    conversation_key,
    silence_deadline,
)
from router.bot.kb import Message
from router.bot.loader import Brain, BrainHolder
from router.bot.policy import BotDecision, decide, human_requested
from router.bot.scoring import Prediction
from router.decode import Decoder, Limits, Rejection
from router.events import (
    BotAction,
    BotReplied,
    ContactArrived,
    ContactClosed,
    CustomerLeft,
    CustomerMessage,
    Event,
    HumanRequested,
    RoutingRequested,
    RoutingRequestedV2,
)
from router.routing.store import RoutingStore
from router.settings import Settings
from router.stage import Output, Record, decode_batch, derived_id, now_ms, outbox_entries

ROLE = "contacts_inbound"
NO_TEXT = Prediction("", 0.0)  # an arrival without text: nothing to classify
# Kept records are the stage's own outputs: read back without the input limits.
_KEPT = Decoder(Limits(max_record_bytes=2**31, max_text_chars=2**31))

Spoken = ContactArrived | CustomerMessage | HumanRequested
Key = tuple[str, str]  # (domain, contact_id)


@dataclass(frozen=True, slots=True)
class _Effect:
    """What one newly handled event counts once its write is applied."""

    decision: BotDecision
    language: str
    arrival: bool
    message: bool


class BotStage:
    def __init__(self, store: RoutingStore, conversations: ConversationStore,
                 brains: BrainHolder, decoder: Decoder, settings: Settings,
                 clock: Callable[[], int] = now_ms) -> None:
        self.store = store
        self.conversations = conversations
        self.brains = brains
        self.decoder = decoder
        self.clock = clock
        self.caps = Caps(settings.bot_transcript_turns, settings.bot_transcript_turn_chars)
        self.silence_ms = int(settings.bot_silence_close_s * 1000)

    async def handle(self, records: Sequence[Record]) -> list[Output]:
        decoded, outputs = decode_batch(self.decoder, ROLE, records, "bot", self.clock)
        now = self.clock()
        brain = self.brains.brain
        events = [event for _, event in decoded]
        loaded = await self.conversations.load(
            (e.domain, e.contact_id) for e in events if isinstance(e, Spoken))
        state: dict[Key, Conversation | None] = {k: v.conversation for k, v in loaded.items()}
        predictions = iter(self._classify(brain, events))
        # The phrase rules and the hand-off detector, for every text of the batch at once.
        hits_of = dict(zip(
            (i for i, e in enumerate(events) if isinstance(e, ContactArrived | CustomerMessage)),
            brain.rules.check_batch([e.text for e in events
                                     if isinstance(e, ContactArrived | CustomerMessage)]),
            strict=True))
        writes: list[Write] = []
        pending: list[tuple[_Effect, list[Output], Spoken]] = []
        clears: list[Key] = []
        arrivals: list[tuple[str, str, str]] = []
        seen: set[str] = set()
        for index, event in enumerate(events):
            if isinstance(event, CustomerLeft):
                key = (event.domain, event.contact_id)
                state[key] = None
                clears.append(key)
                outputs.append(Output("routing_requests", event.domain, event))
                continue
            if not isinstance(event, Spoken):
                continue
            key = (event.domain, event.contact_id)
            text = getattr(event, "text", "")
            prediction = (next(predictions) if isinstance(event, ContactArrived | CustomerMessage)
                          and text.strip() else NO_TEXT)
            done = loaded.get(key, Loaded(None))
            if event.event_id in done.handled or event.event_id in seen:
                # Handled before: its kept records again, or nothing once Kafka has them.
                kept = done.kept.get(event.event_id)
                if kept is not None:
                    outputs.extend(self._replay(event, kept, arrivals))
                continue
            seen.add(event.event_id)
            conv = self._before(event, state.get(key))
            if isinstance(event, HumanRequested):
                decision = human_requested(event.language, conv.context(), brain.kb,
                                           brain.config)
            else:
                hits = hits_of[index]
                decision = decide(hits, prediction, event.language, conv.context(), brain.kb,
                                  brain.config)
            customer_text = None if isinstance(event, HumanRequested) else text
            conv = advance(conv, decision, customer_text, now, self.caps)
            state[key] = conv
            produced = _serialized(self._outputs(event, decision, conv, now))
            writes.append(Write(event.domain, event.contact_id, event.event_id, conv,
                                silence_deadline(conv, self.silence_ms), _keep(produced)))
            pending.append((_Effect(decision, event.language.value,
                                    isinstance(event, ContactArrived),
                                    not isinstance(event, HumanRequested)), produced, event))
            if isinstance(event, ContactArrived):
                arrivals.append((event.domain, event.contact_id, _outcome(decision.action)))
        saved = await self.conversations.save(writes, clears)
        for (effect, produced, event), result in zip(pending, saved, strict=True):
            if result.applied:
                _count(effect)
                outputs.extend(_boxed(produced, event))
            elif result.kept is not None:  # another worker handled it meanwhile
                outputs.extend(self._replay(event, result.kept, []))
        if arrivals:
            # Counted once per contact even when Kafka re-delivers (the script checks).
            await self.store.record_bot_outcomes(arrivals, now)
        return outputs

    def delivered(self, outputs: Sequence[Output]) -> None:
        """Kafka has these records: their outbox entries can go."""
        self.conversations.ack(outbox_entries(outputs))

    def _replay(self, event: Spoken, kept: bytes,
                arrivals: list[tuple[str, str, str]]) -> list[Output]:
        """The kept records of an event handled before, as they were."""
        out = []
        box = (conversation_key(event.domain, event.contact_id), OUTBOX_FIELD + event.event_id)
        for role, key, raw in orjson.loads(kept):
            decoded = _KEPT.decode(raw.encode())
            if isinstance(decoded, Rejection):  # cannot happen: the stage wrote it
                continue
            out.append(Output(role, key, decoded, box))
            if isinstance(event, ContactArrived) and isinstance(decoded, BotReplied):
                arrivals.append((event.domain, event.contact_id, _outcome(decoded.action)))
        return out

    async def tick(self) -> list[Output]:
        """Time-driven step: close the contacts whose customers stayed silent after an answer
        (contained: the books already count them so), telling the gateway. A close is kept
        until Kafka has it, so one whose record was lost is sent again."""
        now = self.clock()
        kb = self.brains.brain.kb
        out = []
        for c in await self.conversations.close_due(now, self.silence_ms):
            metrics.BOT_CONTAINED.labels(c.language.value).inc()
            out.append(Output("bot_replies", c.contact_id, ContactClosed(
                event_id=derived_id(f"{c.domain}/{c.contact_id}/{c.last_ms}", "closed"),
                ts_ms=now, contact_id=c.contact_id, domain=c.domain,
                text=kb.message(Message.CLOSED, c.language), intent=c.intent,
                language=kb.language(c.language),
            ), (conversation_key(c.domain, c.contact_id), CLOSE_FIELD)))
        return out

    def _classify(self, brain: Brain, events: Sequence[Event]) -> list[Prediction]:
        """Every text of the batch in one predict call."""
        texts = [e.text for e in events
                 if isinstance(e, ContactArrived | CustomerMessage) and e.text.strip()]
        if not texts:
            return []
        started = time.perf_counter()
        predictions = brain.classifier.predict_batch(texts)
        metrics.BOT_CLASSIFICATION_SECONDS.observe(time.perf_counter() - started)
        return predictions

    @staticmethod
    def _before(event: Spoken, conv: Conversation | None) -> Conversation:
        """The conversation as this event finds it (a new one for a first event)."""
        base = conv or Conversation(language=event.language)
        if isinstance(event, ContactArrived):
            return replace(base, language=event.language, tier=event.tier,
                           channel=event.channel, customer=event.customer_id)
        return replace(base, language=event.language)

    def _outputs(self, event: Spoken, decision: BotDecision, conv: Conversation,
                 now: int) -> list[Output]:
        reply = BotReplied(
            event_id=derived_id(event.event_id, "reply"), ts_ms=now,
            contact_id=event.contact_id, domain=event.domain, text=decision.reply,
            intent=decision.intent, action=decision.action, language=decision.language,
        )
        out = [Output("bot_replies", event.contact_id, reply)]
        if decision.new_escalation:
            out.append(self._request(event, conv))
        return out

    @staticmethod
    def _request(event: Spoken, conv: Conversation) -> Output:
        """The routing request of the contact's escalation (its time is the escalation's: the
        30-second clock starts there, also when a repeat sends it again)."""
        esc = conv.escalation
        assert esc is not None  # advance() records it with every new escalation
        # Version 2 names the customer (the routing stage prefers their last agent); a
        # conversation kept from before the customer was recorded sends version 1.
        kind = RoutingRequestedV2 if conv.customer else RoutingRequested
        extra = {"customer_id": conv.customer} if conv.customer else {}
        request = kind(
            **extra,
            event_id=derived_id(event.event_id, "escalate"), ts_ms=esc.ts_ms,
            contact_id=event.contact_id, domain=event.domain, channel=conv.channel,
            language=event.language, tier=conv.tier, skills=dict(esc.skills),
            priority=esc.priority, intent=esc.intent, reason=esc.reason, queue=esc.queue,
            confidence=min(max(round(esc.confidence, 4), 0.0), 1.0),
            transcript=conv.transcript,
        )
        return Output("routing_requests", event.domain, request)


def _keep(outputs: Sequence[Output]) -> bytes:
    """An event's records as its outbox keeps them: [role, key, event JSON] each."""
    return orjson.dumps([[o.role, o.key, o.value().decode()] for o in outputs])


def _serialized(outputs: Sequence[Output]) -> list[Output]:
    """The outputs with their JSON made once (the outbox keeps it, the producer sends it)."""
    return [Output(o.role, o.key, o.event, o.outbox, o.event.to_json()) for o in outputs]


def _boxed(outputs: Sequence[Output], event: Spoken) -> list[Output]:
    box = (conversation_key(event.domain, event.contact_id), OUTBOX_FIELD + event.event_id)
    return [Output(o.role, o.key, o.event, box, o.raw) for o in outputs]


def _outcome(action: BotAction) -> str:
    return "contained" if action == BotAction.ANSWERED else "escalating"


def _count(effect: _Effect) -> None:
    d = effect.decision
    metrics.BOT_DECISIONS.labels(d.action.value, d.intent).inc()
    if effect.message:
        metrics.BOT_INTENTS.labels(d.intent, effect.language).inc()
    if effect.arrival:
        metrics.BOT_CONTACTS.labels(effect.language).inc()
    if d.new_escalation:
        metrics.BOT_ESCALATIONS.labels(d.reason, effect.language).inc()
