"""`peakroute routing check [POLICY.yaml] [--agent SKILLS] [--json]`: validate a routing policy
before deploying it, see what it says, and see which lanes an agent profile would serve."""

from __future__ import annotations

import argparse
from typing import Any

import orjson

from router.routing.config import DomainPolicy, RoutingPolicy, load_policy, settings_base
from router.routing.policy import format_levels, memberships, parse_levels
from router.settings import Settings


def add_parser(sub: Any) -> None:
    routing = sub.add_parser("routing", help="check a routing policy file",
                             description="Routing policy tools (docs/ROUTING.md).")
    actions = routing.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = actions.add_parser(
        "check", help="validate a policy file and print its queues and rings",
        description="Loads and validates the policy (the file given, else "
        "PEAKROUTE_ROUTING_POLICY, else the shipped default). Exits 2 with the file, the key and "
        "the fix if it is invalid.")
    check.add_argument("policy", nargs="?", default=None, help="the YAML file to check")
    check.add_argument("--domain", default="shop-1",
                       help="the routing domain to show (default shop-1; \"*\" rules apply)")
    check.add_argument("--agent", metavar="SKILLS",
                       help="an agent's skills, e.g. zh=2,refunds=3,general=1: show the lanes "
                            "it would serve and from which ring")
    check.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace, settings: Settings) -> int:
    path = args.policy if args.policy is not None else settings.routing_policy
    policy = load_policy(path, settings_base(settings))
    domain = policy.for_domain(args.domain)
    report = describe(policy, args.domain, domain)
    if args.agent:
        report["agent"] = [
            {"lane": m.lane, "from_ring": m.ring, "rank": m.rank}
            for m in memberships(parse_levels(args.agent), domain)
        ]
    if args.json:
        print(orjson.dumps(report).decode())
        return 0
    print(f"{policy.source}: valid (digest {policy.digest}); domain {args.domain}: "
          f"{len(domain.queues)} queues, default {domain.default_queue}, offer timeout "
          f"{domain.offer_timeout_s:g} s, on no answer {domain.on_no_answer.value}, on decline "
          f"{domain.on_decline.value}, capacity {format_levels(domain.capacity)}")
    for q in report["queues"]:
        rings = "; ".join(f"after {r['after_s']:g} s: {format_levels(r['skills'])}"
                          for r in q["rings"][1:]) or "no rings"
        print(f"  {q['name']:<12} {format_levels(q['skills']):<22} target {q['target_s']:g} s "
              f"(VIP {q['vip_target_s']:g} s), weight {q['weight']:g}, {q['strategy']}; {rings}")
    for m in report.get("agent", []):
        print(f"  agent serves {m['lane']:<16} from ring {m['from_ring']} (rank {m['rank']})")
    return 0


def describe(policy: RoutingPolicy, name: str, domain: DomainPolicy) -> dict[str, Any]:
    return {
        "source": policy.source, "digest": policy.digest, "domain": name,
        "default_queue": domain.default_queue, "offer_timeout_s": domain.offer_timeout_s,
        "on_no_answer": domain.on_no_answer.value, "on_decline": domain.on_decline.value,
        "capacity": domain.capacity, "language_skill": domain.language_skill,
        "queues": [
            {"name": q.name, "skills": q.skills, "target_s": q.normal.target_s,
             "weight": q.normal.weight, "vip_target_s": q.vip.target_s,
             "vip_weight": q.vip.weight, "strategy": q.strategy.value,
             "rings": [{"after_s": r.after_s, "skills": r.skills} for r in q.rings]}
            for q in domain.queues.values()
        ],
    }
