"""The routing state's owner and the store on a real Redis: re-seating that cannot undo a change
made in between, the offer's context (VIP included) from the routing state, timers after Redis
lost its data, offer ids that stay unique, and a reply lost after the scripts ran."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import TimeoutError as RedisTimeoutError

from router.decode import Decoder
from router.events import (
    AgentLoggedIn,
    AgentState,
    AgentStateChanged,
    Event,
    Language,
    RoutingRequested,
    Tier,
)
from router.gateway import console
from router.routing import state
from router.routing.config import parse_policy
from router.routing.stage import RoutingStage
from router.routing.state import LoginMode, rows
from router.routing.store import RoutingStore, _Call
from router.settings import Settings
from router.stage import Record
from router.transient import TransientError

pytestmark = pytest.mark.integration

POLICY = """
domains:
  "*":
    queues:
      general:
        skills: {general: 1}
        strategy: {strategy}
"""
T0 = 1_800_000_000_000


def policy(strategy: str = "longest_idle") -> Any:
    return parse_policy(POLICY.replace("{strategy}", strategy), f"<{strategy}>")


def login(domain: str, aid: str = "a1", ready: bool = True, **skills: int) -> AgentLoggedIn:
    return AgentLoggedIn(event_id=uuid.uuid4().hex, ts_ms=T0, agent_id=aid, domain=domain,
                         skills={"zh": 1, "general": 1, **skills}, capacity={"chat": 2},
                         ready=ready)


def request(domain: str, cid: str, **kw: Any) -> RoutingRequested:
    return RoutingRequested(event_id=uuid.uuid4().hex, ts_ms=T0, contact_id=cid, domain=domain,
                            queue="general", **kw)


async def test_reseating_cannot_undo_a_state_change_made_after_the_agent_was_read(
    stack: Settings, store_redis: aioredis.Redis,
) -> None:
    domain = f"st-{uuid.uuid4().hex[:8]}"
    await RoutingStore(store_redis, Settings(), policy()).apply([login(domain)], T0)
    new = RoutingStore(store_redis, Settings(), policy("round_robin"))
    read = (await state.read_agents(store_redis, domain))["a1"]  # the re-seat reads: ready
    await new.apply([AgentStateChanged(event_id="s", ts_ms=T0, agent_id="a1", domain=domain,
                                       state=AgentState.NOT_READY)], T0 + 1)
    args = new._login(domain, new.policy.for_domain(domain), "a1", read.skills, read.asked,
                      read.ready, LoginMode.RESEAT, expect=read)
    [result] = await new._run([_Call(domain, args, "")], T0 + 2)
    assert not isinstance(result, Exception)
    assert [t.kind for t in rows(result)] == ["logged_in"]
    after = (await state.read_agents(store_redis, domain))["a1"]
    assert after.state == "not_ready", "the re-seat brought back the state it had read"
    assert after.digest == new.policy.digest


async def test_reseating_skips_an_agent_whose_profile_changed_after_it_was_read(
    stack: Settings, store_redis: aioredis.Redis,
) -> None:
    domain = f"st-{uuid.uuid4().hex[:8]}"
    old = RoutingStore(store_redis, Settings(), policy())
    await old.apply([login(domain)], T0)
    new = RoutingStore(store_redis, Settings(), policy("round_robin"))
    read = (await state.read_agents(store_redis, domain))["a1"]
    await old.apply([login(domain, refunds=2)], T0 + 1)  # a new profile in between
    args = new._login(domain, new.policy.for_domain(domain), "a1", read.skills, read.asked,
                      read.ready, LoginMode.RESEAT, expect=read)
    [result] = await new._run([_Call(domain, args, "")], T0 + 2)
    assert not isinstance(result, Exception)
    assert [t.kind for t in rows(result)] == ["reseat_skipped"]
    assert (await state.read_agents(store_redis, domain))["a1"].skills.get("refunds") == 2


async def test_every_worker_on_the_current_policy_converges_and_an_old_one_does_not_fight(
    stack: Settings, store_redis: aioredis.Redis,
) -> None:
    domain = f"st-{uuid.uuid4().hex[:8]}"
    old = RoutingStore(store_redis, Settings(), policy())
    await old.apply([login(domain, f"a{i}") for i in range(3)], T0)
    new = RoutingStore(store_redis, Settings(), policy("round_robin"))  # deployed later
    await new.tick(T0 + 500)
    agents = await state.read_agents(store_redis, domain)
    assert {a.digest for a in agents.values()} == {new.policy.digest}
    await old.apply([login(domain, "a9")], T0 + 600)  # an old worker still logs one in
    await old.tick(T0 + 700)  # ... and does not re-seat the others back
    await new.tick(T0 + 800)
    agents = await state.read_agents(store_redis, domain)
    assert {a.digest for a in agents.values()} == {new.policy.digest}


async def test_the_offer_context_comes_from_the_routing_state_and_shows_vip(
    stack: Settings, store_redis: aioredis.Redis,
) -> None:
    domain = f"st-{uuid.uuid4().hex[:8]}"
    store = RoutingStore(store_redis, Settings(), policy())
    await store.apply([request(domain, "vip", tier=Tier.VIP, intent="refund_status",
                               language=Language.EN),
                       request(domain, "normal")], T0)
    contexts = await console.offer_contexts(store_redis, [(domain, "vip"), (domain, "normal")])
    assert contexts[(domain, "vip")].vip
    assert contexts[(domain, "vip")].intent == "refund_status"
    assert contexts[(domain, "vip")].language == "en"
    assert not contexts[(domain, "normal")].vip


async def test_timers_keep_working_after_redis_lost_its_data(
    stack: Settings, store_redis: aioredis.Redis,
) -> None:
    """A flush (a restart without AOF, a replica promoted before it synced): the next batch
    registers its domain again, so the timer lapses offers there; offer ids do not restart."""
    domain = f"st-{uuid.uuid4().hex[:8]}"
    store = RoutingStore(store_redis, Settings(offer_timeout_s=1), policy())
    [_, first] = await store.apply([login(domain), request(domain, "c1")], T0)
    assert not isinstance(first, Exception)
    await store_redis.flushdb()
    [_, again] = await store.apply([login(domain), request(domain, "c2")], T0 + 10)
    assert not isinstance(again, Exception)
    [offer] = [t for t in rows(again) if isinstance(t, state.Offered)]
    assert domain in await state.domains(store_redis)
    expired = [t for t in rows(await store.tick(T0 + 60_000)) if t.domain == domain]
    assert [t.kind for t in expired][:1] == ["expired"]
    old = await RoutingStore(store_redis, Settings(), policy()).apply(
        [request(f"{domain}-x", "c1")], T0)
    assert offer.offer_id.startswith("o")
    assert offer.offer_id not in {getattr(t, "offer_id", "") for r in old
                                  if not isinstance(r, Exception) for t in rows(r)}


async def test_a_reply_lost_after_the_scripts_ran_gives_the_same_outputs_once_retried(
    stack: Settings, store_redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:
    domain = f"st-{uuid.uuid4().hex[:8]}"
    store = RoutingStore(store_redis, Settings(), policy())
    stage = RoutingStage(store, Decoder(), clock=lambda: T0)
    await store.apply([login(domain)], T0)
    events: list[Event] = [request(domain, "c1"), request(domain, "c2"), request(domain, "c3")]
    records = [Record("t", 0, i, domain.encode(), e.to_json()) for i, e in enumerate(events)]
    original = Pipeline.execute
    lost = []

    async def execute_then_lose_the_reply(self: Pipeline, *a: Any, **kw: Any) -> Any:
        scripts = any(c[0][0] in ("EVALSHA", "FCALL") for c in self.command_stack)
        result = await original(self, *a, **kw)
        if not lost and scripts:
            lost.append(True)
            raise RedisTimeoutError("Timeout reading from socket")
        return result

    monkeypatch.setattr(Pipeline, "execute", execute_then_lose_the_reply)
    with pytest.raises((RedisTimeoutError, TransientError)):
        await stage.handle("routing_requests", records)
    outputs = await stage.handle("routing_requests", records)  # the transport's retry
    monkeypatch.setattr(Pipeline, "execute", original)
    ids = [o.event.event_id for o in outputs]
    assert len(ids) == len(set(ids))
    kinds = sorted(getattr(o.event, "decision", o.event.TYPE) for o in outputs)
    assert kinds.count("offered") == 2  # capacity 2: two offers, one queued
    assert kinds.count("queued") == 1
    stats = await state.stats(store_redis, domain)
    assert (stats["escalated"], stats["offered"]) == (3, 2)  # applied once
    stage.delivered(outputs)
    await store.flush_acks()
    assert await state.outbox_size(store_redis, domain) == 0


async def test_transition_constructors_fill_what_a_caller_leaves_nil(
    store_redis: aioredis.Redis,
) -> None:
    """Transitions travel as arrays (the kind, then the fields in order): a nil argument would end
    the array early, so each constructor puts the field's default in its place."""
    constructors = "\n".join(line for line in state.lua_prelude("request").splitlines()
                             if line.startswith("local function T_"))
    raw = await store_redis.eval(  # type: ignore[misc]
        constructors + "\nreturn cmsgpack.pack({T_offered('c1', nil, 'chat', nil, 2), "
        "T_answered(nil, 'a1', nil, nil, nil, nil, nil, 'o1', true), T_stale('c2')})", 0)
    decoded = msgspec.msgpack.Decoder(list[state.Transition]).decode(raw)
    assert decoded == [
        state.Offered(contact_id="c1", channel="chat", ring=2),
        state.Answered(agent_id="a1", offer_id="o1", within_target=True),
        state.Stale(contact_id="c2"),
    ]


async def test_an_outbox_entry_an_earlier_version_kept_as_maps_is_re_sent_and_read(
    stack: Settings, store_redis: aioredis.Redis,
) -> None:
    """Workers before array-form transitions kept them in the outbox as maps: after an upgrade
    the timer re-sends such an entry, and the store reads it as it was."""
    domain = f"st-{uuid.uuid4().hex[:8]}"
    store = RoutingStore(store_redis, Settings(), policy())
    await store.apply([login(domain)], T0)
    [entries] = await store.apply([request(domain, "c1")], T0)
    assert not isinstance(entries, Exception)
    [entry] = [e for e in entries if e.id]
    as_maps = [{"k": t.kind, **{f: getattr(t, f) for f in t.__struct_fields__
                                if f != "domain"}} for t in entry.rows]
    await store_redis.hset(state.key(domain, state.Key.OUTBOX), entry.id,
                           msgspec.msgpack.encode(as_maps))
    later = T0 + 60_000
    resent = [e for e in await store.tick(later) if e.id == entry.id]
    assert [e.rows for e in resent] == [entry.rows]
