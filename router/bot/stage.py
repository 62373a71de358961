"""The bot stage's batch handler: contacts.inbound in; bot.replies (answers, hand-off notices,
closings) and routing.requests (escalations, forwarded customer.left) out.

A batch is one conversation read (pipeline), one classifier call for every text in it, the
pure policy per event in order, and one conversation write (pipeline, a script call per event,
idempotent by event id). A re-delivered event changes no state and counts nothing; its reply
(and, if it escalated, its routing request) is sent again with the same derived ids.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from router import metrics
from router.bot.conversation import (
    Caps,
    Conversation,
    ConversationStore,
    Handled,
    Write,
    advance,
    silence_deadline,
)
from router.bot.kb import Message
from router.bot.loader import Brain, BrainHolder
from router.bot.policy import BotDecision, decide, human_requested, reply_for
from router.bot.scoring import Prediction
from router.decode import Decoder
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
)
from router.routing.store import RoutingStore
from router.settings import Settings
from router.stage import Output, Record, decode_batch, derived_id, now_ms

ROLE = "contacts_inbound"
NO_TEXT = Prediction("", 0.0)  # an arrival without text: nothing to classify

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
        state: dict[Key, Conversation | None] = dict(await self.conversations.load(
            (e.domain, e.contact_id) for e in events if isinstance(e, Spoken)))
        predictions = iter(self._classify(brain, events))
        writes: list[Write] = []
        effects: list[_Effect] = []
        clears: list[Key] = []
        arrivals: list[tuple[str, str, str]] = []
        for event in events:
            if isinstance(event, CustomerLeft):
                key = (event.domain, event.contact_id)
                state[key] = None
                clears.append(key)
                outputs.append(Output("routing_requests", event.domain, event))
                continue
            if not isinstance(event, Spoken):
                continue
            key = (event.domain, event.contact_id)
            conv = state.get(key)
            text = getattr(event, "text", "")
            prediction = (next(predictions) if isinstance(event, ContactArrived | CustomerMessage)
                          and text.strip() else NO_TEXT)
            handled = conv.handled(event.event_id) if conv else None
            if conv is not None and handled is not None:  # re-delivered: say it again
                outputs.extend(self._repeat(event, conv, handled, brain))
                if isinstance(event, ContactArrived):
                    arrivals.append((event.domain, event.contact_id, _outcome(handled.action)))
                continue
            conv = self._before(event, conv)
            if isinstance(event, HumanRequested):
                decision = human_requested(event.language, conv.context(), brain.kb,
                                           brain.config)
            else:
                hits = brain.rules.check(text)
                decision = decide(hits, prediction, event.language, conv.context(), brain.kb,
                                  brain.config)
            customer_text = None if isinstance(event, HumanRequested) else text
            conv = advance(conv, event.event_id, decision, customer_text, now, self.caps)
            state[key] = conv
            writes.append(Write(event.domain, event.contact_id, event.event_id, conv,
                                silence_deadline(conv, self.silence_ms)))
            effects.append(_Effect(decision, event.language.value,
                                   isinstance(event, ContactArrived),
                                   not isinstance(event, HumanRequested)))
            outputs.extend(self._outputs(event, decision, conv, now))
            if isinstance(event, ContactArrived):
                arrivals.append((event.domain, event.contact_id, _outcome(decision.action)))
        applied = await self.conversations.save(writes, clears)
        if arrivals:
            # Counted once per contact even when Kafka re-delivers (the script checks).
            await self.store.record_bot_outcomes(arrivals, now)
        for effect, new in zip(effects, applied, strict=True):
            if new:
                _count(effect)
        return outputs

    async def tick(self) -> list[Output]:
        """Time-driven step: close the contacts whose customers stayed silent after an answer
        (contained: the books already count them so), telling the gateway."""
        now = self.clock()
        kb = self.brains.brain.kb
        out = []
        for c in await self.conversations.close_due(now):
            metrics.BOT_CONTAINED.labels(c.language.value).inc()
            out.append(Output("bot_replies", c.contact_id, ContactClosed(
                event_id=derived_id(f"{c.domain}/{c.contact_id}/{c.last_ms}", "closed"),
                ts_ms=now, contact_id=c.contact_id, domain=c.domain,
                text=kb.message(Message.CLOSED, c.language), intent=c.intent,
                language=kb.language(c.language),
            )))
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
                           channel=event.channel)
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
        request = RoutingRequested(
            event_id=derived_id(event.event_id, "escalate"), ts_ms=esc.ts_ms,
            contact_id=event.contact_id, domain=event.domain, channel=conv.channel,
            language=event.language, tier=conv.tier, skills=dict(esc.skills),
            priority=esc.priority, intent=esc.intent, reason=esc.reason, queue=esc.queue,
            confidence=min(max(round(esc.confidence, 4), 0.0), 1.0),
            transcript=conv.transcript,
        )
        return Output("routing_requests", event.domain, request)

    def _repeat(self, event: Spoken, conv: Conversation, handled: Handled,
                brain: Brain) -> list[Output]:
        """The outputs of an event handled before, again, with the same ids."""
        text = reply_for(handled.action, handled.intent, handled.reason, event.language,
                         brain.kb)
        out = [Output("bot_replies", event.contact_id, BotReplied(
            event_id=derived_id(event.event_id, "reply"), ts_ms=conv.last_ms,
            contact_id=event.contact_id, domain=event.domain, text=text, intent=handled.intent,
            action=handled.action, language=brain.kb.language(event.language),
        ))]
        if handled.escalated and conv.escalation is not None:
            out.append(self._request(event, conv))
        return out


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
