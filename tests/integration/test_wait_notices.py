"""Position and estimated wait told to waiting customers, on a real Redis with a simulated
clock: the notice when a contact is queued, the lane's pace from its answers, and the timer's
updates (every interval, sooner when the estimate moves past the threshold)."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from router.events import (
    AgentLoggedIn,
    ContactCompleted,
    ContactWaitUpdated,
    OfferAccepted,
    RoutingRequested,
)
from router.routing import state
from router.routing.stage import transition_outputs
from router.routing.state import Transition
from router.settings import Settings
from tests.integration._clocked import ClockedRun

pytestmark = pytest.mark.integration

POLICY = """
domains:
  "*":
    offer_timeout_s: 600
    queues:
      general:
        skills: {general: 1}
        service_target_s: 30
"""


class Run(ClockedRun):
    def __init__(self, client: aioredis.Redis) -> None:
        super().__init__(client, POLICY, name="w", settings=Settings(
            wait_update_interval_s=20, wait_update_threshold_s=5))

    def request(self, cid: str) -> RoutingRequested:
        return RoutingRequested(event_id=self.eid(), ts_ms=self.now, contact_id=cid,
                                domain=self.domain)

    async def answer_and_complete(self, ts: list[Transition]) -> None:
        for t in ts:
            if isinstance(t, state.Offered):
                await self.apply(OfferAccepted(
                    event_id=self.eid(), ts_ms=self.now, agent_id=t.agent_id,
                    domain=self.domain, offer_id=t.offer_id, contact_id=t.contact_id))


def told(ts: list[Transition]) -> dict[str, tuple[int, int]]:
    return {t.contact_id: (t.position, t.estimate_ms) for t in ts
            if isinstance(t, state.Waiting)}


async def test_queued_customers_hear_their_position_and_an_estimate_from_the_lanes_pace(
        store_redis: aioredis.Redis) -> None:
    run = Run(store_redis)
    await run.apply(AgentLoggedIn(event_id=run.eid(), ts_ms=run.now, agent_id="a",
                                  domain=run.domain, skills={"zh": 1, "general": 1},
                                  capacity={"chat": 1}))
    await run.answer_and_complete(await run.apply(run.request("c0")))  # "a" is busy now
    got: dict[str, tuple[int, int]] = {}
    for i in (1, 2, 3):
        run.now += 1
        got |= told(await run.apply(run.request(f"c{i}")))
    # Before the lane has a gap between answers with a line: position x target / agents ready
    # in ring 0 (none).
    assert got == {"c1": (1, 30_000), "c2": (2, 60_000), "c3": (3, 90_000)}
    waiting = [t for t in await run.apply(run.request("c4")) if isinstance(t, state.Waiting)]
    [notice] = [o.event for o in transition_outputs(waiting[0], run.now)]
    assert isinstance(notice, ContactWaitUpdated)
    assert (notice.position, notice.estimated_wait_s, notice.queue) == (4, 120, "general")
    assert notice.estimated_wait_ms == 120_000
    assert not notice.callback_offered  # no callback offered unless asked to
    [offering] = [o.event for o in transition_outputs(waiting[0], run.now,
                                                       callback_after_s=120)]
    assert isinstance(offering, ContactWaitUpdated)
    assert offering.callback_offered
    # Answers about 10 s apart set the lane's pace: the timer tells the customers the new estimate
    # (it moved by more than the 5 s threshold) before the 20 s interval is up.
    for cid in ("c0", "c1"):
        run.now += 10_000
        ts = await run.apply(ContactCompleted(event_id=run.eid(), ts_ms=run.now, agent_id="a",
                                              domain=run.domain, contact_id=cid))
        await run.answer_and_complete(ts)
    updates = told(await run.tick(1_000))  # c2 is answered; c3 and c4 wait
    assert {cid: (p, round(ms, -3)) for cid, (p, ms) in updates.items()} == {
        "c3": (1, 10_000), "c4": (2, 20_000)}
    # Nothing moved: the next notices come at the interval.
    assert told(await run.tick(5_000)) == {}
    assert set(told(await run.tick(15_000))) == {"c3", "c4"}


async def test_the_pace_is_the_recent_wait_per_place_in_line(
        store_redis: aioredis.Redis) -> None:
    """A contact answered after being told a position teaches what a place in line costs now:
    its wait since that notice / that position. The pace moves toward each answer's figure by at
    most 10 % (one customer who waited very long cannot throw it); a lane uses the
    domain's pace until it has 20 answers of its own. A contact answered at once teaches
    nothing."""
    run = Run(store_redis)
    await run.apply(AgentLoggedIn(event_id=run.eid(), ts_ms=run.now, agent_id="a",
                                  domain=run.domain, skills={"zh": 1, "general": 1},
                                  capacity={"chat": 1}))

    async def complete(cid: str) -> None:
        await run.answer_and_complete(await run.apply(ContactCompleted(
            event_id=run.eid(), ts_ms=run.now, agent_id="a", domain=run.domain,
            contact_id=cid)))

    await run.answer_and_complete(await run.apply(run.request("c0")))  # at once: no sample
    told_first = told(await run.apply(run.request("c1"))) | told(
        await run.apply(run.request("c2")))
    assert told_first == {"c1": (1, 30_000), "c2": (2, 60_000)}  # no pace yet: the target
    run.now += 6_000
    await complete("c0")  # c1 answered 6 s after it was told position 1: 6 s a place
    assert told(await run.apply(run.request("c3"))) == {"c3": (2, 12_000)}
    run.now += 30_000
    await complete("c1")  # c2: 36 s for position 2, 18 s a place: the pace moves 10 % up, no more
    assert told(await run.tick(1_000)) == {"c3": (1, 6_600)}
    paces = await store_redis.hgetall(state.key(run.domain, state.Key.LANE_PACE))
    assert paces == {b"general.zh": b"6600.0|2", b"*": b"6600.0|2"}
