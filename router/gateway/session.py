"""One WebSocket connection of the gateway: who it speaks for, what it holds (offers, active
contacts, what was pushed last), and its ordered, bounded outbox; and the offer frame."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from router import logs
from router.events import AssignmentOffered
from router.gateway import console
from router.gateway import metrics as gm
from router.gateway.auth import Identity
from router.gateway.protocol import ErrorCode, FloodGate, error

log = logs.get("gateway")
OUTBOX_MAX = 2000  # frames queued for one socket; a client that stops reading is cut off
# WebSocket close codes (docs/AGENT_PROTOCOL.md)
CLOSE_AUTH = 4401  # no valid hello (missing, forged, expired, revoked token)
CLOSE_EXPIRED = 4402  # the token expired on the open socket (renew before `expires_at`)
CLOSE_NO_PROFILE = 4403  # no routing profile, or the agent is disabled
CLOSE_ENDED = 4410  # revoked, removed, disabled or logged out by a supervisor
CLOSE_HELLO_TIMEOUT = 4408
CLOSE_POLICY = 1008  # flooding, or a client that does not read its frames
CLOSE_TOO_LARGE = 1009


@dataclass(eq=False)
class Session:
    """One WebSocket connection: who it speaks for (after hello) and what it holds."""

    ws: web.WebSocketResponse
    gate: FloodGate
    identity: Identity | None = None
    seated: bool = False  # logged in to routing (as far as this gateway knows)
    offers: dict[str, AssignmentOffered] = field(default_factory=dict)
    active: dict[str, dict[str, Any]] = field(default_factory=dict)  # contact id -> assigned
    outbox: asyncio.Queue[dict[str, Any] | None] = field(
        default_factory=lambda: asyncio.Queue(OUTBOX_MAX))
    closing: int | None = None  # a close code once the gateway decided to close
    state: str = ""
    hold_until: float = 0.0
    last: dict[str, Any] = field(default_factory=dict)  # what was pushed last, by frame type
    abort: Callable[[], None] | None = None  # drops the TCP connection (a client not reading)
    expiry: asyncio.TimerHandle | None = None  # ends the session at the token's `exp`

    @property
    def key(self) -> tuple[str, str]:
        assert self.identity is not None
        return self.identity.domain, self.identity.subject

    def push(self, frame: dict[str, Any]) -> None:
        """Queue a frame; a client that lets OUTBOX_MAX frames pile up is cut off: its writer
        may be stuck on a full socket buffer, so the connection is aborted, not closed."""
        if self.closing is not None:
            return
        try:
            self.outbox.put_nowait(frame)
        except asyncio.QueueFull:
            gm.REFUSED.labels("slow_consumer").inc()
            self.closing = CLOSE_POLICY
            if self.abort is not None:
                self.abort()

    def close(self, code: int) -> None:
        """Send what is queued, then close with ``code``."""
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        if self.closing is None:
            self.closing = code
            with contextlib.suppress(asyncio.QueueFull):
                self.outbox.put_nowait(None)

    async def pump(self) -> None:
        """Send queued frames in order (one writer per socket)."""
        while True:
            frame = await self.outbox.get()
            if frame is None:
                break
            try:
                await self.ws.send_str(orjson.dumps(frame).decode())
            except (ConnectionError, RuntimeError):
                break
            gm.sent(frame["type"])
        if self.closing is not None and not self.ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.close(code=self.closing)


def refuse(session: Session, code: ErrorCode, message: str, ref: str | None = None,
           close: int | None = None) -> None:
    """Answer a frame (or end a session) with an ``error`` frame, counted and logged; with
    ``close``, then close the socket with that code."""
    gm.REFUSED.labels(code.value).inc()
    who = session.identity.subject if session.identity else ""
    log.info("gateway_frame_refused", extra=logs.fields(code=code.value, agent=who))
    session.push(error(code, message, ref))
    if close is not None:
        session.close(close)


def offer_frame(o: AssignmentOffered, ctx: console.OfferContext | None, now: int
                ) -> dict[str, Any]:
    return {
        "type": "offer", "offer_id": o.offer_id, "contact_id": o.contact_id, "queue": o.queue,
        "channel": o.channel.value, "expires_at": o.expires_at_ms,
        "preferred": o.preferred, "callback_to": o.callback_to,
        "expires_in_ms": max(o.expires_at_ms - now, 0),
        "context": {
            "intent": ctx.intent if ctx else "", "language": ctx.language if ctx else "",
            "priority": o.priority, "vip": ctx.vip if ctx else False,
            "waited_ms": o.waited_ms + max(now - o.ts_ms, 0),
            "transcript": ctx.transcript if ctx else [],
        },
    }
