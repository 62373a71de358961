"""The WebSocket loop of /ws: one task per socket reads frames, checks each (rate, shape,
sign-in, token, role) and hands it to its action; a pump task per socket writes the frames
queued for it (router/gateway/session.py)."""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import WSMsgType, web
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from router import logs
from router.gateway import metrics as gm
from router.gateway.actions import Actions
from router.gateway.auth import Role
from router.gateway.guard import Guard
from router.gateway.hub import Hub
from router.gateway.protocol import (
    SUPERVISOR_ONLY,
    ClientType,
    ErrorCode,
    FloodGate,
    FrameError,
    parse,
)
from router.gateway.session import (
    CLOSE_AUTH,
    CLOSE_HELLO_TIMEOUT,
    CLOSE_TOO_LARGE,
    Session,
    refuse,
)
from router.settings import Settings
from router.stage import now_ms

log = logs.get("gateway")


class Sockets:
    def __init__(self, settings: Settings, hub: Hub, guard: Guard, actions: Actions) -> None:
        self.settings = settings
        self.hub = hub
        self.guard = guard
        self.actions = actions

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        self.guard.check_origin(request)
        ws = web.WebSocketResponse(max_msg_size=self.settings.gateway_max_frame_bytes,
                                   heartbeat=30.0, compress=False)
        await ws.prepare(request)
        transport = request.transport
        session = Session(ws, FloodGate(self.settings.gateway_frames_per_s,
                                        self.settings.gateway_frame_burst),
                          abort=transport.abort if transport is not None else None)
        pump = asyncio.create_task(session.pump())
        loop = asyncio.get_running_loop()
        hello_by = loop.time() + self.settings.gateway_hello_timeout_s
        try:
            while session.closing is None:
                wait = None if session.identity else max(hello_by - loop.time(), 0.0)
                try:
                    msg = await ws.receive(timeout=wait)
                except TimeoutError:
                    refuse(session, ErrorCode.UNAUTHENTICATED, "no valid hello in time",
                           close=CLOSE_HELLO_TIMEOUT)
                    break
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    await self.frame(session, msg.data)
                elif msg.type == WSMsgType.ERROR:  # aiohttp closed it (1009 for a big frame)
                    too_large = getattr(msg.data, "code", None) == CLOSE_TOO_LARGE
                    gm.REFUSED.labels(ErrorCode.TOO_LARGE.value if too_large
                                      else "socket_error").inc()
                    break
                else:  # CLOSE, CLOSING, CLOSED
                    break
        finally:
            self.hub.forget(session)
            session.close(session.closing or 1000)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(pump, 5.0)
            if not ws.closed:
                await ws.close()
        return ws

    async def frame(self, session: Session, raw: str | bytes) -> None:
        if not self.guard.admit(session):
            return
        frame = parse(raw, self.settings.gateway_max_frame_bytes)
        if isinstance(frame, FrameError):
            refuse(session, frame.code, frame.message, frame.ref,
                   close=CLOSE_TOO_LARGE if frame.code == ErrorCode.TOO_LARGE else None)
            return
        ident = session.identity
        if frame.type == ClientType.HELLO:
            try:
                if ident is not None:
                    await self.guard.renew(session, ident, frame)
                else:
                    await self.actions.hello(session, frame)
            except Exception:  # Kafka or Redis down, or a bug: this socket only
                log.exception("gateway_hello_failed")
                refuse(session, ErrorCode.UNAVAILABLE, "the gateway could not sign you in; try "
                       "again", frame.ref, close=1011)
            return
        if ident is None:
            refuse(session, ErrorCode.UNAUTHENTICATED, "send hello with a token first",
                   frame.ref)
            return
        if ident.expires_at_ms <= now_ms():  # the expiry timer may not have run yet
            refuse(session, ErrorCode.TOKEN_EXPIRED, "the token has expired; sign in again",
                   frame.ref, close=CLOSE_AUTH)
            return
        gm.FRAMES_IN.labels(frame.type.value).inc()
        if frame.type == ClientType.PING:
            session.push({"type": "pong", "server_time_ms": now_ms()})
            return
        if frame.type == ClientType.REFRESH:
            self.guard.refresh(session, ident, frame)
            return
        if (frame.type in SUPERVISOR_ONLY) != (ident.role == Role.SUPERVISOR):
            refuse(session, ErrorCode.FORBIDDEN,
                   f"a {ident.role.value} token may not send {frame.type.value}", frame.ref)
            return
        try:
            await self.actions.act(session, ident, frame)
        except (KafkaError, RedisError, OSError) as exc:
            log.warning("gateway_action_failed", extra=logs.fields(
                type=frame.type.value, error=type(exc).__name__))
            refuse(session, ErrorCode.UNAVAILABLE, "the gateway could not reach the router; "
                   "try again", frame.ref)
        except Exception:  # a bug must cost one frame, not the connection or the gateway
            log.exception("gateway_action_crashed", extra=logs.fields(type=frame.type.value))
            refuse(session, ErrorCode.INTERNAL, "the gateway failed on this frame", frame.ref)
