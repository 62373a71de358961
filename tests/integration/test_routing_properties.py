"""The routing store's invariants under random interleavings, against a real Redis.

A hypothesis RuleBasedStateMachine drives arrivals, logins, state changes, accepts, declines,
expiries and ring openings (time moves), abandons, completes and re-delivered duplicates through
RoutingStore, then reads the whole domain back after every step and checks: no agent over
capacity, no agent offered work while not ready, no contact offered to two agents, every contact
in exactly one place, indexes and counters consistent. Choices are checked against the pure
policy (router.routing.policy.best_agent / next_contact) on the state read before the step.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest
import redis
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
    CustomerLeft,
    Event,
    Language,
    OfferAccepted,
    OfferDeclined,
    RoutingRequested,
    Tier,
)
from router.routing.config import RoutingPolicy, parse_policy
from router.routing.policy import (
    AgentView,
    Membership,
    Seat,
    WaitingView,
    agent_sort_key,
    best_agent,
    lane_name,
    next_contact,
    open_ring,
    parse_levels,
    plan_request,
)
from router.routing.stage import transition_outputs
from router.routing.store import DOMAINS_KEY, RoutingStore, Transition, prefix
from router.settings import Settings
from tests.conftest import store_redis_url

pytestmark = pytest.mark.integration

POLICY = """
version: 1
defaults:
  offer_timeout_s: 8
  priority_step_s: 5
  on_no_answer: {on_no_answer}
  on_decline: {on_decline}
  capacity: {{chat: 2, voice: 1}}
  vip: {{service_target_s: 10, weight: 2}}
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
    "a0": ({"zh": 1, "refunds": 2, "general": 1}, {"chat": 2, "voice": 1}),
    "a1": ({"zh": 1, "en": 1, "refunds": 1, "orders": 1}, {"chat": 1}),
    "a2": ({"en": 1, "general": 2}, {"chat": 2}),
    "a3": ({"zh": 1, "general": 2, "orders": 2, "vipcare": 1}, {"chat": 1, "voice": 1}),
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
CHANNELS = ("chat", "voice")
START_MS = 1_800_000_000_000


class RoutingMachine(RuleBasedStateMachine):
    on_decline = "ready"
    on_no_answer = "not_ready"

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.aclient = aioredis.Redis.from_url(REDIS_URL[0])
        self.sync = redis.Redis.from_url(REDIS_URL[0], decode_responses=True)
        self.policy: RoutingPolicy = parse_policy(
            POLICY.format(on_decline=self.on_decline, on_no_answer=self.on_no_answer),
            "<test policy>")
        self.store = RoutingStore(self.aclient, Settings(match_scan_limit=50), self.policy)
        self.domain = f"p-{uuid.uuid4().hex[:12]}"
        self.p = prefix(self.domain)
        self.now = START_MS
        self.sent: list[Event] = []
        self.contacts: list[str] = []
        self.offers: dict[str, tuple[str, str]] = {}  # cid -> (aid, oid), outstanding
        self.answered: dict[str, str] = {}  # cid -> aid, not yet completed
        self.declined: set[tuple[str, str]] = set()  # (contact, agent) it went back from
        self.audit_ids: set[str] = set()
        self.seq = 0

    def teardown(self) -> None:
        self.sync.srem(DOMAINS_KEY, self.domain)  # later examples' ticks skip this one
        self.loop.run_until_complete(self.aclient.aclose())
        self.loop.close()
        self.sync.close()

    # --- plumbing ------------------------------------------------------------------------

    def _id(self) -> str:
        self.seq += 1
        return f"e{self.seq}"

    def apply(self, event: Event) -> list[Transition]:
        return self.apply_batch([event])[0]

    def apply_batch(self, events: list[Event]) -> list[list[Transition]]:
        """One pipelined batch, as the stage sends them."""
        self.sent.extend(events)
        results = self.loop.run_until_complete(self.store.apply(events, self.now))
        out = []
        for result in results:
            assert not isinstance(result, Exception), result
            self._follow(result)
            out.append(result)
        return out

    def _follow(self, transitions: list[Transition]) -> None:
        for t in transitions:
            for output in transition_outputs(t, self.now):  # audit and assignment event ids
                assert output.event.event_id not in self.audit_ids, (t, "event id reused")
                self.audit_ids.add(output.event.event_id)
            if t.kind in {"declined", "expired"}:
                self.declined.add((t.contact_id, t.agent_id))
            elif t.kind in {"offered", "abandoned"}:
                self.declined = {pair for pair in self.declined if pair[0] != t.contact_id}
            if t.kind == "offered":
                assert t.contact_id not in self.offers, f"{t.contact_id} offered twice"
                self.offers[t.contact_id] = (t.agent_id, t.offer_id)
            elif t.kind in {"declined", "expired", "rescinded"}:
                assert self.offers.pop(t.contact_id)[0] == t.agent_id
            elif t.kind == "answered":
                self.offers.pop(t.contact_id)
                self.answered[t.contact_id] = t.agent_id
            elif t.kind == "completed":
                self.answered.pop(t.contact_id)

    def agent_views(self) -> dict[str, AgentView]:
        views = {}
        for aid in AGENTS:
            h = self.sync.hgetall(f"{self.p}a:{aid}")
            if not h or h.get("st") == "offline":
                continue
            views[aid] = AgentView(
                agent_id=aid, ready=h["st"] == "ready",
                capacity={k[4:]: int(v) for k, v in h.items() if k.startswith("cap:")},
                load={k[5:]: int(v) for k, v in h.items() if k.startswith("load:")},
                last_ms=int(h.get("last", 0)), memberships=decode_memberships(h.get("m", "")),
                seats=Seat.decode_all(h.get("pl", "")),
                skills={k[2:]: int(v) for k, v in h.items() if k.startswith("s:")},
                last_from_pool_ms={k[3:]: int(v) for k, v in h.items() if k.startswith("rr:")},
            )
        return views

    def waiting_views(self) -> list[WaitingView]:
        out = []
        for cid in self.contacts:
            h = self.sync.hgetall(f"{self.p}c:{cid}")
            if h.get("st") == "queued":
                out.append(WaitingView(cid, h["ln"], h["ch"], h["cls"], int(h["rg"]),
                                       int(h["score"]), int(h["tg"]), float(h["wt"]),
                                       tuple(h["rp"].split(";")),
                                       parse_levels(h.get("xs", ""))))
        return out

    def ready_by_ring(self, pools: tuple[str, ...]) -> list[int]:
        rc = self.sync.hgetall(f"{self.p}rc")
        return [int(rc.get(pool, 0)) for pool in pools]

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
        assert [t.agent_id for t in offered] == ([expected] if expected else [])
        assert all(t.ring == ring for t in offered)

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
    def customer_leaves(self, data: st.DataObject) -> None:
        cid = data.draw(st.sampled_from(self.contacts))
        self.apply(CustomerLeft(event_id=self._id(), ts_ms=self.now, contact_id=cid,
                                domain=self.domain))  # answered contacts ignore it

    @precondition(lambda self: self.sent)
    @rule(data=st.data())
    def redeliver(self, data: st.DataObject) -> None:
        """Kafka re-delivers an event already processed: nothing changes twice."""
        event = data.draw(st.sampled_from(self.sent))
        stats_before = self.sync.hgetall(f"{self.p}stats")
        result = self.apply(event)
        if isinstance(event, RoutingRequested):
            assert [t.kind for t in result] == ["duplicate"]
            assert self.sync.hgetall(f"{self.p}stats") == stats_before
        if isinstance(event, OfferAccepted | OfferDeclined | ContactCompleted):
            assert [t.kind for t in result] == ["stale"]

    @rule(ms=st.integers(0, 12_000))
    def time_passes(self, ms: int) -> None:
        """The worker's timer: expired offers and ring openings."""
        self.now += ms
        result = self.loop.run_until_complete(self.store.tick(self.now))
        self._follow([t for t in result if t.domain == self.domain])

    # --- invariants ------------------------------------------------------------------------

    @invariant()
    def no_contact_waits_while_an_agent_who_may_take_it_is_free(self) -> None:
        """Every trigger matched what it could: a waiting contact has no free agent in its open
        rings (except the one it just went back from)."""
        agents = self.agent_views()
        for contact in self.waiting_views():
            declined = {aid for cid, aid in self.declined if cid == contact.contact_id}
            free = [a for a in agents.values() if a.agent_id not in declined]
            assert best_agent(contact, free) is None, (contact, best_agent(contact, free))

    @invariant()
    def books_and_indexes_are_consistent(self) -> None:
        p, r = self.p, self.sync
        lanes = sorted(lane_name(q, lang.value, True) for q in ("refunds", "orders", "general")
                       for lang in Language)
        qkeys = [f"{p}q:{lane}:{ch}:{cls}:{ring}" for lane in lanes for ch in CHANNELS
                 for cls in ("v", "n") for ring in range(3)]
        pipe = r.pipeline(transaction=False)
        for aid in AGENTS:
            pipe.hgetall(f"{p}a:{aid}")
            pipe.smembers(f"{p}ao:{aid}")
        for cid in self.contacts:
            pipe.hgetall(f"{p}c:{cid}")
        pipe.zrange(f"{p}ox", 0, -1)
        for key in qkeys:
            pipe.zrange(key, 0, -1)
        pipe.hgetall(f"{p}wn")
        pipe.hgetall(f"{p}rc")
        pipe.hgetall(f"{p}stats")
        res = iter(pipe.execute())
        agents, offered_to = {}, {}
        for aid in AGENTS:
            agents[aid], offered_to[aid] = next(res), next(res)
        contacts = {cid: next(res) for cid in self.contacts}
        ox = set(next(res))
        queued_in: Counter[str] = Counter()
        queue_of: dict[str, str] = {}
        for key in qkeys:
            for cid in next(res):
                queued_in[cid] += 1
                queue_of[cid] = key
        wn = {lane: int(n) for lane, n in next(res).items()}
        rc_raw, stats_raw = next(res), next(res)

        # No contact offered to two agents; offers, contacts and agents agree.
        all_offers = [cid for cids in offered_to.values() for cid in cids]
        assert len(all_offers) == len(set(all_offers)), "a contact is offered to two agents"
        assert set(all_offers) == ox
        assert set(self.offers) == ox

        # Every contact in exactly one place.
        states = Counter()
        for cid, h in contacts.items():
            state = h.get("st")
            states[state] += 1
            assert state in {"queued", "offered", "answered", "done", "abandoned"}, (cid, h)
            in_queue = queued_in[cid]
            if state == "queued":
                assert queued_in[cid] == 1, (cid, h)
                key = f"{p}q:{h['ln']}:{h['ch']}:{h['cls']}:{h['rg']}"
                assert queue_of[cid] == key, (cid, h, "in the wrong waiting list")
                assert cid not in ox
            elif state == "offered":
                assert in_queue == 0, (cid, h)
                assert cid in ox, (cid, h)
                assert cid in offered_to[h["ag"]], (cid, h)
            else:
                assert in_queue == 0, (cid, h)
                assert cid not in ox, (cid, h)
            if state == "answered":
                assert self.answered.get(cid) == h["ag"]

        # Capacity: loads are exactly the contacts held, never above capacity.
        for aid, h in agents.items():
            if not h:
                continue
            for ch in CHANNELS:
                held = sum(1 for c in contacts.values()
                           if c.get("ag") == aid and c.get("ch") == ch
                           and c.get("st") in {"offered", "answered"})
                load = int(h.get(f"load:{ch}", 0))
                assert load == held, (aid, ch, load, held)
                assert held <= int(h.get(f"cap:{ch}", 0)) or h["st"] == "offline", (aid, ch, h)

        # Indexes: every ready agent with room is in its pools, scored no higher than the
        # policy's score; no agent that is not ready is; ready counts exact per pool.
        ready_count: Counter[str] = Counter()
        fkeys = [(aid, seat, ch) for aid, h in agents.items() if h
                 for seat in Seat.decode_all(h.get("pl", "")) for ch in CHANNELS]
        pipe = r.pipeline(transaction=False)
        for aid, seat, ch in fkeys:
            pipe.zscore(f"{p}f:{seat.pool}:{ch}", aid)
        free_scores = dict(zip(((aid, seat.pool, ch) for aid, seat, ch in fkeys),
                               pipe.execute(), strict=True))
        for aid, h in agents.items():
            if not h:
                continue
            for seat in Seat.decode_all(h.get("pl", "")):
                if h["st"] == "ready":
                    ready_count[seat.pool] += 1
                for ch in CHANNELS:
                    cap, load = int(h.get(f"cap:{ch}", 0)), int(h.get(f"load:{ch}", 0))
                    score = free_scores[aid, seat.pool, ch]
                    if h["st"] == "ready" and load < cap:
                        expected = agent_sort_key(seat.strategy, seat.rank, int(h["last"]),
                                                  load, cap, int(h.get(f"rr:{seat.pool}", 0)))
                        # Lazy indexes: a stored score may lag behind (too low), never ahead.
                        assert score is not None, (aid, seat, ch, "ready with room, not free")
                        assert score <= expected, (aid, seat, ch, score, expected)
                    elif h["st"] != "ready":
                        assert score is None, (aid, seat, ch, "free while not ready")
                    # A full agent may linger until a match looks at it (lazy removal).
        rc = {k: int(v) for k, v in rc_raw.items() if int(v)}
        assert rc == dict(ready_count)

        # Waiting counts per list (only lists with someone waiting) agree with the lists.
        assert wn == {key.removeprefix(f"{p}q:"): n
                      for key, n in Counter(queue_of.values()).items()}

        # Counters agree with the contacts.
        stats = Counter({k: int(v) for k, v in stats_raw.items()})
        assert stats["invariant_violations"] == 0
        assert stats["escalated"] == len(self.contacts)
        assert stats["answered"] == states["answered"] + states["done"]
        assert stats["completed"] == states["done"]
        assert stats["abandoned"] == states["abandoned"]
        assert stats["offered"] == (stats["answered"] + stats["declined"] + stats["expired"]
                                    + stats["rescinded"] + len(ox))


def decode_memberships(text: str) -> list[Membership]:
    out = []
    for item in filter(None, text.split(";")):
        lane, ring, rings = item.split("|")
        out.append(Membership(lane, int(ring), int(rings)))
    return out


REDIS_URL: list[str] = []
SETTINGS = settings(max_examples=100, stateful_step_count=50, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


class DeclineNotReadyMachine(RoutingMachine):
    on_decline = "not_ready"


class NoAnswerStaysReadyMachine(RoutingMachine):
    on_no_answer = "ready"


@pytest.mark.parametrize("machine", [RoutingMachine, DeclineNotReadyMachine,
                                     NoAnswerStaysReadyMachine])
def test_routing_invariants_hold_under_random_interleavings(
    stack: Settings, machine: type[RoutingMachine],
) -> None:
    REDIS_URL[:] = [store_redis_url(stack)]
    run_state_machine_as_test(machine, settings=SETTINGS)
