"""A non-Python client (kcat, librdkafka) sends the examples of docs/EVENTS.md exactly as the
doc prints them, and reads the router's answers back."""

from __future__ import annotations

import shutil
import subprocess

import orjson
import pytest
import redis.asyncio as aioredis

from router.demo import WorkerProcess
from router.routing import state as routing_state
from router.routing.store import domain_stats
from router.settings import Settings
from tests.conftest import eventually, repo_root

pytestmark = pytest.mark.integration


def doc_examples() -> list[str]:
    """Every ```json block of docs/EVENTS.md (one line each, by the doc's own rule)."""
    lines = (repo_root() / "docs" / "EVENTS.md").read_text().splitlines()
    return [lines[i + 1] for i, line in enumerate(lines) if line.strip() == "```json"]


def example(type_name: str) -> str:
    return next(e for e in doc_examples() if orjson.loads(e)["type"] == type_name)


def kcat() -> str:
    """scripts/kcat: the system kcat, run with a librdkafka that speaks to the embedded broker."""
    assert shutil.which("kcat") or shutil.which("kafkacat"), (
        "kcat is not installed: `make tools` installs it (apt-get install kcat)")
    return str(repo_root() / "scripts" / "kcat")


def kcat_produce(settings: Settings, topic: str, key: str, line: str) -> None:
    subprocess.run([kcat(), "-P", "-b", settings.kafka_bootstrap_servers, "-t", topic, "-k", key,
                    "-X", "partitioner=murmur2_random"],
                   input=line.encode() + b"\n", check=True, timeout=30)


def kcat_consume(settings: Settings, topic: str) -> list[dict[str, object]]:
    done = subprocess.run([kcat(), "-C", "-b", settings.kafka_bootstrap_servers, "-t", topic,
                           "-o", "beginning", "-e", "-q"], capture_output=True, check=True,
                          timeout=30)
    return [orjson.loads(line) for line in done.stdout.splitlines() if line.strip()]


def test_every_doc_example_is_one_line_of_json() -> None:
    examples = doc_examples()
    assert len(examples) >= 16
    for line in examples:
        orjson.loads(line)


async def test_contact_sent_with_kcat_from_the_docs_is_answered_and_routed(
    stack: Settings, worker: WorkerProcess, redis_client: aioredis.Redis,
) -> None:
    login = orjson.loads(example("agent.logged_in.v1"))
    contact = orjson.loads(example("contact.arrived.v1"))
    human = orjson.loads(example("customer.human_requested.v1"))
    assert human["contact_id"] == contact["contact_id"], "the doc's examples tell one story"
    domain, contact_id = contact["domain"], contact["contact_id"]

    kcat_produce(stack, stack.topic_agents_events, login["domain"],
                 example("agent.logged_in.v1"))
    kcat_produce(stack, stack.topic_contacts_inbound, contact_id, example("contact.arrived.v1"))

    async def arrived() -> bool:
        return (await domain_stats(redis_client, domain))["arrived"] == 1

    assert await eventually(arrived), "the contact never reached the books"
    replies = [r for r in kcat_consume(stack, stack.topic_bot_replies)
               if r["contact_id"] == contact_id]
    assert replies, "no bot reply for the contact"
    assert replies[0]["type"] == "bot.replied.v1"

    # The customer then asks for a person: the contact is routed to the logged-in agent.
    kcat_produce(stack, stack.topic_contacts_inbound, contact_id,
                 example("customer.human_requested.v1"))

    async def offered() -> list[dict[str, object]]:
        return [a for a in kcat_consume(stack, stack.topic_assignments)
                if a["contact_id"] == contact_id and a["type"] == "assignment.offered.v1"]

    offers = await eventually(offered)
    assert offers, "no offer for the contact"
    assert offers[0]["agent_id"] == login["agent_id"]
    state = await routing_state.contact_state(redis_client, domain, contact_id)
    assert state == "offered"


async def test_preferred_agent_request_from_the_docs_is_offered_to_that_agent_first(
    stack: Settings, worker: WorkerProcess, redis_client: aioredis.Redis,
) -> None:
    """routing.requested.v2 as docs/EVENTS.md prints it: its preferred agent is offered the
    contact although a more skilled agent has been idle longer."""
    login = orjson.loads(example("agent.logged_in.v1"))
    request = orjson.loads(example("routing.requested.v2"))
    domain, contact_id = request["domain"], request["contact_id"]
    assert request["preferred_agent"] == login["agent_id"]
    assert login["domain"] == domain
    rival = {**login, "event_id": "kcat-rival-login", "agent_id": "agent-042",
             "skills": {**login["skills"], "orders": 9, "general": 9}}
    kcat_produce(stack, stack.topic_agents_events, domain, orjson.dumps(rival).decode())
    kcat_produce(stack, stack.topic_agents_events, domain, example("agent.logged_in.v1"))

    async def both_ready() -> bool:
        agents = await routing_state.read_agents(redis_client, domain,
                                                 ["agent-042", login["agent_id"]])
        return all(a.ready for a in agents.values()) and len(agents) == 2

    assert await eventually(both_ready), "the agents never logged in"
    kcat_produce(stack, stack.topic_routing_requests, domain, example("routing.requested.v2"))

    async def offered() -> list[dict[str, object]]:
        return [a for a in kcat_consume(stack, stack.topic_assignments)
                if a["contact_id"] == contact_id and a["type"] == "assignment.offered.v1"]

    offers = await eventually(offered)
    assert offers, "no offer for the contact"
    assert offers[0]["agent_id"] == login["agent_id"]
    decisions = [d for d in kcat_consume(stack, stack.topic_routing_decisions)
                 if d.get("contact_id") == contact_id and d.get("decision") == "preferred"]
    assert [(d["agent_id"], d["reason"]) for d in decisions] == [
        (login["agent_id"], "named:used")]
    kcat_produce(stack, stack.topic_agents_events, domain, orjson.dumps({
        "type": "agent.logged_out.v1", "event_id": "kcat-rival-logout", "ts_ms": login["ts_ms"],
        "agent_id": "agent-042", "domain": domain}).decode())


async def test_waiting_customer_from_the_docs_is_told_position_and_estimated_wait(
    stack: Settings, worker: WorkerProcess,
) -> None:
    """The contact.wait_updated.v1 section's request, sent as printed (a domain with nobody
    logged in): the customer is told their position and estimated wait on bot.replies."""
    line = next(e for e in doc_examples() if orjson.loads(e)["type"] == "routing.requested.v1"
                and orjson.loads(e)["contact_id"] == "c-2001")
    request = orjson.loads(line)
    told_doc = orjson.loads(example("contact.wait_updated.v1"))
    kcat_produce(stack, stack.topic_routing_requests, request["domain"], line)

    async def told() -> list[dict[str, object]]:
        return [r for r in kcat_consume(stack, stack.topic_bot_replies)
                if r["contact_id"] == request["contact_id"]
                and r["type"] == "contact.wait_updated.v1"]

    notices = await eventually(told)
    assert notices, "the waiting customer was told nothing"
    first = notices[0]
    assert {k: first[k] for k in ("position", "queue", "lane", "agents")} == {
        k: told_doc[k] for k in ("position", "queue", "lane", "agents")}
    assert first["estimated_wait_s"] == told_doc["estimated_wait_s"]  # 1 x 30 s target, nobody


async def test_callback_from_the_docs_keeps_its_place_and_is_offered_as_a_callback(
    stack: Settings, worker: WorkerProcess, redis_client: aioredis.Redis,
) -> None:
    """customer.callback_requested.v1 as printed, for the waiting contact of the
    contact.wait_updated.v1 section: it stays queued (as a callback), and an agent with a
    callback slot is offered it with channel callback and whom to call back."""
    line = next(e for e in doc_examples() if orjson.loads(e)["type"] == "routing.requested.v1"
                and orjson.loads(e)["contact_id"] == "c-2001")
    callback = orjson.loads(example("customer.callback_requested.v1"))
    domain, contact_id = callback["domain"], callback["contact_id"]
    kcat_produce(stack, stack.topic_routing_requests, domain, line)  # (again: a duplicate)
    kcat_produce(stack, stack.topic_routing_requests, domain,
                 example("customer.callback_requested.v1"))

    async def a_callback() -> bool:
        c = (await routing_state.read_contacts(redis_client, domain, [contact_id]))[contact_id]
        return c.state == "queued" and c.channel == "callback"

    assert await eventually(a_callback), "the contact did not become a waiting callback"
    kcat_produce(stack, stack.topic_agents_events, domain, orjson.dumps({
        "type": "agent.logged_in.v1", "event_id": "kcat-callback-agent", "ts_ms": callback["ts_ms"],
        "agent_id": "agent-cb", "domain": domain, "skills": {"zh": 1, "orders": 1},
        "capacity": {"chat": 1, "callback": 1}}).decode())

    async def offered() -> list[dict[str, object]]:
        return [a for a in kcat_consume(stack, stack.topic_assignments)
                if a["contact_id"] == contact_id and a["type"] == "assignment.offered.v1"]

    offers = await eventually(offered)
    assert offers, "no callback offer"
    assert (offers[0]["agent_id"], offers[0]["channel"], offers[0]["callback_to"]) == (
        "agent-cb", "callback", callback["callback_to"])
