"""The routing stage's batch handlers: routing.requests and agents.events in; assignments and
routing.decisions (the audit log) out; plus the time-driven offer-expiry step."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from router import metrics
from router.decode import Decoder, Reason, Rejection
from router.errors import PolicyError
from router.events import (
    AgentProfileApplied,
    AgentProfileChanged,
    AssignmentOffered,
    AssignmentRescinded,
    Channel,
    Decision,
    Event,
    RoutingDecision,
)
from router.routing.policy import lane_skills
from router.routing.store import RoutingStore, Transition
from router.stage import Output, Record, decode_batch, derived_id, now_ms, to_deadletter

# Script transition kind -> audit decision (kinds not listed change no contact: no audit).
DECISIONS = {
    "queued": Decision.QUEUED,
    "offered": Decision.OFFERED,
    "answered": Decision.ACCEPTED,
    "declined": Decision.DECLINED,
    "expired": Decision.EXPIRED,
    "rescinded": Decision.RESCINDED,
    "relaxed": Decision.RELAXED,
    "abandoned": Decision.ABANDONED,
    "completed": Decision.COMPLETED,
}
RESCIND_REASONS = {"declined": "declined", "expired": "no_answer", "rescinded": "withdrawn"}


def transition_outputs(t: Transition, now: int, skills: dict[str, int] | None = None
                       ) -> list[Output]:
    """The events one transition publishes: an audit record, and what the agent must hear
    (``skills``: what the contact's lane asks for, named in an offer)."""
    metrics.TRANSITIONS.labels(t.kind).inc()
    decision = DECISIONS.get(t.kind)
    if decision is None:
        return []
    base = f"{t.domain}/{t.contact_id}/{t.offer_id}"
    if t.kind in {"relaxed", "queued"}:  # a contact may relax and re-queue several times
        base = f"{base}/{t.seq}"
    out = [Output("routing_decisions", t.domain, RoutingDecision(
        event_id=derived_id(base, t.kind), ts_ms=now, domain=t.domain, contact_id=t.contact_id,
        decision=decision, agent_id=t.agent_id or None, offer_id=t.offer_id or None,
        waited_ms=max(t.waited_ms, 0), within_target=t.within_target, reason=t.reason,
        queue=t.queue, lane=t.lane, ring=t.ring,
    ))]
    if t.kind == "answered":
        metrics.ANSWER_WAIT.labels(t.domain, t.queue).observe(max(t.waited_ms, 0) / 1000)
    elif t.kind == "offered":
        out.append(Output("assignments", t.domain, AssignmentOffered(
            event_id=derived_id(base, "offer"), ts_ms=now, offer_id=t.offer_id,
            contact_id=t.contact_id, agent_id=t.agent_id, domain=t.domain,
            channel=Channel(t.channel), expires_at_ms=t.expires_at_ms,
            waited_ms=max(t.waited_ms, 0), priority=t.priority, queue=t.queue,
            skills=skills or {},
        )))
    elif t.kind in RESCIND_REASONS:
        out.append(Output("assignments", t.domain, AssignmentRescinded(
            event_id=derived_id(base, "rescind"), ts_ms=now, offer_id=t.offer_id,
            contact_id=t.contact_id, agent_id=t.agent_id, domain=t.domain,
            reason=t.reason or RESCIND_REASONS[t.kind],
        )))
    return out


def profile_audit(event: AgentProfileChanged, result: Sequence[Transition], now: int) -> Output:
    """The audit record of a profile change (who, what, and whether it changed a live seat)."""
    e: Event = AgentProfileApplied(
        event_id=derived_id(event.event_id, "profile"), ts_ms=now, agent_id=event.agent_id,
        domain=event.domain, skills=event.skills, capacity=event.capacity,
        changed_by=event.changed_by, reason=event.reason,
        logged_in=any(t.kind == "logged_in" for t in result), source_event_id=event.event_id)
    return Output("routing_decisions", event.domain, e)


class RoutingStage:
    def __init__(self, store: RoutingStore, decoder: Decoder,
                 clock: Callable[[], int] = now_ms) -> None:
        self.store = store
        self.decoder = decoder
        self.clock = clock

    async def handle(self, role: str, records: Sequence[Record]) -> list[Output]:
        """A batch from routing.requests (role routing_requests) or agents.events."""
        decoded, outputs = decode_batch(self.decoder, role, records, "routing", self.clock)
        now = self.clock()
        started = time.perf_counter()
        results = await self.store.apply([event for _, event in decoded], now)
        if decoded:
            metrics.DECISION_SECONDS.observe(time.perf_counter() - started)
        for (record, event), result in zip(decoded, results, strict=True):
            if isinstance(result, Exception):
                # A script refused this event (a bug or a state we did not foresee): keep the
                # record with the error instead of stopping the partition.
                rejection = Rejection(Reason.PROCESSING_FAILED, str(result)[:300])
                outputs.append(to_deadletter(record, rejection, now))
                continue
            for t in result:
                outputs.extend(transition_outputs(t, now, self._skills(t)))
            if isinstance(event, AgentProfileChanged):
                outputs.append(profile_audit(event, result, now))
        return outputs

    def _skills(self, t: Transition) -> dict[str, int] | None:
        if t.kind != "offered":
            return None
        try:
            return lane_skills(self.store.policy.for_domain(t.domain), t.lane)
        except PolicyError:  # the policy lost the domain while the contact was waiting
            return None

    async def tick(self) -> list[Output]:
        """Time-driven step: expire unanswered offers, open due rings, re-route."""
        now = self.clock()
        return [o for t in await self.store.tick(now)
                for o in transition_outputs(t, now, self._skills(t))]
