"""The agent gateway: an aiohttp server with the desktop (/), the supervisor console
(/supervisor), their static files, /metrics, /healthz and the WebSocket endpoint /ws.

Desktop actions become agents.events records (the same events as ``agents.client``), so routing
has one way in. The gateway reads assignments and routing.decisions from the end without a
consumer group and pushes each record to the sockets of the agent it names (an instance holds
only its own connections; docs/ARCHITECTURE.md, "Agent gateway"). Every client frame is checked
(docs/AGENT_PROTOCOL.md); a refused one is answered with an ``error`` frame and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from importlib import resources
from typing import Any

from aiohttp import WSMsgType, web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError

from router import logs
from router.decode import Decoder, Limits, Rejection
from router.events import (
    AgentLoggedIn,
    AgentLoggedOut,
    AgentProfileApplied,
    AgentState,
    AgentStateChanged,
    AssignmentOffered,
    AssignmentRescinded,
    ContactCompleted,
    Decision,
    Event,
    OfferAccepted,
    OfferDeclined,
    RoutingDecision,
)
from router.gateway import console
from router.gateway import metrics as gm
from router.gateway.auth import AuthError, Identity, Role, Verifier
from router.gateway.protocol import (
    SUPERVISOR_ONLY,
    ClientType,
    DeskState,
    ErrorCode,
    FloodGate,
    Frame,
    FrameError,
    ack,
    error,
    parse,
)
from router.gateway.roster import Profile, Roster, RosterError, change_event, served_queues
from router.gateway.session import (
    CLOSE_AUTH,
    CLOSE_HELLO_TIMEOUT,
    CLOSE_NO_PROFILE,
    CLOSE_POLICY,
    CLOSE_TOO_LARGE,
    Session,
    offer_frame,
)
from router.kafka import assign_all, consumer, ensure_topics, producer
from router.redis_client import blocking_pool_client
from router.routing import state
from router.routing.config import DomainPolicy, RoutingPolicy, policy_from_settings
from router.settings import Settings
from router.stage import now_ms

log = logs.get("gateway")
STATE_HOLD_S = 2.0  # after a state action, the sync loop waits this long to contradict it
ONLINE_WITHIN_MS = 5000  # a desktop seen by a gateway this recently counts as connected
CONSOLE_AGENTS_MAX = 1000  # agents one console frame lists
REDIS_CONNECTIONS = 32  # per gateway process
WRAP_UP_DEFAULT = "resolved"
STATIC = resources.files("router.gateway") / "static"


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v or "")


class Gateway:
    """The gateway of one process: connections, Kafka in and out, Redis reads."""

    def __init__(self, settings: Settings, policy: RoutingPolicy | None = None) -> None:
        self.settings = settings
        self.policy = policy or policy_from_settings(settings)
        self.verifier = Verifier(settings)
        self.decoder = Decoder(Limits(settings.max_record_bytes, settings.max_text_chars))
        # Every socket may read at once (a burst of sign-ins): calls wait for one of a bounded
        # set of connections instead of failing with "Too many connections".
        self.redis = blocking_pool_client(settings, REDIS_CONNECTIONS, 30, socket_timeout=10)
        self.roster = Roster(self.redis)
        self.levels = console.ServiceLevels(int(settings.short_abandon_s * 1000))
        self.ratings = console.Ratings(self.redis, settings)
        self.agents: dict[tuple[str, str], set[Session]] = defaultdict(set)
        self.supervisors: set[Session] = set()
        self.offer_owner: dict[tuple[str, str], str] = {}  # (domain, offer id) -> agent
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._count_once = self.redis.register_script(console.COUNT_ONCE)
        self._runner: web.AppRunner | None = None
        self._stopping = False

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        await ensure_topics(self.settings)
        # Every desktop action is one small record keyed by its domain: big batches let a burst
        # of them share a round trip to the partition leader.
        self._producer = producer(self.settings, linger_ms=2, max_batch_size=262_144)
        await self._producer.start()
        self._consumer = consumer(self.settings, group_id=None, auto_offset_reset="latest")
        await self._consumer.start()
        await assign_all(self._consumer, [self.settings.topic_assignments,
                                          self.settings.topic_routing_decisions], from_end=True)
        self._tasks = [asyncio.create_task(self._read(), name="gateway-reader"),
                       asyncio.create_task(self._sync(), name="gateway-sync")]

    async def serve(self, host: str, port: int) -> None:
        """Start and listen on host:port (returns once listening)."""
        await self.start()
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False,
                                     shutdown_timeout=2.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        log.info("gateway_started", extra=logs.fields(host=host, port=port))

    async def stop(self) -> None:
        for s in [s for group in self.agents.values() for s in group] + list(self.supervisors):
            s.close(1001)
        if self._runner is not None:
            await self._runner.cleanup()
        self._stopping = True
        # A library may take a cancellation for its own timeout (asyncio.timeout in redis-py):
        # the loops also watch _stopping, and are cancelled until they are done.
        while pending := [t for t in self._tasks if not t.done()]:
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=1.0)
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()
        await self.redis.aclose()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_get("/", self._page("desktop.html"))
        app.router.add_get("/supervisor", self._page("supervisor.html"))
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/ws", self._ws)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/favicon.ico", self._favicon)
        return app

    # --- HTTP --------------------------------------------------------------------------------

    def _page(self, name: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            return web.Response(body=(STATIC / name).read_bytes(), content_type="text/html",
                                charset="utf-8", headers=_SECURITY_HEADERS)
        return handler

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        kind = _STATIC_TYPES.get(name.rpartition(".")[2])
        if kind is None or "/" in name or name.startswith("."):
            raise web.HTTPNotFound()
        path = STATIC / name
        if not path.is_file():
            raise web.HTTPNotFound()
        return web.Response(body=path.read_bytes(), content_type=kind, charset="utf-8",
                            headers={"Cache-Control": "no-cache"})

    async def _favicon(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "agents": len(self.agents),
                                  "supervisors": len(self.supervisors)})

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=gm.exposition(),
                            content_type=CONTENT_TYPE_LATEST.split(";")[0])

    # --- WebSocket ---------------------------------------------------------------------------

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
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
                    self._refuse(session, ErrorCode.UNAUTHENTICATED,
                                 "no valid hello in time", close=CLOSE_HELLO_TIMEOUT)
                    break
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    await self._frame(session, msg.data)
                elif msg.type == WSMsgType.ERROR:  # aiohttp closed it (1009 for a big frame)
                    too_large = getattr(msg.data, "code", None) == CLOSE_TOO_LARGE
                    gm.REFUSED.labels(ErrorCode.TOO_LARGE.value if too_large
                                      else "socket_error").inc()
                    break
                else:  # CLOSE, CLOSING, CLOSED
                    break
        finally:
            self._forget(session)
            session.close(session.closing or 1000)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(pump, 5.0)
            if not ws.closed:
                await ws.close()
        return ws

    def _refuse(self, session: Session, code: ErrorCode, message: str, ref: str | None = None,
                close: int | None = None) -> None:
        gm.REFUSED.labels(code.value).inc()
        who = session.identity.subject if session.identity else ""
        log.info("gateway_frame_refused", extra=logs.fields(code=code.value, agent=who))
        session.push(error(code, message, ref))
        if close is not None:
            session.close(close)

    async def _frame(self, session: Session, raw: str | bytes) -> None:
        if not session.gate.allow(time.monotonic()):
            strikes = session.gate.strikes
            if strikes >= self.settings.gateway_flood_strikes:
                self._refuse(session, ErrorCode.RATE_LIMITED, "too many frames; closing",
                             close=CLOSE_POLICY)
            elif strikes == 1 or strikes % 10 == 0:
                self._refuse(session, ErrorCode.RATE_LIMITED,
                             f"at most {self.settings.gateway_frames_per_s:g} frames/s")
            else:
                gm.REFUSED.labels(ErrorCode.RATE_LIMITED.value).inc()
            return
        frame = parse(raw, self.settings.gateway_max_frame_bytes)
        if isinstance(frame, FrameError):
            self._refuse(session, frame.code, frame.message, frame.ref,
                         close=CLOSE_TOO_LARGE if frame.code == ErrorCode.TOO_LARGE else None)
            return
        ident = session.identity
        if frame.type == ClientType.HELLO:
            try:
                await self._hello(session, frame)
            except Exception:  # Kafka or Redis down, or a bug: this socket only
                log.exception("gateway_hello_failed")
                self._refuse(session, ErrorCode.UNAVAILABLE, "the gateway could not sign you "
                             "in; try again", frame.ref, close=1011)
            return
        if ident is None:
            self._refuse(session, ErrorCode.UNAUTHENTICATED, "send hello with a token first",
                         frame.ref)
            return
        if ident.expires_at_ms <= now_ms():
            self._refuse(session, ErrorCode.TOKEN_EXPIRED, "the token has expired; sign in again",
                         frame.ref, close=CLOSE_AUTH)
            return
        gm.FRAMES_IN.labels(frame.type.value).inc()
        if frame.type == ClientType.PING:
            session.push({"type": "pong", "server_time_ms": now_ms()})
            return
        if (frame.type in SUPERVISOR_ONLY) != (ident.role == Role.SUPERVISOR):
            self._refuse(session, ErrorCode.FORBIDDEN,
                         f"a {ident.role.value} token may not send {frame.type.value}", frame.ref)
            return
        try:
            await self._act(session, ident, frame)
        except (KafkaError, RedisError, OSError) as exc:
            log.warning("gateway_action_failed", extra=logs.fields(
                type=frame.type.value, error=type(exc).__name__))
            self._refuse(session, ErrorCode.UNAVAILABLE, "the gateway could not reach the "
                         "router; try again", frame.ref)
        except Exception:  # a bug must cost one frame, not the connection or the gateway
            log.exception("gateway_action_crashed", extra=logs.fields(type=frame.type.value))
            self._refuse(session, ErrorCode.INTERNAL, "the gateway failed on this frame",
                         frame.ref)

    async def _hello(self, session: Session, frame: Frame) -> None:
        if session.identity is not None:
            self._refuse(session, ErrorCode.ALREADY_AUTHENTICATED, "hello was already sent",
                         frame.ref)
            return
        try:
            ident = self.verifier.verify(frame.data["token"], self.settings.gateway_domain)
        except AuthError as exc:
            self._refuse(session, ErrorCode(exc.code), str(exc), frame.ref, close=CLOSE_AUTH)
            return
        gm.FRAMES_IN.labels("hello").inc()
        domain_policy = self.policy.for_domain(ident.domain)
        if ident.role == Role.SUPERVISOR:
            session.identity = ident
            self.supervisors.add(session)
            gm.CONNECTIONS.labels("supervisor").inc()
            session.push({"type": "welcome", "role": "supervisor", "agent_id": ident.subject,
                          "domain": ident.domain, "queues": sorted(domain_policy.queues),
                          "skills": _policy_skills(domain_policy),
                          "expires_at": ident.expires_at_ms, "server_time_ms": now_ms()})
            await self._push_console([session])
            return
        profile = await self.roster.get(ident.domain, ident.subject)
        if profile is None:
            self._refuse(session, ErrorCode.NO_PROFILE, f"agent {ident.subject} has no routing "
                         "profile; ask a supervisor (peakroute agents add)", frame.ref,
                         close=CLOSE_NO_PROFILE)
            return
        session.identity = ident
        self.agents[session.key].add(session)  # before reading offers: none can slip between
        gm.CONNECTIONS.labels("agent").inc()
        view = (await console.agent_views(self.redis, ident.domain, [ident.subject]))[
            ident.subject]
        if view.state == "offline":
            await self._publish(AgentLoggedIn(
                event_id=_eid(), ts_ms=now_ms(), agent_id=ident.subject, domain=ident.domain,
                skills=profile.skills, capacity=profile.capacity, ready=False))
            view = console.AgentView(ident.subject, "not_ready", profile.skills,
                                     profile.capacity, dict.fromkeys(profile.capacity, 0))
            session.hold_until = time.monotonic() + STATE_HOLD_S
        session.seated = True
        session.state = view.state
        session.active = await console.active_contacts(self.redis, ident.domain, ident.subject)
        figures = (await console.figures_today(self.redis, ident.domain, [ident.subject]))[
            ident.subject]
        session.last.update(state=view.state, load=view.load, stats=figures, skills=view.skills)
        session.push({
            "type": "welcome", "role": "agent", "agent_id": ident.subject,
            "name": profile.name, "domain": ident.domain, "skills": view.skills,
            "capacity": view.capacity or profile.capacity, "load": view.load,
            "state": view.state, "queues": served_queues(view.skills, domain_policy),
            "active": list(session.active.values()), "stats": figures,
            "expires_at": ident.expires_at_ms, "server_time_ms": now_ms(),
        })
        await self._push_offers(
            await console.outstanding_offers(self.redis, ident.domain, ident.subject))

    async def _act(self, session: Session, ident: Identity, frame: Frame) -> None:
        d, ref = frame.data, frame.ref
        domain, me = ident.domain, ident.subject
        match frame.type:
            case ClientType.STATE:
                state, reason = DeskState(d["state"]), d.get("reason", "")
                if state == DeskState.LOGOUT:
                    event: Event = AgentLoggedOut(event_id=_eid(), ts_ms=now_ms(), agent_id=me,
                                                  domain=domain)
                    session.seated, session.state = False, "offline"
                    session.offers.clear()
                elif session.seated:
                    event = AgentStateChanged(event_id=_eid(), ts_ms=now_ms(), agent_id=me,
                                              domain=domain, state=AgentState(state.value),
                                              reason=reason)
                else:
                    profile = await self.roster.get(domain, me)
                    if profile is None:
                        self._refuse(session, ErrorCode.NO_PROFILE, "no routing profile", ref)
                        return
                    event = AgentLoggedIn(event_id=_eid(), ts_ms=now_ms(), agent_id=me,
                                          domain=domain, skills=profile.skills,
                                          capacity=profile.capacity,
                                          ready=state == DeskState.READY)
                if not await self._publish(event, session, ref):
                    return
                if state != DeskState.LOGOUT:
                    session.seated, session.state = True, state.value
                session.hold_until = time.monotonic() + STATE_HOLD_S
                for s in self.agents.get(session.key, ()):  # every tab of this agent
                    s.push({"type": "state", "state": session.state, "reason": reason})
                    s.last["state"] = session.state
            case ClientType.ACCEPT | ClientType.DECLINE:
                offer = self._own_offer(session, d["offer_id"], ref)
                if offer is None:
                    return
                if frame.type == ClientType.ACCEPT:
                    event = OfferAccepted(event_id=_eid(), ts_ms=now_ms(), agent_id=me,
                                          domain=domain, offer_id=offer.offer_id,
                                          contact_id=offer.contact_id)
                else:
                    event = OfferDeclined(event_id=_eid(), ts_ms=now_ms(), agent_id=me,
                                          domain=domain, offer_id=offer.offer_id,
                                          contact_id=offer.contact_id,
                                          reason=d.get("reason", ""))
                if not await self._publish(event, session, ref):
                    return
                # The offer stays until routing answers: assigned (accept) or rescind (decline).
                if frame.type == ClientType.ACCEPT:  # index it for a reconnect (checked on read)
                    await self.redis.sadd(console.active_key(domain, me), offer.contact_id)
            case ClientType.COMPLETE:
                cid = d["contact_id"]
                if cid not in session.active:
                    owner = any(cid in s.active for (dom, _), group in self.agents.items()
                                if dom == domain for s in group)
                    self._refuse(session, ErrorCode.FORBIDDEN if owner
                                 else ErrorCode.UNKNOWN_CONTACT,
                                 "that contact is another agent's" if owner
                                 else "no active contact of yours has this id", ref)
                    return
                event = ContactCompleted(event_id=_eid(), ts_ms=now_ms(), agent_id=me,
                                         domain=domain, contact_id=cid,
                                         wrap_up=d.get("wrap_up") or WRAP_UP_DEFAULT)
                if not await self._publish(event, session, ref):
                    return
                for s in self.agents.get(session.key, ()):
                    s.active.pop(cid, None)
                await self.redis.srem(console.active_key(domain, me), cid)
            case ClientType.SET_PROFILE:
                old = await self.roster.get(domain, d["agent_id"])
                if old is None:
                    self._refuse(session, ErrorCode.INVALID_FIELD,
                                 f"no agent {d['agent_id']} in the roster", ref)
                    return
                profile = Profile(old.agent_id, _int_map(d["skills"]),
                                  _int_map(d["capacity"]) if "capacity" in d else old.capacity,
                                  old.name)
                try:
                    await self.roster.put(domain, [profile], by=me)
                except RosterError as exc:
                    self._refuse(session, ErrorCode.INVALID_FIELD, str(exc), ref)
                    return
                if not await self._publish(change_event(profile, domain, me, d.get("reason", "")),
                                           session, ref):
                    return
            case ClientType.SET_AGENT_STATE:
                target, reason = d["agent_id"], (d.get("reason") or f"by {me}")
                if d["state"] == DeskState.LOGOUT:
                    event = AgentLoggedOut(event_id=_eid(), ts_ms=now_ms(), agent_id=target,
                                           domain=domain)
                else:
                    event = AgentStateChanged(event_id=_eid(), ts_ms=now_ms(), agent_id=target,
                                              domain=domain, state=AgentState.NOT_READY,
                                              reason=reason[:64])
                if not await self._publish(event, session, ref):
                    return
                for s in self.agents.get((domain, target), ()):
                    s.hold_until = 0.0  # show the supervisor's change at the next sync
        session.push(ack(frame.type, ref))

    def _own_offer(self, session: Session, offer_id: str, ref: str | None
                   ) -> AssignmentOffered | None:
        offer = session.offers.get(offer_id)
        if offer is not None and offer.expires_at_ms > now_ms():
            return offer
        assert session.identity is not None
        owner = self.offer_owner.get((session.identity.domain, offer_id))
        if owner is not None and owner != session.identity.subject:
            self._refuse(session, ErrorCode.FORBIDDEN, "that offer is another agent's", ref)
        else:
            self._refuse(session, ErrorCode.UNKNOWN_OFFER,
                         "no outstanding offer of yours has this id (expired or withdrawn?)", ref)
        return None

    async def _publish(self, event: Event, session: Session | None = None,
                       ref: str | None = None) -> bool:
        """Check the event against the contract (as the router will) and publish it."""
        checked = self.decoder.decode(event.to_json(), "agents_events")
        if isinstance(checked, Rejection):
            if session is not None:
                self._refuse(session, ErrorCode.INVALID_FIELD,
                             f"{checked.detail} ({checked.reason.value})", ref)
            return False
        assert self._producer is not None
        domain = getattr(event, "domain", "")
        await self._producer.send_and_wait(self.settings.topic_agents_events, event.to_json(),
                                           key=domain.encode())
        gm.PUBLISHED.labels(event.TYPE).inc()
        return True

    def _forget(self, session: Session) -> None:
        if session.identity is None:
            return
        if session.identity.role == Role.SUPERVISOR:
            if session in self.supervisors:
                self.supervisors.discard(session)
                gm.CONNECTIONS.labels("supervisor").dec()
            return
        group = self.agents.get(session.key)
        if group is not None and session in group:
            group.discard(session)
            gm.CONNECTIONS.labels("agent").dec()
            if not group:
                del self.agents[session.key]

    # --- Kafka in: offers, rescinds, decisions -----------------------------------------------

    async def _read(self) -> None:
        assert self._consumer is not None
        delay = 0.1
        while not self._stopping:
            try:
                batches = await self._consumer.getmany(timeout_ms=200, max_records=5000)
                events = [self.decoder.decode(rec.value) for recs in batches.values()
                          for rec in recs]
                await self._dispatch([e for e in events if not isinstance(e, Rejection)])
                delay = 0.1
            except asyncio.CancelledError:
                raise
            except Exception:  # the reader must outlive whatever one batch met
                log.exception("gateway_read_failed")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _dispatch(self, events: Iterable[Event]) -> None:
        offers: list[AssignmentOffered] = []
        counts: list[tuple[str, str, str, str]] = []  # domain, agent, figure, event id
        for ev in events:
            match ev:
                case AssignmentOffered() if (ev.domain, ev.agent_id) in self.agents:
                    self.offer_owner[(ev.domain, ev.offer_id)] = ev.agent_id
                    offers.append(ev)
                case AssignmentRescinded():
                    self.offer_owner.pop((ev.domain, ev.offer_id), None)
                    for s in self.agents.get((ev.domain, ev.agent_id), ()):
                        s.offers.pop(ev.offer_id, None)
                        s.push({"type": "rescind", "offer_id": ev.offer_id,
                                "contact_id": ev.contact_id, "reason": ev.reason})
                        s.hold_until = 0.0  # a lapse may have made the agent not ready
                case RoutingDecision():
                    self.levels.add(ev)
                    if ev.agent_id is None:
                        continue
                    key = (ev.domain, ev.agent_id)
                    if key in self.agents and ev.decision in console.FIGURE_OF:
                        counts.append((*key, console.FIGURE_OF[ev.decision], ev.event_id))
                        if ev.decision == Decision.ACCEPTED and ev.within_target:
                            counts.append((*key, "within_target", ev.event_id + "w"))
                    self._decision(ev)
                case AgentProfileApplied() if (ev.domain, ev.agent_id) in self.agents:
                    queues = served_queues(ev.skills, self.policy.for_domain(ev.domain))
                    for s in self.agents[(ev.domain, ev.agent_id)]:
                        s.push({"type": "profile", "skills": ev.skills, "capacity": ev.capacity,
                                "queues": queues, "changed_by": ev.changed_by})
                        s.last["skills"] = ev.skills
        if offers:
            await self._push_offers(offers)
        if counts:
            await self._count(counts)

    def _decision(self, d: RoutingDecision) -> None:
        sessions = self.agents.get((d.domain, d.agent_id or ""), ())
        if d.decision == Decision.ACCEPTED:
            self.offer_owner.pop((d.domain, d.offer_id or ""), None)
            for s in sessions:
                offer = s.offers.pop(d.offer_id or "", None)
                item = {"contact_id": d.contact_id, "offer_id": d.offer_id, "queue": d.queue,
                        "channel": offer.channel.value if offer else "", "since": d.ts_ms,
                        "waited_ms": d.waited_ms, "within_target": d.within_target}
                s.active[d.contact_id] = item
                s.push({"type": "assigned", **item})
        elif d.decision == Decision.COMPLETED:
            for s in sessions:
                s.active.pop(d.contact_id, None)
                s.push({"type": "completed", "contact_id": d.contact_id})

    async def _push_offers(self, offers: list[AssignmentOffered]) -> None:
        try:
            contexts = await console.offer_contexts(
                self.redis, [(o.domain, o.contact_id) for o in offers])
        except RedisError:  # an offer without its context beats no offer
            contexts = {}
        now = now_ms()
        for o in offers:
            frame = offer_frame(o, contexts.get((o.domain, o.contact_id)), now)
            for s in self.agents.get((o.domain, o.agent_id), ()):
                if o.offer_id not in s.offers:
                    s.offers[o.offer_id] = o
                    s.push(frame)

    async def _count(self, counts: list[tuple[str, str, str, str]]) -> None:
        day = console.today()
        pipe = self.redis.pipeline(transaction=False)
        for domain, aid, figure, eid in counts:
            await self._count_once(keys=[console.day_key(domain, aid, day),
                                         state.gateway_seen_key(domain, eid)],
                                   args=[figure, 1, console.DAY_TTL_S], client=pipe)
        await pipe.execute()

    # --- the sync loop: state, load, figures, consoles ---------------------------------------

    async def _sync(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.settings.gateway_console_interval_s)
            try:
                await self._sync_agents()
                if self.supervisors:
                    await self._push_console(list(self.supervisors))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("gateway_sync_failed")

    async def _sync_agents(self) -> None:
        by_domain: dict[str, list[str]] = defaultdict(list)
        for domain, aid in self.agents:
            by_domain[domain].append(aid)
        now, mono = now_ms(), time.monotonic()
        for domain, ids in by_domain.items():
            views = await console.agent_views(self.redis, domain, ids)
            figures = await console.figures_today(self.redis, domain, ids)
            await self.redis.zadd(console.online_key(domain), dict.fromkeys(ids, now))
            for aid in ids:
                view = views[aid]
                for s in list(self.agents.get((domain, aid), ())):
                    if mono >= s.hold_until and view.state != s.last.get("state"):
                        s.state, s.seated = view.state, view.state != "offline"
                        s.push({"type": "state", "state": view.state, "reason": ""})
                        s.last["state"] = view.state
                    if view.load != s.last.get("load"):
                        s.push({"type": "load", "load": view.load, "capacity": view.capacity})
                        s.last["load"] = view.load
                    if figures[aid] != s.last.get("stats"):
                        s.push({"type": "stats", **figures[aid]})
                        s.last["stats"] = figures[aid]
                    if view.skills and view.skills != s.last.get("skills"):
                        s.push({"type": "profile", "skills": view.skills,
                                "capacity": view.capacity, "changed_by": "",
                                "queues": served_queues(view.skills,
                                                        self.policy.for_domain(domain))})
                        s.last["skills"] = view.skills

    async def _push_console(self, sessions: list[Session]) -> None:
        by_domain: dict[str, list[Session]] = defaultdict(list)
        for s in sessions:
            if s.identity is not None:
                by_domain[s.identity.domain].append(s)
        now = now_ms()
        for domain, group in by_domain.items():
            frame = await self.console_frame(domain, now)
            for s in group:
                s.push(frame)

    async def console_frame(self, domain: str, now: int) -> dict[str, Any]:
        policy = self.policy.for_domain(domain)
        queues = await console.queue_figures(self.redis, domain, policy, self.levels, now)
        profiles = (await self.roster.all(domain))[:CONSOLE_AGENTS_MAX]
        views = await console.agent_views(self.redis, domain, [p.agent_id for p in profiles])
        seen: Any = await self.redis.zrange(console.online_key(domain), 0, -1, withscores=True)
        online = console.online_since({k: float(v) for k, v in seen}, now, ONLINE_WITHIN_MS)
        agents = [{**views[p.agent_id].as_dict(), "name": p.name, "desktop": p.agent_id in online,
                   "roster_skills": p.skills, "queues": served_queues(
                       views[p.agent_id].skills or p.skills, policy)} for p in profiles]
        return {"type": "console", "ts_ms": now, "domain": domain, "queues": queues,
                "agents": agents, "since_ms": self.levels.since_ms,
                "rating": await self.ratings.of(domain, now)}


def _eid() -> str:
    return uuid.uuid4().hex


def _int_map(value: dict[str, Any]) -> dict[str, int]:
    """Frame levels as sent; the contract check (router.decode) refuses bad ones."""
    return {str(k): v for k, v in value.items()}


def _policy_skills(policy: DomainPolicy) -> list[str]:
    names: set[str] = set()
    for queue in policy.queues.values():
        for ring in queue.rings:
            names.update(ring.skills)
    if policy.language_skill:
        names.update(("zh", "en"))
    return sorted(names)


_STATIC_TYPES = {"js": "text/javascript", "css": "text/css", "html": "text/html",
                 "svg": "image/svg+xml"}
_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the token may sit in the page's query string
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; "
                               "style-src 'self'; script-src 'self'; frame-ancestors 'none'",
}
