"""The bot stage's batch handler: contacts.inbound in, bot.replies and routing.requests out."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from router import metrics
from router.bot.policy import BotDecision, decide, escalation
from router.decode import Decoder
from router.events import (
    BotAction,
    BotReplied,
    Channel,
    ContactArrived,
    CustomerLeft,
    CustomerMessage,
    Event,
    HumanRequested,
    RoutingRequested,
    Tier,
)
from router.routing.store import RoutingStore
from router.stage import Output, Record, decode_batch, derived_id, now_ms

ROLE = "contacts_inbound"


class BotStage:
    def __init__(self, store: RoutingStore, decoder: Decoder,
                 clock: Callable[[], int] = now_ms) -> None:
        self.store = store
        self.decoder = decoder
        self.clock = clock

    async def handle(self, records: Sequence[Record]) -> list[Output]:
        decoded, outputs = decode_batch(self.decoder, ROLE, records, "bot", self.clock)
        now = self.clock()
        arrivals: list[tuple[str, str, str]] = []
        for _, event in decoded:
            outputs.extend(self._respond(event, now, arrivals))
        if arrivals:
            # Counted once per contact even when Kafka re-delivers; replies are re-sent anyway
            # (their ids are derived, so a gateway can drop the repeat).
            await self.store.record_bot_outcomes(arrivals, now)
        return outputs

    def _respond(self, event: Event, now: int,
                 arrivals: list[tuple[str, str, str]]) -> list[Output]:
        match event:
            case ContactArrived():
                decision = decide(event.text, event.language, event.tier)
                outcome = "contained" if decision.action == BotAction.ANSWERED else "escalating"
                arrivals.append((event.domain, event.contact_id, outcome))
                return self._outputs(event, decision, now, event.tier)
            case CustomerMessage():
                decision = decide(event.text, event.language)
                return self._outputs(event, decision, now, Tier.NORMAL)
            case HumanRequested():
                decision = escalation(event.language, Tier.NORMAL, "human_requested")
                return self._outputs(event, decision, now, Tier.NORMAL)
            case CustomerLeft():
                return [Output("routing_requests", event.domain, event)]
        return []

    def _outputs(self, event: ContactArrived | CustomerMessage | HumanRequested,
                 decision: BotDecision, now: int, tier: Tier) -> list[Output]:
        metrics.BOT_DECISIONS.labels(decision.action.value, decision.intent).inc()
        reply = BotReplied(
            event_id=derived_id(event.event_id, "reply"), ts_ms=now,
            contact_id=event.contact_id, domain=event.domain, text=decision.reply,
            intent=decision.intent, action=decision.action, language=event.language,
        )
        out = [Output("bot_replies", event.contact_id, reply)]
        if decision.action == BotAction.ESCALATED:
            request = RoutingRequested(
                event_id=derived_id(event.event_id, "escalate"), ts_ms=now,
                contact_id=event.contact_id, domain=event.domain,
                channel=event.channel if isinstance(event, ContactArrived) else Channel.CHAT,
                language=event.language, tier=tier, skills=decision.skills,
                priority=decision.priority, intent=decision.intent, reason=decision.reason,
            )
            out.append(Output("routing_requests", event.domain, request))
        return out
