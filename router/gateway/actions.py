"""The frame actions: hello (signing in an agent or a supervisor) and what each client frame
does: the agents.events record it publishes, the Redis index it keeps, and what it pushes back."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from router.events import (
    AgentLoggedIn,
    AgentLoggedOut,
    AgentState,
    AgentStateChanged,
    AssignmentOffered,
    ContactCompleted,
    Event,
    OfferAccepted,
    OfferDeclined,
)
from router.gateway import console, ends
from router.gateway import metrics as gm
from router.gateway.auth import Identity, Role
from router.gateway.console_frame import ConsoleView, policy_skills
from router.gateway.ends import EndReason
from router.gateway.guard import Guard
from router.gateway.hub import Hub
from router.gateway.protocol import ClientType, DeskState, ErrorCode, Frame, ack
from router.gateway.publish import Publisher
from router.gateway.roster import Roster, RosterError, change_event, served_queues
from router.gateway.session import CLOSE_NO_PROFILE, Session, refuse
from router.routing.config import RoutingPolicy
from router.settings import Settings
from router.stage import now_ms

STATE_HOLD_S = 2.0  # after a state action, the sync loop waits this long to contradict it
WRAP_UP_DEFAULT = "resolved"

PushOffers = Callable[[list[AssignmentOffered]], Awaitable[None]]


class Actions:
    def __init__(self, settings: Settings, policy: RoutingPolicy, redis: aioredis.Redis,
                 roster: Roster, hub: Hub, guard: Guard, publisher: Publisher,
                 console_view: ConsoleView, push_offers: PushOffers) -> None:
        self.settings = settings
        self.policy = policy
        self.redis = redis
        self.roster = roster
        self.hub = hub
        self.guard = guard
        self.publisher = publisher
        self.console = console_view
        self._push_offers = push_offers

    def _refuse(self, session: Session, code: ErrorCode, message: str, ref: str | None = None,
                close: int | None = None) -> None:
        refuse(session, code, message, ref, close)

    async def _publish(self, event: Event, session: Session | None = None,
                       ref: str | None = None) -> bool:
        return await self.publisher.publish(event, session, ref)

    async def hello(self, session: Session, frame: Frame) -> None:
        ident = await self.guard.verified(session, frame)
        if ident is None:
            return
        if not self.guard.room_for(session, ident, frame):
            return
        gm.FRAMES_IN.labels("hello").inc()
        domain_policy = self.policy.for_domain(ident.domain)
        if ident.role == Role.SUPERVISOR:
            session.identity = ident
            self.guard.arm_expiry(session, ident)
            self.hub.add(session)
            session.push({"type": "welcome", "role": "supervisor", "agent_id": ident.subject,
                          "domain": ident.domain, "queues": sorted(domain_policy.queues),
                          "skills": policy_skills(domain_policy),
                          "expires_at": ident.expires_at_ms, "server_time_ms": now_ms()})
            await self.console.push([session])
            return
        profile = await self.roster.get(ident.domain, ident.subject)
        if profile is None:
            self._refuse(session, ErrorCode.NO_PROFILE, f"agent {ident.subject} has no routing "
                         "profile; ask a supervisor (peakroute agents add)", frame.ref,
                         close=CLOSE_NO_PROFILE)
            return
        if profile.disabled:
            self._refuse(session, ErrorCode.AGENT_DISABLED, f"agent {ident.subject} is disabled; "
                         "ask a supervisor (peakroute agents enable)", frame.ref,
                         close=CLOSE_NO_PROFILE)
            return
        session.identity = ident
        self.guard.arm_expiry(session, ident)
        self.hub.add(session)  # before reading offers: none can slip between
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

    async def act(self, session: Session, ident: Identity, frame: Frame) -> None:
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
                for s in self.hub.agents.get(session.key, ()):  # every tab of this agent
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
                    owner = any(cid in s.active for (dom, _), group in self.hub.agents.items()
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
                for s in self.hub.agents.get(session.key, ()):
                    s.active.pop(cid, None)
                await self.redis.srem(console.active_key(domain, me), cid)
            case ClientType.SET_PROFILE:
                old = await self.roster.get(domain, d["agent_id"])
                if old is None:
                    self._refuse(session, ErrorCode.INVALID_FIELD,
                                 f"no agent {d['agent_id']} in the roster", ref)
                    return
                profile = dataclasses.replace(
                    old, skills=_int_map(d["skills"]),
                    capacity=_int_map(d["capacity"]) if "capacity" in d else old.capacity)
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
                if d["state"] == DeskState.LOGOUT:  # its desktops close, on every gateway
                    await ends.announce(self.redis, domain, target, EndReason.LOGGED_OUT)
                for s in self.hub.agents.get((domain, target), ()):
                    s.hold_until = 0.0  # show the supervisor's change at the next sync
                self.hub.touch(domain, target)
        session.push(ack(frame.type, ref))

    def _own_offer(self, session: Session, offer_id: str, ref: str | None
                   ) -> AssignmentOffered | None:
        offer = session.offers.get(offer_id)
        if offer is not None and offer.expires_at_ms > now_ms():
            return offer
        assert session.identity is not None
        owner = self.hub.offer_owner.get((session.identity.domain, offer_id))
        if owner is not None and owner != session.identity.subject:
            self._refuse(session, ErrorCode.FORBIDDEN, "that offer is another agent's", ref)
        else:
            self._refuse(session, ErrorCode.UNKNOWN_OFFER,
                         "no outstanding offer of yours has this id (expired or withdrawn?)", ref)
        return None


def _eid() -> str:
    return uuid.uuid4().hex


def _int_map(value: dict[str, Any]) -> dict[str, int]:
    """Frame levels as sent; the contract check (router.decode) refuses bad ones."""
    return {str(k): v for k, v in value.items()}
