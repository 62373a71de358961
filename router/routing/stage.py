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
    ContactWaitUpdated,
    Decision,
    Event,
    RoutingDecision,
)
from router.routing import state
from router.routing.policy import lane_skills
from router.routing.state import Entry, Transition
from router.routing.store import RoutingStore
from router.stage import (
    Output,
    Record,
    decode_batch,
    derived_id,
    now_ms,
    outbox_entries,
    to_deadletter,
)

# Transition kind -> audit decision (kinds not listed change no contact: no audit).
DECISIONS: dict[type[state.T], Decision] = {
    state.Queued: Decision.QUEUED,
    state.Offered: Decision.OFFERED,
    state.Answered: Decision.ACCEPTED,
    state.Declined: Decision.DECLINED,
    state.Expired: Decision.EXPIRED,
    state.Rescinded: Decision.RESCINDED,
    state.Relaxed: Decision.RELAXED,
    state.Abandoned: Decision.ABANDONED,
    state.Completed: Decision.COMPLETED,
    state.Preferred: Decision.PREFERRED,
    state.Callback: Decision.CALLBACK,
}
RESCIND_REASONS: dict[type[state.T], str] = {
    state.Declined: "declined", state.Expired: "no_answer", state.Rescinded: "withdrawn"}
MAX_WAITED_MS = 2**31 - 1  # the contract's range for waited_ms


def transition_outputs(t: Transition, now: int, skills: dict[str, int] | None = None,
                       outbox: tuple[str, str] | None = None,
                       callback_after_s: float = 0.0) -> list[Output]:
    """The events one transition publishes: an audit record, and what the agent must hear
    (``skills``: what the contact's lane asks for, named in an offer), or what the waiting
    customer is told (position and estimated wait, on bot.replies; a callback is offered from
    ``callback_after_s`` of estimated wait on, 0: never). Their ids derive from
    the transition, so a transition sent again (outbox) makes the same events."""
    metrics.TRANSITIONS.labels(t.kind).inc()
    if isinstance(t, state.Waiting):  # told the customer, not audited
        estimate_s = min(-(-max(t.estimate_ms, 0) // 1000), MAX_WAITED_MS)
        return [Output("bot_replies", t.contact_id, ContactWaitUpdated(
            event_id=derived_id(f"{t.domain}/{t.contact_id}//{t.seq}", "wait"), ts_ms=now,
            contact_id=t.contact_id, domain=t.domain, position=min(t.position, MAX_WAITED_MS),
            estimated_wait_s=estimate_s, queue=t.queue, lane=t.lane, agents=t.agents,
            callback_offered=0 < callback_after_s <= estimate_s,
            estimated_wait_ms=min(max(t.estimate_ms, 0), MAX_WAITED_MS * 1000)), outbox)]
    decision = DECISIONS.get(type(t))
    if decision is None or not isinstance(t, state.Placed):
        return []
    offer_id = getattr(t, "offer_id", "")
    base = f"{t.domain}/{t.contact_id}/{offer_id}"
    if isinstance(t, state.Queued | state.Relaxed | state.Callback):  # several per contact
        base = f"{base}/{t.seq}"
    waited = min(max(t.waited_ms, 0), MAX_WAITED_MS)
    out = [Output("routing_decisions", t.domain, RoutingDecision(
        event_id=derived_id(base, t.kind), ts_ms=now, domain=t.domain, contact_id=t.contact_id,
        decision=decision, agent_id=t.agent_id or None, offer_id=offer_id or None,
        waited_ms=waited, within_target=isinstance(t, state.Answered) and t.within_target,
        reason=_reason(t), queue=t.queue, lane=t.lane, ring=t.ring,
    ), outbox)]
    if isinstance(t, state.Answered):
        metrics.ANSWER_WAIT.labels(t.domain, t.queue).observe(waited / 1000)
    elif isinstance(t, state.Offered):
        out.append(Output("assignments", t.domain, AssignmentOffered(
            event_id=derived_id(base, "offer"), ts_ms=now, offer_id=t.offer_id,
            contact_id=t.contact_id, agent_id=t.agent_id, domain=t.domain,
            channel=Channel(t.channel), expires_at_ms=t.expires_at_ms,
            waited_ms=waited, priority=t.priority, queue=t.queue,
            skills=skills or {}, preferred=t.preferred, callback_to=t.callback_to,
        ), outbox))
    elif type(t) in RESCIND_REASONS:
        out.append(Output("assignments", t.domain, AssignmentRescinded(
            event_id=derived_id(base, "rescind"), ts_ms=now, offer_id=offer_id,
            contact_id=t.contact_id, agent_id=t.agent_id, domain=t.domain,
            reason=getattr(t, "reason", "") or RESCIND_REASONS[type(t)],
        ), outbox))
    return out


def _reason(t: Transition) -> str:
    """The audit record's reason; a preferred ring's says where the agent came from and
    whether its ring was used (``last_agent:used``, ``named:offline``, ...)."""
    if isinstance(t, state.Preferred):
        return f"{t.source}:{t.reason}"
    return str(getattr(t, "reason", ""))


def profile_audit(event: AgentProfileChanged, result: Sequence[Transition], now: int
                  ) -> Output:
    """The audit record of a profile change (who, what, and whether it changed a live seat)."""
    e: Event = AgentProfileApplied(
        event_id=derived_id(event.event_id, "profile"), ts_ms=now, agent_id=event.agent_id,
        domain=event.domain, skills=event.skills, capacity=event.capacity,
        changed_by=event.changed_by, reason=event.reason,
        logged_in=any(isinstance(t, state.LoggedIn) for t in result),
        source_event_id=event.event_id)
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
                # A script refused this event's data (a bug or a state we did not foresee):
                # keep the record with the error instead of stopping the partition.
                rejection = Rejection(Reason.PROCESSING_FAILED, str(result)[:300])
                outputs.append(to_deadletter(record, rejection, now))
                continue
            outputs.extend(self._outputs(result, now))
            if isinstance(event, AgentProfileChanged):
                outputs.append(profile_audit(event, [t for e in result for t in e.rows], now))
        return outputs

    def _outputs(self, entries: Sequence[Entry], now: int) -> list[Output]:
        out = []
        for entry in entries:
            box = None
            for t in entry.rows:
                box = (t.domain, entry.id) if entry.id else None
                out.extend(transition_outputs(t, now, self._skills(t), box,
                                              self.store.settings.callback_offer_after_s))
        return out

    def delivered(self, outputs: Sequence[Output]) -> None:
        """Kafka has these records: their outbox entries can go."""
        self.store.ack(outbox_entries(outputs))

    def _skills(self, t: Transition) -> dict[str, int] | None:
        if not isinstance(t, state.Offered):
            return None
        try:
            return lane_skills(self.store.policy.for_domain(t.domain), t.lane)
        except PolicyError:  # the policy lost the domain while the contact was waiting
            return None

    async def tick(self) -> list[Output]:
        """Time-driven step: expire unanswered offers, open due rings, re-route, re-send what
        the outbox kept too long."""
        now = self.clock()
        return self._outputs(await self.store.tick(now), now)
