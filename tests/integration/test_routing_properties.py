"""The routing store's invariants under random interleavings, against a real Redis.

A hypothesis RuleBasedStateMachine drives arrivals, logins, state changes, accepts, declines,
expiries and ring openings (time moves), abandons, completes, re-delivered duplicates, replies
lost after a script ran (the outbox gives the same transitions back) and outputs a dead worker
never produced (the timer re-sends them) through RoutingStore, then reads the whole domain back
through the layout's owner (router/routing/state.py) after every step and checks: no agent over
capacity, no agent offered work while not ready, no contact offered to two agents, every contact
in exactly one place, indexes and counters consistent, and no agent idle past one timer step
while a contact it may take waits (the scan limit is tiny, so matches run out of budget and the
timer finishes them). Choices are checked against the oracle (tests/oracle.py) on the state read
before the step. Requests of version 2 name a preferred agent or a customer whose last agent
is preferred: the preferred ring is used or skipped as the oracle says, a contact in it waits
in its agent's list only, and no contact stays there past the ring.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from router.events import (
    AgentLoggedIn,
    AgentLoggedOut,
    AgentState,
    AgentStateChanged,
    Channel,
    ContactCompleted,
    CustomerCallbackRequested,
    CustomerLeft,
    Event,
    Language,
    OfferAccepted,
    OfferDeclined,
    RoutingRequested,
    RoutingRequestedV2,
    Tier,
)
from router.routing import state
from router.routing.config import RoutingPolicy, Strategy, parse_policy
from router.routing.policy import Membership, Seat, parse_levels, plan_request
from router.routing.stage import transition_outputs
from router.routing.state import DOMAINS_KEY, Entry, Transition
from router.routing.store import OUTBOX_LEASE_MS, RoutingStore
from router.settings import Settings
from tests.conftest import store_redis_url
from tests.oracle import (
    AgentView,
    WaitingView,
    agent_sort_key,
    best_agent,
    next_contact,
    open_ring,
    preferred_ring,
)

pytestmark = pytest.mark.integration

POLICY = """
version: 1
defaults:
  offer_timeout_s: 8
  priority_step_s: 5
  on_no_answer: {on_no_answer}
  on_decline: {on_decline}
  capacity: {{chat: 2, voice: 1, callback: 1}}
  vip: {{service_target_s: 10, weight: 2}}
  preferred_agent: {{ring_s: 6, history_s: 30}}
domains:
  "*":
    default_queue: general
    queues:
      refunds:
        skills: {{refunds: 2}}
        rings:
          - {{after_s: 5, skills: {{refunds: 1}}}}
          - {{after_s: 10, skills: {{general: 1}}}}
      orders:
        skills: {{orders: 1}}
        strategy: least_occupied
        rings: [{{after_s: 6, skills: {{general: 2}}}}]
      general:
        skills: {{general: 1}}
        strategy: round_robin
"""

AGENTS = {  # fixed profiles: capacity never changes under an agent's feet
    "a0": ({"zh": 1, "refunds": 2, "general": 1}, {"chat": 2, "voice": 1, "callback": 1}),
    "a1": ({"zh": 1, "en": 1, "refunds": 1, "orders": 1}, {"chat": 1}),
    "a2": ({"en": 1, "general": 2}, {"chat": 2}),
    "a3": ({"zh": 1, "general": 2, "orders": 2, "vipcare": 1},
           {"chat": 1, "voice": 1, "callback": 2}),  # callback capped at 1 by policy
    "a4": ({"en": 1, "zh": 1, "refunds": 3, "orders": 1}, {"chat": 3}),  # capped at 2 by policy
}
# Second profiles an agent may re-send while holding contacts (same capacity, other skills).
RELOGIN = {
    "a0": {"zh": 1, "en": 1, "general": 3},
    "a1": {"zh": 1, "refunds": 2, "orders": 2},
    "a2": {"en": 1, "zh": 1, "refunds": 1},
    "a3": {"zh": 1, "orders": 1},
    "a4": {"en": 1, "general": 1, "vipcare": 1},
}
QUEUES = ("refunds", "orders", "general", "", "nope")  # "" and "nope": the default queue
CHANNELS = ("chat", "voice")  # what contacts arrive on
HELD = ("chat", "voice", "callback")  # what agents hold (a callback is its own channel)
CUSTOMERS = ("k1", "k2")  # few: their last agents come back
RING_MS, HISTORY_MS = 6_000, 30_000
START_MS = 1_800_000_000_000


class RoutingMachine(RuleBasedStateMachine):
    on_decline = "ready"
    on_no_answer = "not_ready"

    scan_limit = 1  # tiny: matches run out of their budget, the timer must finish them

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.aclient = aioredis.Redis.from_url(REDIS_URL[0])
        self.policy: RoutingPolicy = parse_policy(
            POLICY.format(on_decline=self.on_decline, on_no_answer=self.on_no_answer),
            "<test policy>")
        self.store = RoutingStore(self.aclient, Settings(match_scan_limit=self.scan_limit),
                                  self.policy)
        self.domain = f"p-{uuid.uuid4().hex[:12]}"
        self.now = START_MS
        self.sent: list[Event] = []
        self.contacts: list[str] = []
        self.offers: dict[str, tuple[str, str]] = {}  # cid -> (aid, oid), outstanding
        self.answered: dict[str, str] = {}  # cid -> aid, not yet completed
        self.declined: set[tuple[str, str]] = set()  # (contact, agent) it went back from
        self.audit_ids: set[str] = set()
        self.entries: dict[str, list[Transition]] = {}  # outbox entry -> its transitions
        self.acked: set[str] = set()  # entries Kafka had (a re-delivery runs the script again)
        self.unsent: dict[str, int] = {}  # entries a dead worker never produced -> since
        self.customer_of: dict[str, str] = {}  # contact -> its customer (v2 requests)
        self.last_agent: dict[str, tuple[str, int]] = {}  # customer -> (agent, answered at)
        self.seq = 0

    def teardown(self) -> None:
        self.run(self.aclient.srem(DOMAINS_KEY, self.domain))  # later examples skip it
        self.loop.run_until_complete(self.aclient.aclose())
        self.loop.close()

    # --- plumbing ------------------------------------------------------------------------

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def _id(self) -> str:
        self.seq += 1
        return f"e{self.seq}"

    def apply(self, event: Event, *, produced: bool = True) -> list[Transition]:
        return self.apply_batch([event], produced=produced)[0]

    def apply_batch(self, events: list[Event], *, produced: bool = True
                    ) -> list[list[Transition]]:
        """One pipelined batch, as the stage sends them; ``produced``: Kafka got its outputs
        (the stage deletes their outbox entries), else the worker died first."""
        self.sent.extend(events)
        results = self.run(self.store.apply(events, self.now))
        out = []
        for result in results:
            assert not isinstance(result, Exception), result
            out.append(self._follow(result, produced))
        return out

    def _follow(self, entries: list[Entry], produced: bool) -> list[Transition]:
        """Track what the transitions did; an entry seen before (a replay) must bring back
        exactly its transitions and is not followed twice."""
        rows: list[Transition] = []
        for entry in entries:
            if entry.id and entry.id in self.entries and entry.id not in self.acked:
                assert entry.rows == self.entries[entry.id], (entry.id, "replay differs")
                rows.extend(entry.rows)
                continue
            self.acked.discard(entry.id)
            if entry.id:
                self.entries[entry.id] = list(entry.rows)
            for t in entry.rows:
                self._track(t)
            rows.extend(entry.rows)
        if produced:
            self.store.ack_entries(entries)
            for entry in entries:
                self.unsent.pop(entry.id, None)
                if entry.id:
                    self.acked.add(entry.id)
        else:
            for entry in entries:
                if entry.id:
                    self.unsent.setdefault(entry.id, self.now)
        return rows

    def _track(self, t: Transition) -> None:
        for output in transition_outputs(t, self.now):  # audit and assignment event ids
            assert output.event.event_id not in self.audit_ids, (t, "event id reused")
            self.audit_ids.add(output.event.event_id)
        if t.kind in {"declined", "expired"}:
            self.declined.add((t.contact_id, t.agent_id))
        elif t.kind in {"offered", "abandoned"}:
            self.declined = {pair for pair in self.declined if pair[0] != t.contact_id}
        if isinstance(t, state.Offered):
            assert t.contact_id not in self.offers, f"{t.contact_id} offered twice"
            self.offers[t.contact_id] = (t.agent_id, t.offer_id)
        elif t.kind in {"declined", "expired", "rescinded"}:
            assert self.offers.pop(t.contact_id)[0] == t.agent_id
        elif t.kind == "answered":
            self.offers.pop(t.contact_id)
            self.answered[t.contact_id] = t.agent_id
            if t.contact_id in self.customer_of:
                self.last_agent[self.customer_of[t.contact_id]] = (t.agent_id, self.now)
        elif t.kind == "completed":
            self.answered.pop(t.contact_id)

    def dump(self) -> state.DomainDump:
        self.run(self.store.flush_acks())  # the stage's deletes ride with its next batch
        return self.run(state.dump(self.aclient, self.domain))

    def agent_views(self, d: state.DomainDump | None = None) -> dict[str, AgentView]:
        d = d or self.dump()
        return {aid: AgentView(
            agent_id=aid, ready=a.ready, capacity=dict(a.capacity), load=dict(a.load),
            last_ms=a.last_ms,
            memberships=[Membership(lane, ring, 0) for lane, ring in a.serves.items()],
            seats=[Seat(s.pool, s.rank, Strategy(s.strategy)) for s in a.seats],
            skills=dict(a.skills), last_from_pool_ms=dict(a.last_from_pool_ms))
            for aid, a in d.agents.items() if a.logged_in and a.state != "offline"}

    def waiting_views(self, d: state.DomainDump | None = None) -> list[WaitingView]:
        d = d or self.dump()
        return [WaitingView(c.contact_id, c.lane, c.channel, c.service_class, c.ring, c.score,
                            c.target_ms, c.weight, c.ring_pools, parse_levels(c.extra_skills),
                            c.preferred_agent)
                for c in d.contacts.values() if c.state == "queued"]

    def ready_by_ring(self, pools: tuple[str, ...]) -> list[int]:
        rc = self.dump().ready_counts
        return [rc.get(pool, 0) for pool in pools]

    # --- rules -----------------------------------------------------------------------------

    @rule(aid=st.sampled_from(sorted(AGENTS)), ready=st.booleans())
    def login(self, aid: str, ready: bool) -> None:
        skills, capacity = AGENTS[aid]
        self.apply(AgentLoggedIn(event_id=self._id(), ts_ms=self.now, agent_id=aid,
                                 domain=self.domain, skills=skills, capacity=capacity,
                                 ready=ready))

    @rule(aid=st.sampled_from(sorted(AGENTS)), ready=st.booleans())
    def relogin_with_other_skills(self, aid: str, ready: bool) -> None:
        """A supervisor changed the agent's profile; it may be holding contacts."""
        self.apply(AgentLoggedIn(event_id=self._id(), ts_ms=self.now, agent_id=aid,
                                 domain=self.domain, skills=RELOGIN[aid],
                                 capacity=AGENTS[aid][1], ready=ready))

    @rule(queue=st.sampled_from(QUEUES), aid=st.sampled_from(sorted(AGENTS)),
          language=st.sampled_from(list(Language)))
    def one_batch_with_an_arrival_login_and_logout(self, queue: str, aid: str,
                                                   language: Language) -> None:
        """Several events in one pipelined batch (same clock): ids stay distinct."""
        cid = f"c{len(self.contacts)}"
        self.contacts.append(cid)
        skills, capacity = AGENTS[aid]
        self.apply_batch([
            RoutingRequested(event_id=self._id(), ts_ms=self.now, contact_id=cid,
                             domain=self.domain, language=language, queue=queue),
            AgentLoggedIn(event_id=self._id(), ts_ms=self.now, agent_id=aid,
                          domain=self.domain, skills=skills, capacity=capacity),
            AgentLoggedOut(event_id=self._id(), ts_ms=self.now, agent_id=aid,
                           domain=self.domain),
        ])

    @rule(aid=st.sampled_from(sorted(AGENTS)),
          state=st.sampled_from([AgentState.READY, AgentState.NOT_READY, AgentState.OFFLINE]))
    def change_state(self, aid: str, state: AgentState) -> None:
        self.apply(AgentStateChanged(event_id=self._id(), ts_ms=self.now, agent_id=aid,
                                     domain=self.domain, state=state))

    @rule(aid=st.sampled_from(sorted(AGENTS)))
    def logout(self, aid: str) -> None:
        self.apply(AgentLoggedOut(event_id=self._id(), ts_ms=self.now, agent_id=aid,
                                  domain=self.domain))

    @rule(queue=st.sampled_from(QUEUES), language=st.sampled_from(list(Language)),
          vip=st.booleans(), channel=st.sampled_from(CHANNELS), priority=st.integers(0, 3),
          extra=st.booleans(), late_ms=st.sampled_from([0, 0, 0, 7_000]))
    def arrive(self, queue: str, language: Language, vip: bool, channel: str, priority: int,
               extra: bool, late_ms: int) -> None:
        cid = f"c{len(self.contacts)}"
        self.contacts.append(cid)
        event = RoutingRequested(
            event_id=self._id(), ts_ms=self.now - late_ms, contact_id=cid, domain=self.domain,
            channel=Channel(channel), language=language, tier=Tier.VIP if vip else Tier.NORMAL,
            skills={"vipcare": 1} if extra else {}, priority=priority, queue=queue)
        plan = plan_request(event, self.policy.for_domain(self.domain))
        ring, _ = open_ring(plan.ring_delays_ms, late_ms, self.ready_by_ring(plan.ring_pools))
        contact = WaitingView(cid, plan.lane, channel, plan.service_class, ring, plan.score,
                              plan.target_ms, plan.weight, plan.ring_pools, plan.extra_skills)
        expected = best_agent(contact, self.agent_views().values())
        offered = [t for t in self.apply(event) if t.kind == "offered"]
        if offered or expected is None:
            assert [t.agent_id for t in offered] == ([expected] if expected else [])
            assert all(t.ring == ring for t in offered)
        else:  # the match ran out of its scan budget: the timer finishes it
            assert cid in self.dump().pending, (cid, expected, "waits, not pending")

    @rule(queue=st.sampled_from(QUEUES), language=st.sampled_from(list(Language)),
          channel=st.sampled_from(CHANNELS),
          named=st.sampled_from([None, None, "ghost", *sorted(AGENTS)]),
          customer=st.sampled_from([None, *CUSTOMERS]),
          late_ms=st.sampled_from([0, 0, 3_000, 7_000]))
    def arrive_with_a_preferred_agent(self, queue: str, language: Language, channel: str,
                                      named: str | None, customer: str | None,
                                      late_ms: int) -> None:
        """routing.requested.v2: a named preferred agent, or the customer's last agent within
        the history window; its ring is used or skipped as the oracle says, and while used
        only that agent is offered the contact."""
        cid = f"c{len(self.contacts)}"
        self.contacts.append(cid)
        if customer:
            self.customer_of[cid] = customer
        event = RoutingRequestedV2(
            event_id=self._id(), ts_ms=self.now - late_ms, contact_id=cid, domain=self.domain,
            channel=Channel(channel), language=language, queue=queue, customer_id=customer,
            preferred_agent=named)
        pref, source = named or "", "named"
        last = self.last_agent.get(customer or "")
        if not pref and last and self.now - last[1] <= HISTORY_MS:
            pref, source = last[0], "last_agent"
        d = self.dump()
        plan = plan_request(event, self.policy.for_domain(self.domain))
        view = d.agents.get(pref)
        why = preferred_ring(view is not None and view.logged_in,
                             view.state if view else "offline",
                             view.serves if view else (), plan.lane, RING_MS)
        result = self.apply(event)
        prefs = [t for t in result if isinstance(t, state.Preferred)]
        if not pref:
            assert prefs == []
            return
        assert [(t.agent_id, t.source, t.reason, t.used) for t in prefs] == [
            (pref, source, why, why == "used")]
        offered = [t.agent_id for t in result if t.kind == "offered"]
        if why == "used":
            free = self.agent_views(d).get(pref)
            expected = pref if free is not None and free.has_room(channel) else None
            assert offered == ([expected] if expected else [])
            if not expected:
                assert cid in self.dump().preferred.get(pref, [])

    @rule(queue=st.sampled_from(QUEUES), language=st.sampled_from(list(Language)))
    def the_reply_is_lost_after_the_script_ran(self, queue: str, language: Language) -> None:
        """A timeout after the script ran: the retry gets the same transitions back (the
        outbox), nothing is applied twice."""
        cid = f"c{len(self.contacts)}"
        self.contacts.append(cid)
        event = RoutingRequested(event_id=self._id(), ts_ms=self.now, contact_id=cid,
                                 domain=self.domain, language=language, queue=queue)
        stats = self.dump().stats
        first = self.apply(event, produced=False)
        assert self.dump().stats == stats or first  # it ran once
        again = self.apply(event)
        assert again == first

    @rule(queue=st.sampled_from(QUEUES), language=st.sampled_from(list(Language)))
    def a_worker_dies_before_producing(self, queue: str, language: Language) -> None:
        """The script ran, the worker died before Kafka had its outputs and the event is not
        re-delivered (its offset was committed by nobody... or a timer step): the timer
        re-sends the kept transitions once their lease runs out (checked in time_passes)."""
        cid = f"c{len(self.contacts)}"
        self.contacts.append(cid)
        self.apply(RoutingRequested(event_id=self._id(), ts_ms=self.now, contact_id=cid,
                                    domain=self.domain, language=language, queue=queue),
                   produced=False)

    @precondition(lambda self: self.offers)
    @rule(data=st.data())
    def accept(self, data: st.DataObject) -> None:
        cid = data.draw(st.sampled_from(sorted(self.offers)))
        aid, oid = self.offers[cid]
        result = self.apply(OfferAccepted(event_id=self._id(), ts_ms=self.now, agent_id=aid,
                                          domain=self.domain, offer_id=oid, contact_id=cid))
        assert [t.kind for t in result] == ["answered"]

    @precondition(lambda self: self.offers)
    @rule(data=st.data())
    def accept_someone_elses_offer(self, data: st.DataObject) -> None:
        cid = data.draw(st.sampled_from(sorted(self.offers)))
        aid, oid = self.offers[cid]
        other = data.draw(st.sampled_from(sorted(set(AGENTS) - {aid})))
        result = self.apply(OfferAccepted(event_id=self._id(), ts_ms=self.now, agent_id=other,
                                          domain=self.domain, offer_id=oid, contact_id=cid))
        assert [t.kind for t in result] == ["stale"]

    @precondition(lambda self: self.offers)
    @rule(data=st.data())
    def decline(self, data: st.DataObject) -> None:
        cid = data.draw(st.sampled_from(sorted(self.offers)))
        aid, oid = self.offers[cid]
        result = self.apply(OfferDeclined(event_id=self._id(), ts_ms=self.now, agent_id=aid,
                                          domain=self.domain, offer_id=oid, contact_id=cid))
        assert result[0].kind == "declined"
        assert all(t.agent_id != aid for t in result if t.kind == "offered" and
                   t.contact_id == cid), "re-offered to the agent who declined it"

    @precondition(lambda self: self.answered)
    @rule(data=st.data())
    def complete(self, data: st.DataObject) -> None:
        cid = data.draw(st.sampled_from(sorted(self.answered)))
        aid = self.answered[cid]
        before = self.agent_views().get(aid)
        waiting = self.waiting_views()
        result = self.apply(ContactCompleted(event_id=self._id(), ts_ms=self.now, agent_id=aid,
                                             domain=self.domain, contact_id=cid))
        assert result[0].kind == "completed"
        offered = [t.contact_id for t in result if t.kind == "offered"]
        if before is not None:
            ch = result[0].channel
            before.load[ch] = before.load.get(ch, 0) - 1
            expected = next_contact(before, waiting, self.now)
            assert (offered[:1] or [None]) == [expected]

    @precondition(lambda self: self.contacts)
    @rule(data=st.data())
    def customer_asks_for_a_callback(self, data: st.DataObject) -> None:
        """A waiting customer leaves the line for a callback: it keeps its place (score), its
        channel becomes callback, and it is offered at once to the agent the oracle picks
        among those with a free callback slot; anything else is stale."""
        cid = data.draw(st.sampled_from(self.contacts))
        d = self.dump()
        before = d.contacts.get(cid)
        agents = self.agent_views(d)
        result = self.apply(CustomerCallbackRequested(
            event_id=self._id(), ts_ms=self.now, contact_id=cid, domain=self.domain,
            callback_to=f"tel:{cid}"))
        if before is None or before.state != "queued" or before.callback_to:
            assert [t.kind for t in result] == ["stale"]
            return
        assert result[0].kind == "callback"
        after = self.dump().contacts[cid]
        assert (after.channel, after.score, after.callback_to) == (
            "callback", before.score, f"tel:{cid}")
        contact = WaitingView(cid, before.lane, "callback", before.service_class, before.ring,
                              before.score, before.target_ms, before.weight, before.ring_pools,
                              parse_levels(before.extra_skills))
        expected = best_agent(contact, agents.values())
        offered = [t.agent_id for t in result if t.kind == "offered"]
        if offered or expected is None:
            assert offered == ([expected] if expected else [])
        else:
            assert cid in self.dump().pending

    @precondition(lambda self: self.contacts)
    @rule(data=st.data())
    def customer_leaves(self, data: st.DataObject) -> None:
        cid = data.draw(st.sampled_from(self.contacts))
        self.apply(CustomerLeft(event_id=self._id(), ts_ms=self.now, contact_id=cid,
                                domain=self.domain))  # answered contacts ignore it

    @precondition(lambda self: self.sent)
    @rule(data=st.data())
    def redeliver(self, data: st.DataObject) -> None:
        """Kafka re-delivers an event already processed: nothing changes twice."""
        event = data.draw(st.sampled_from(self.sent))
        stats_before = self.dump().stats
        kept = event.event_id in self.unsent  # Kafka never had its outputs: they come back
        result = self.apply(event)
        if kept:
            assert result == self.entries[event.event_id]
            assert self.dump().stats == stats_before
            return
        if isinstance(event, RoutingRequested):
            assert [t.kind for t in result] == ["duplicate"]
            assert self.dump().stats == stats_before
        if isinstance(event, OfferAccepted | OfferDeclined | ContactCompleted):
            assert [t.kind for t in result] == ["stale"]

    @rule(ms=st.integers(0, 12_000))
    def time_passes(self, ms: int) -> None:
        """The worker's timer: expired offers, ring openings, matches cut short, outbox
        entries left behind. After it, no agent who may take a waiting contact is idle."""
        self.now += ms
        result = self.run(self.store.tick(self.now))
        self._follow([e for e in result if e.rows and e.rows[0].domain == self.domain], True)
        late = [e for e, since in self.unsent.items() if self.now - since > OUTBOX_LEASE_MS]
        assert not late, (late, "kept transitions never re-sent")
        d = self.dump()
        over = [c.contact_id for c in d.contacts.values() if c.state == "queued"
                and c.preferred_agent and c.preferred_until_ms <= self.now]
        assert not over, (over, "preferred ring over, still held for the agent")
        self.nobody_idle_while_a_contact_they_may_take_waits(pending_too=True)

    # --- invariants ------------------------------------------------------------------------

    def nobody_idle_while_a_contact_they_may_take_waits(
            self, pending_too: bool, d: state.DomainDump | None = None) -> None:
        d = d or self.dump()
        agents = self.agent_views(d)
        for contact in self.waiting_views(d):
            if contact.contact_id in d.pending and not pending_too:
                continue  # its match ran out of budget: the next timer step finishes it
            declined = {aid for cid, aid in self.declined if cid == contact.contact_id}
            free = [a for a in agents.values() if a.agent_id not in declined]
            assert best_agent(contact, free) is None, (contact, best_agent(contact, free))

    @invariant()
    def state_is_consistent(self) -> None:
        """One read of the whole domain after every step (it is what the test spends its time
        on): every trigger matched what it could (a waiting contact has no free agent in its
        open rings, except the one it just went back from, unless its match ran out of budget:
        then the next timer step must find it, see time_passes), and the books and indexes
        agree."""
        d = self.dump()
        self.nobody_idle_while_a_contact_they_may_take_waits(pending_too=False, d=d)
        self.books_and_indexes_are_consistent(d)

    def books_and_indexes_are_consistent(self, d: state.DomainDump) -> None:
        contacts = {cid: c for cid, c in d.contacts.items() if cid in set(self.contacts)}
        ox = set(d.offers)
        queued_in: Counter[str] = Counter()
        queue_of: dict[str, str] = {}
        for group, cids in d.waiting.items():
            for cid in cids:
                queued_in[cid] += 1
                queue_of[cid] = group

        preferred_in: Counter[str] = Counter(cid for cids in d.preferred.values()
                                             for cid in cids)
        assert all(contacts[cid].state == "queued" for cid in preferred_in if cid in contacts)

        # No contact offered to two agents; offers, contacts and agents agree.
        all_offers = [cid for a in d.agents.values() for cid in a.offers]
        assert len(all_offers) == len(set(all_offers)), "a contact is offered to two agents"
        assert set(all_offers) == ox
        assert set(self.offers) == ox

        # Every contact in exactly one place.
        states: Counter[str] = Counter()
        for cid, c in contacts.items():
            states[c.state] += 1
            assert c.state in {"queued", "offered", "answered", "done", "abandoned"}, (cid, c)
            if c.state == "queued" and c.preferred_agent:  # in its preferred ring
                assert queued_in[cid] == 0, (cid, c)
                assert preferred_in[cid] == 1, (cid, c)
                assert d.preferred[c.preferred_agent].count(cid) == 1, (cid, c)
                assert cid not in ox
            elif c.state == "queued":
                assert queued_in[cid] == 1, (cid, c)
                assert preferred_in[cid] == 0, (cid, c)
                assert queue_of[cid] == c.waiting_list, (cid, c, "in the wrong waiting list")
                assert cid not in ox
            elif c.state == "offered":
                assert queued_in[cid] == 0, (cid, c)
                assert cid in ox, (cid, c)
                assert cid in d.agents[c.agent_id].offers, (cid, c)
            else:
                assert queued_in[cid] == 0, (cid, c)
                assert preferred_in[cid] == 0, (cid, c)
                assert cid not in ox, (cid, c)
                assert cid not in d.pending, (cid, c)
            if c.state == "answered":
                assert self.answered.get(cid) == c.agent_id

        # Capacity: loads are exactly the contacts held, never above capacity.
        for aid, a in d.agents.items():
            for ch in HELD:
                held = sum(1 for c in contacts.values()
                           if c.agent_id == aid and c.channel == ch
                           and c.state in {"offered", "answered"})
                assert a.load.get(ch, 0) == held, (aid, ch, a.load, held)
                assert held <= a.capacity.get(ch, 0) or a.state == "offline", (aid, ch, a)

        # Indexes: every ready agent with room is in its pools, scored no higher than the
        # oracle's score; no agent that is not ready is; ready counts exact per pool.
        ready_count: Counter[str] = Counter()
        for aid, a in d.agents.items():
            if not a.logged_in:
                assert not any(aid in group for group in d.free.values()), (aid, "not seated")
                continue
            for seat in a.seats:
                if a.state == "ready":
                    ready_count[seat.pool] += 1
                for ch in HELD:
                    score = d.free.get(f"{seat.pool}:{ch}", {}).get(aid)
                    cap, load = a.capacity.get(ch, 0), a.load.get(ch, 0)
                    if a.state == "ready" and load < cap:
                        expected = agent_sort_key(Strategy(seat.strategy), seat.rank,
                                                  a.last_ms, load, cap,
                                                  a.last_from_pool_ms.get(seat.pool, 0))
                        # Lazy indexes: a stored score may lag behind (too low), never ahead.
                        assert score is not None, (aid, seat, ch, "ready with room, not free")
                        assert score <= expected, (aid, seat, ch, score, expected)
                    elif a.state != "ready":
                        assert score is None, (aid, seat, ch, "free while not ready")
                    # A full agent may linger until a match looks at it (lazy removal).
            for group, score in a.free_scores.items():  # the record knows where it sits
                assert d.free.get(group, {}).get(aid) == score, (aid, group)
        rc = {k: v for k, v in d.ready_counts.items() if v}
        assert rc == dict(ready_count)

        # Waiting counts per list (only lists with someone waiting) agree with the lists.
        assert d.waiting_counts == {group: len(cids) for group, cids in d.waiting.items()}

        # Counters agree with the contacts.
        stats = d.stats
        assert stats["invariant_violations"] == 0
        assert stats["escalated"] == len(contacts)
        assert stats["answered"] == states["answered"] + states["done"]
        assert stats["completed"] == states["done"]
        assert stats["abandoned"] == states["abandoned"]
        assert stats["offered"] == (stats["answered"] + stats["declined"] + stats["expired"]
                                    + stats["rescinded"] + len(ox))

        # The outbox keeps exactly what Kafka does not have yet.
        assert d.outbox == frozenset(self.unsent), (d.outbox, self.unsent)


REDIS_URL: list[str] = []
SETTINGS = settings(max_examples=100, stateful_step_count=50, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


class DeclineNotReadyMachine(RoutingMachine):
    on_decline = "not_ready"


class NoAnswerStaysReadyMachine(RoutingMachine):
    on_no_answer = "ready"


class RoomyScanMachine(RoutingMachine):
    scan_limit = 50  # every match finishes in its own call


@pytest.mark.parametrize("machine", [RoutingMachine, DeclineNotReadyMachine,
                                     NoAnswerStaysReadyMachine, RoomyScanMachine])
def test_routing_invariants_hold_under_random_interleavings(
    stack: Settings, machine: type[RoutingMachine],
) -> None:
    REDIS_URL[:] = [store_redis_url(stack)]
    run_state_machine_as_test(machine, settings=SETTINGS)
