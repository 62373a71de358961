"""`peakroute gateway` and `peakroute agents add|set|list|import|token`."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import getpass
import re
import uuid
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis

from router.errors import PeakrouteError
from router.events import AgentLoggedOut, Event
from router.gateway import ends
from router.gateway.auth import Role, issue
from router.gateway.console import agent_views
from router.gateway.ends import EndReason
from router.gateway.roster import (
    Profile,
    Roster,
    RosterError,
    change_event,
    parse_levels,
    read_file,
    served_queues,
)
from router.kafka import producer
from router.redis_client import redis_client
from router.routing.config import policy_from_settings
from router.settings import Settings
from router.stage import now_ms

_TTL = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``8h``, ``7d`` -> seconds."""
    m = _TTL.match(text.strip())
    if not m or float(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: use a duration such as 3600, 30m, 8h or 1d")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def default_by() -> str:
    user = re.sub(r"[^A-Za-z0-9._@-]", "_", getpass.getuser() or "unknown")
    return f"cli:{user}"[:64]


def add_parser(sub: Any) -> None:
    gw = sub.add_parser(
        "gateway", help="run the agent gateway: desktop, supervisor console and /ws",
        description="Serves the agent desktop (/), the supervisor console (/supervisor) and "
        "the WebSocket endpoint /ws (docs/AGENT_PROTOCOL.md) on PEAKROUTE_GATEWAY_HOST:"
        "PEAKROUTE_GATEWAY_PORT. Desktop actions become agents.events; offers, rescinds and "
        "assignments are pushed to the connected agents. Needs the router's Kafka and Redis "
        "(or the running embedded stack).")
    gw.add_argument("--host", help="listen address (default PEAKROUTE_GATEWAY_HOST)")
    gw.add_argument("--port", type=int, help="listen port (default PEAKROUTE_GATEWAY_PORT)")

    agents = sub.add_parser(
        "agents", help="the agent roster: routing profiles in Redis, and sign-in tokens",
        description="Agents' routing profiles (skills with levels 1-10, capacity per channel) "
        "kept in Redis. A change to a logged-in agent takes effect at its next match, without a "
        "restart, and is audited in routing.decisions (agent.profile_applied.v1) with who made "
        "it. Queues follow skills: an agent serves every queue of the routing policy whose "
        "rings its skills meet (see `peakroute routing check --agent`).")
    agents.add_argument("--domain", help="routing domain (default PEAKROUTE_GATEWAY_DOMAIN)")
    act = agents.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = act.add_parser("add", help="add an agent to the roster")
    add.add_argument("agent_id")
    add.add_argument("--skills", required=True, help="e.g. zh=2,refunds=1,general=1")
    add.add_argument("--capacity", default="chat=3", help="per channel, e.g. chat=3,voice=1")
    add.add_argument("--name", default="", help="display name")
    st = act.add_parser("set", help="change an agent's skills and/or capacity (live)")
    st.add_argument("agent_id")
    st.add_argument("--skills", help="the new skills (they replace the old ones)")
    st.add_argument("--capacity", help="the new capacity per channel")
    st.add_argument("--name", help="a new display name")
    st.add_argument("--by", default=None, help="who makes the change (default cli:<user>)")
    st.add_argument("--reason", default="", help="why (kept in the audit record)")
    ls = act.add_parser("list", help="the roster with each agent's routing state and load")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    imp = act.add_parser("import", help="add or update agents from a CSV or YAML/JSON file",
                         description="CSV columns: agent_id,name,skills,capacity (skills like "
                         "zh=2;refunds=1). YAML/JSON: a list of {agent_id, name, skills, "
                         "capacity}. Agents whose profile changed are updated live.")
    imp.add_argument("file", type=Path)
    imp.add_argument("--by", default=None, help="who makes the change (default cli:<user>)")
    ends_help = {
        "remove": "take an agent out of the roster (logs it out; its desktops close)",
        "disable": "keep an agent in the roster but stop it signing in (its desktops close)",
        "enable": "let a disabled agent sign in again",
        "revoke": "revoke an agent's tokens issued until now (its desktops close; it signs in "
                  "again with a new token)",
    }
    end_parsers = []
    for name, text in ends_help.items():
        ep = act.add_parser(name, help=text, description=text + ". Every gateway instance "
                            "closes the agent's sockets within a second.")
        ep.add_argument("agent_id")
        ep.add_argument("--by", default=None, help="who does it (default cli:<user>)")
        end_parsers.append(ep)
    tok = act.add_parser("token", help="print a signed sign-in token (HS256)")
    tok.add_argument("agent_id")
    tok.add_argument("--role", choices=[r.value for r in Role], default=Role.AGENT.value)
    tok.add_argument("--ttl", type=parse_ttl, default=None,
                     help="lifetime, e.g. 8h or 30m (default PEAKROUTE_GATEWAY_TOKEN_TTL_S)")
    for action in (add, st, ls, imp, tok, *end_parsers):  # `agents add ID --domain D` works too
        action.add_argument("--domain", default=argparse.SUPPRESS,
                            help="routing domain (default PEAKROUTE_GATEWAY_DOMAIN)")


def run_gateway(args: argparse.Namespace, settings: Settings) -> int:
    from router.gateway.server import Gateway

    host = args.host or settings.gateway_host
    port = args.port or settings.gateway_port

    async def main() -> None:
        gateway = Gateway(settings)
        await gateway.serve(host, port)
        print(f"agent gateway on http://{host}:{port}/  (supervisor console: /supervisor, "
              f"WebSocket: /ws)", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await gateway.stop()

    if settings.event_loop == "uvloop":  # as the worker's (router/app.py)
        import uvloop

        uvloop.install()
    asyncio.run(main())
    return 0


def run_agents(args: argparse.Namespace, settings: Settings) -> int:
    domain = args.domain or settings.gateway_domain
    if args.action == "token":
        ttl = args.ttl if args.ttl is not None else None
        print(issue(settings, args.agent_id, Role(args.role), domain, ttl))
        return 0
    return asyncio.run(_roster_command(args, settings, domain))


async def publish(settings: Settings, events: list[Event]) -> None:
    if not events:
        return
    prod = producer(settings)
    try:
        await prod.start()
    except Exception as exc:
        await prod.stop()
        raise PeakrouteError(f"cannot reach Kafka at {settings.kafka_bootstrap_servers} "
                             f"({type(exc).__name__}); the roster is saved, but logged-in "
                             "agents get the change at their next login") from None
    try:
        for ev in events:
            await prod.send_and_wait(settings.topic_agents_events, ev.to_json(),
                                     key=getattr(ev, "domain", "").encode())
    finally:
        await prod.stop()


async def _roster_command(args: argparse.Namespace, settings: Settings, domain: str) -> int:
    client = redis_client(settings, socket_timeout=10)
    roster = Roster(client)
    try:
        if args.action == "add":
            if await roster.get(domain, args.agent_id) is not None:
                raise RosterError(f"agent {args.agent_id} is already in the roster of {domain}; "
                                  "change it with `peakroute agents set`")
            profile = Profile(args.agent_id, parse_levels(args.skills),
                              parse_levels(args.capacity, "capacity"), args.name)
            await roster.put(domain, [profile], by=default_by())
            print(f"added {args.agent_id} to {domain}: skills {_fmt(profile.skills)}, "
                  f"capacity {_fmt(profile.capacity)}")
        elif args.action == "set":
            old = await roster.get(domain, args.agent_id)
            if old is None:
                raise RosterError(f"no agent {args.agent_id} in the roster of {domain}; add it "
                                  "with `peakroute agents add`")
            profile = dataclasses.replace(
                old,
                skills=parse_levels(args.skills) if args.skills is not None else old.skills,
                capacity=parse_levels(args.capacity, "capacity") if args.capacity is not None
                else old.capacity,
                name=args.name if args.name is not None else old.name)
            by = args.by or default_by()
            await roster.put(domain, [profile], by=by)
            await publish(settings, [change_event(profile, domain, by, args.reason)])
            print(f"set {args.agent_id}: skills {_fmt(profile.skills)}, capacity "
                  f"{_fmt(profile.capacity)} (by {by}; live at the next match if logged in)")
        elif args.action == "import":
            profiles = read_file(args.file)
            by = args.by or default_by()
            known = {p.agent_id: p for p in await roster.all(domain)}
            profiles = [dataclasses.replace(p, disabled=known[p.agent_id].disabled)
                        if p.agent_id in known else p for p in profiles]
            await roster.put(domain, profiles, by=by)
            changed = [p for p in profiles if p.agent_id in known and (
                p.skills != known[p.agent_id].skills
                or p.capacity != known[p.agent_id].capacity)]
            await publish(settings, [change_event(p, domain, by, "import") for p in changed])
            new = sum(p.agent_id not in known for p in profiles)
            print(f"imported {len(profiles)} agents into {domain}: {new} new, "
                  f"{len(changed)} changed (live), {len(profiles) - new - len(changed)} unchanged")
        elif args.action == "list":
            await _list(client, roster, settings, domain, args.json)
        elif args.action in ("remove", "disable", "enable", "revoke"):
            await _end_sessions(client, roster, settings, domain, args)
        return 0
    finally:
        await client.aclose()


async def _end_sessions(client: aioredis.Redis, roster: Roster, settings: Settings,
                        domain: str, args: argparse.Namespace) -> None:
    """remove | disable | enable | revoke: the roster change, then the end of the agent's
    sessions on every gateway and its logout from routing."""
    agent, by = args.agent_id, args.by or default_by()
    old = await roster.get(domain, agent)
    if old is None and args.action != "revoke":
        raise RosterError(f"no agent {agent} in the roster of {domain}")
    if args.action == "enable":
        assert old is not None
        await roster.put(domain, [dataclasses.replace(old, disabled=False)], by=by)
        print(f"enabled {agent}: it may sign in again")
        return
    if args.action == "remove":
        await roster.remove(domain, agent)
        reason = EndReason.REMOVED
    elif args.action == "disable":
        assert old is not None
        await roster.put(domain, [dataclasses.replace(old, disabled=True)], by=by)
        reason = EndReason.DISABLED
    else:
        reason = EndReason.REVOKED
    await ends.announce(client, domain, agent, reason, settings.gateway_revocation_keep_s)
    await publish(settings, [AgentLoggedOut(event_id=uuid.uuid4().hex, ts_ms=now_ms(),
                                            agent_id=agent, domain=domain)])
    print(f"{args.action}d {agent} (by {by}): its desktops close on every gateway and it is "
          "logged out of routing" if args.action != "remove" else
          f"removed {agent} from {domain} (by {by}): its desktops close on every gateway and "
          "it is logged out of routing")


async def _list(client: aioredis.Redis, roster: Roster, settings: Settings, domain: str,
                as_json: bool) -> None:
    profiles = await roster.all(domain)
    views = await agent_views(client, domain, [p.agent_id for p in profiles])
    policy = policy_from_settings(settings).for_domain(domain)
    rows = []
    for p in profiles:
        v = views[p.agent_id]
        rows.append({**p.as_dict(), "state": v.state, "load": v.load,
                     "queues": served_queues(p.skills, policy)})
    if as_json:
        for row in rows:
            print(orjson.dumps(row).decode())
        return
    if not rows:
        print(f"no agents in the roster of {domain} "
              "(add one: peakroute agents add ID --skills ...)")
        return
    print(f"{'agent':<20} {'state':<10} {'load':<12} {'skills':<40} queues")
    for r in rows:
        load = ",".join(f"{ch}{r['load'].get(ch, 0)}/{n}" for ch, n in r["capacity"].items()
                        if n > 0)
        print(f"{r['agent_id']:<20} {r['state']:<10} {load:<12} {_fmt(r['skills']):<40} "
              f"{','.join(r['queues'])}")


def _fmt(levels: dict[str, int]) -> str:
    return ",".join(f"{k}={v}" for k, v in levels.items()) or "-"

