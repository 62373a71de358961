"""An agent gateway on the session's stack (in the test's event loop) and a raw WebSocket
client for it: shared by the protocol, roster and browser tests."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from router.demo import WorkerProcess
from router.events import ContactArrived, Event, RoutingRequested
from router.gateway.auth import Role, issue
from router.gateway.metrics import REGISTRY
from router.gateway.roster import Profile
from router.gateway.server import Gateway
from router.settings import Settings
from router.stack import free_port
from router.stage import now_ms

SECRET = "integration-test-secret-of-at-least-32-bytes"


@dataclass
class Client:
    """A raw WebSocket client: send frames, read frames until one of a type arrives."""

    ws: aiohttp.ClientWebSocketResponse
    seen: list[dict[str, Any]] = field(default_factory=list)  # every frame read
    unread: list[dict[str, Any]] = field(default_factory=list)  # read while awaiting others

    async def send(self, frame: dict[str, Any] | str | bytes) -> None:
        if isinstance(frame, dict):
            await self.ws.send_str(orjson.dumps(frame).decode())
        elif isinstance(frame, str):
            await self.ws.send_str(frame)
        else:
            await self.ws.send_bytes(frame)

    async def until(self, kind: str, timeout_s: float = 20.0, **match: Any) -> dict[str, Any]:
        """The first frame of this type (and these field values) not yet taken, read or not."""
        def fits(frame: dict[str, Any]) -> bool:
            return frame["type"] == kind and all(frame.get(k) == v for k, v in match.items())

        for frame in self.unread:
            if fits(frame):
                self.unread.remove(frame)
                return frame
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {kind} frame {match} within {timeout_s} s; "
                                     f"saw {[f['type'] for f in self.seen][-20:]}")
            msg = await self.ws.receive(timeout=left)
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise AssertionError(f"socket ended ({msg.type}, code {self.ws.close_code}) "
                                     f"waiting for {kind}")
            frame = orjson.loads(msg.data)
            self.seen.append(frame)
            if fits(frame):
                return frame
            self.unread.append(frame)

    async def closed(self, timeout_s: float = 10.0) -> int | None:
        """Read until the server closes the socket; its close code."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = await self.ws.receive(timeout=deadline - time.monotonic())
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                            aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR):
                return self.ws.close_code
            self.seen.append(orjson.loads(msg.data))
        raise AssertionError("the server did not close the socket")


@dataclass
class GatewayUnderTest:
    gateway: Gateway
    settings: Settings
    port: int
    http: aiohttp.ClientSession

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def token(self, subject: str, domain: str, role: Role = Role.AGENT,
              ttl_s: float | None = None) -> str:
        return issue(self.settings, subject, role, domain, ttl_s)

    async def connect(self) -> Client:
        return Client(await self.http.ws_connect(f"{self.base}/ws", autoclose=False,
                                                 max_msg_size=0))

    async def agent(self, agent_id: str, domain: str, skills: dict[str, int],
                    capacity: dict[str, int] | None = None, ready: bool = True) -> Client:
        """An agent in the roster, signed in over /ws (and ready)."""
        await self.gateway.roster.put(
            domain, [Profile(agent_id, skills, capacity or {"chat": 2})], by="test")
        client = await self.connect()
        await client.send({"type": "hello", "token": self.token(agent_id, domain)})
        await client.until("welcome")
        if ready:
            await client.send({"type": "state", "state": "ready", "id": "r"})
            await client.until("ack", ref="r")
        return client


def refused(code: str) -> float:
    return REGISTRY.get_sample_value("peakroute_gateway_refused_frames_total",
                                     {"code": code}) or 0.0


async def publish(prod: AIOKafkaProducer, topic: str, key: str, event: Event) -> None:
    await prod.send_and_wait(topic, event.to_json(), key=key.encode())


async def request_contact(prod: AIOKafkaProducer, settings: Settings, domain: str,
                          queue: str, **extra: Any) -> str:
    """A routing request (an escalation) for a new contact of this queue; its id."""
    cid = f"c-{uuid.uuid4().hex[:10]}"
    await publish(prod, settings.topic_routing_requests, domain, RoutingRequested(
        event_id=uuid.uuid4().hex, ts_ms=now_ms(), contact_id=cid, domain=domain,
        queue=queue, **extra))
    return cid


async def escalated_contact(prod: AIOKafkaProducer, settings: Settings, domain: str,
                            text: str, language: str = "en", tier: str = "normal") -> str:
    """A new contact through the bot that asks for a person (so it escalates with context)."""
    cid = f"c-{uuid.uuid4().hex[:10]}"
    await publish(prod, settings.topic_contacts_inbound, cid, ContactArrived(
        event_id=uuid.uuid4().hex, ts_ms=now_ms(), contact_id=cid, domain=domain,
        customer_id="u-1", language=language, tier=tier, text=text))  # type: ignore[arg-type]
    return cid


@pytest.fixture(scope="module")
async def gw(stack: Settings, worker: WorkerProcess) -> AsyncIterator[GatewayUnderTest]:
    settings = stack.replace(gateway_jwt_secret=SECRET, gateway_hello_timeout_s=1.5,
                             gateway_console_interval_s=0.3, gateway_frames_per_s=20.0,
                             gateway_frame_burst=20, gateway_flood_strikes=15,
                             gateway_max_frame_bytes=4096)
    gateway = Gateway(settings)
    port = free_port()
    await gateway.serve("127.0.0.1", port)
    async with aiohttp.ClientSession() as http:
        yield GatewayUnderTest(gateway, settings, port, http)
    await gateway.stop()
