"""Who may speak and how much: the Origin allow-list for /ws, the flood limit per identity,
tokens (verified, checked against revocations, renewed) and the ends of sessions (a token's
`exp`, a revocation, a removal, a disabling, a supervisor's logout)."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from aiohttp import web

from router import logs
from router.gateway import ends
from router.gateway import metrics as gm
from router.gateway.auth import AuthError, Identity, Verifier, issue
from router.gateway.ends import End
from router.gateway.hub import Hub
from router.gateway.protocol import ErrorCode, Frame
from router.gateway.session import (
    CLOSE_AUTH,
    CLOSE_ENDED,
    CLOSE_EXPIRED,
    CLOSE_POLICY,
    Session,
    refuse,
)
from router.settings import Settings
from router.stage import now_ms

log = logs.get("gateway")


class Guard:
    def __init__(self, settings: Settings, verifier: Verifier, redis: aioredis.Redis,
                 hub: Hub) -> None:
        self.settings = settings
        self.verifier = verifier
        self.redis = redis
        self.hub = hub
        self.allowed_origins = {o.strip().rstrip("/").lower()
                                for o in settings.gateway_allowed_origins.split(",") if o.strip()}

    # --- before the socket ------------------------------------------------------------------

    def check_origin(self, request: web.Request) -> None:
        """A browser names the page that opens a socket: only the allowed origins (by default,
        the gateway's own pages) may; a client without Origin is not a browser page."""
        origin = request.headers.get("Origin")
        if origin is None:
            return
        origin = origin.strip().rstrip("/").lower()
        allowed = (origin in self.allowed_origins if self.allowed_origins
                   else urlsplit(origin).netloc == request.host.lower())
        if not allowed:
            gm.REFUSED.labels(ErrorCode.FOREIGN_ORIGIN.value).inc()
            log.info("gateway_origin_refused", extra=logs.fields(origin=origin[:200]))
            raise web.HTTPForbidden(text="this origin may not open the agent socket "
                                         "(PEAKROUTE_GATEWAY_ALLOWED_ORIGINS)")

    # --- each frame -------------------------------------------------------------------------

    def admit(self, session: Session) -> bool:
        """The frame is within the identity's rate; if not, it is refused (and past the
        strikes limit the socket is closed)."""
        gate = self.hub.gate(session)
        if gate.allow(time.monotonic()):
            return True
        strikes = gate.strikes
        if strikes >= self.settings.gateway_flood_strikes:
            refuse(session, ErrorCode.RATE_LIMITED, "too many frames; closing",
                   close=CLOSE_POLICY)
        elif strikes == 1 or strikes % 10 == 0:
            refuse(session, ErrorCode.RATE_LIMITED,
                   f"at most {self.settings.gateway_frames_per_s:g} frames/s")
        else:
            gm.REFUSED.labels(ErrorCode.RATE_LIMITED.value).inc()
        return False

    # --- tokens -----------------------------------------------------------------------------

    async def verified(self, session: Session, frame: Frame) -> Identity | None:
        """The frame's token checked (signature, claims, revocation), or None (refused)."""
        try:
            ident = await self.verifier.check(frame.data["token"],
                                              self.settings.gateway_domain)
        except AuthError as exc:
            refuse(session, ErrorCode(exc.code), str(exc), frame.ref, close=CLOSE_AUTH)
            return None
        if ident.issued_at_ms <= await ends.revoked_at_ms(self.redis, ident.domain,
                                                          ident.subject):
            refuse(session, ErrorCode.TOKEN_REVOKED, "this token was revoked; sign in again",
                   frame.ref, close=CLOSE_AUTH)
            return None
        return ident

    def room_for(self, session: Session, ident: Identity, frame: Frame) -> bool:
        """The identity holds fewer sockets than its limit (else the hello is refused)."""
        if self.hub.held(ident) < self.settings.gateway_sockets_per_agent:
            return True
        refuse(session, ErrorCode.TOO_MANY_SOCKETS, f"at most "
               f"{self.settings.gateway_sockets_per_agent} sockets per sign-in; close another "
               "tab", frame.ref, close=CLOSE_POLICY)
        return False

    def arm_expiry(self, session: Session, ident: Identity) -> None:
        """End the session at the token's `exp`, whether or not the client sends anything."""
        if session.expiry is not None:
            session.expiry.cancel()
        delay_s = max(ident.expires_at_ms - now_ms(), 0) / 1000
        session.expiry = asyncio.get_running_loop().call_later(delay_s, self._expire, session)

    def _expire(self, session: Session) -> None:
        session.expiry = None
        refuse(session, ErrorCode.TOKEN_EXPIRED, "the token has expired; sign in again",
               close=CLOSE_EXPIRED)

    async def renew(self, session: Session, ident: Identity, frame: Frame) -> None:
        """A second hello on a signed-in socket: the identity provider's fresh token for the
        same identity keeps the session (offers, active contacts) past the old one's expiry."""
        fresh = await self.verified(session, frame)
        if fresh is None:
            return
        if (fresh.subject, fresh.role, fresh.domain) != (ident.subject, ident.role,
                                                          ident.domain):
            refuse(session, ErrorCode.FORBIDDEN, "a renewed token must name the same agent, "
                   "role and domain", frame.ref, close=CLOSE_AUTH)
            return
        session.identity = fresh
        self.arm_expiry(session, fresh)
        gm.FRAMES_IN.labels("hello").inc()
        session.push({"type": "renewed", "expires_at": fresh.expires_at_ms,
                      **({"ref": frame.ref} if frame.ref else {})})

    def refresh(self, session: Session, ident: Identity, frame: Frame) -> None:
        """HS256: a new token of the same claims and lifetime (the identity provider issues
        RS256 tokens: the desktop sends its fresh one in a new hello instead)."""
        if self.settings.gateway_jwt_algorithm != "HS256":
            refuse(session, ErrorCode.INVALID_FIELD, "tokens come from your identity provider: "
                   "send hello with its fresh token", frame.ref)
            return
        lifetime_s = max(ident.expires_at_ms - ident.issued_at_ms, 1000) / 1000
        now_s = max(time.time(), ident.issued_at_ms / 1000 + 1)
        token = issue(self.settings, ident.subject, ident.role, ident.domain, lifetime_s,
                      now_s=now_s)
        fresh = self.verifier.verify(token, ident.domain)
        session.identity = fresh
        self.arm_expiry(session, fresh)
        session.push({"type": "renewed", "token": token, "expires_at": fresh.expires_at_ms,
                      **({"ref": frame.ref} if frame.ref else {})})

    # --- ends from the stream ----------------------------------------------------------------

    def end(self, end: End) -> None:
        """An end read from the stream: close this process's sockets of that identity."""
        sessions = self.hub.of_identity(end.domain, end.agent_id)
        for s in sessions:
            refuse(s, ErrorCode(end.reason.value), ends.MESSAGES[end.reason], close=CLOSE_ENDED)
        if sessions:
            log.info("gateway_sessions_ended", extra=logs.fields(
                agent=end.agent_id, reason=end.reason.value, sockets=len(sessions)))
