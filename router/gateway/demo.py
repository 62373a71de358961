"""`peakroute demo --desktop-port PORT`: a gateway beside the simulated agents, one human agent
with every skill of the routing policy, one supervisor, and the two links to open."""

from __future__ import annotations

from collections.abc import Iterable

from router.gateway.auth import Role, issue
from router.gateway.roster import Profile
from router.gateway.server import Gateway
from router.routing.config import DomainPolicy
from router.settings import Settings

HUMAN_AGENT = "human-1"
SUPERVISOR = "supervisor-1"
HUMAN_CAPACITY = {"chat": 3}


def every_skill(policy: DomainPolicy) -> dict[str, int]:
    """Each skill any ring of any queue asks for, at the highest level asked (and both
    languages when the policy routes by language): an agent who can take any contact."""
    skills: dict[str, int] = {}
    for queue in policy.queues.values():
        for ring in queue.rings:
            for name, level in ring.skills.items():
                skills[name] = max(skills.get(name, 0), level)
    if policy.language_skill:
        for language in ("zh", "en"):
            skills[language] = max(skills.get(language, 0), 1)
    return dict(sorted(skills.items()))


async def start_desktop(settings: Settings, port: int, domain: str,
                        simulated: Iterable[Profile]) -> tuple[Gateway, list[str]]:
    """Start the gateway on 127.0.0.1:port; the roster gets the simulated agents (so the
    console can move them) and the human agent. Returns the gateway and the lines to print."""
    gateway = Gateway(settings)
    human = Profile(HUMAN_AGENT, every_skill(gateway.policy.for_domain(domain)),
                    dict(HUMAN_CAPACITY), "Demo agent")
    await gateway.roster.put(domain, [*simulated, human], by="demo")
    await gateway.serve("127.0.0.1", port)
    agent = issue(settings, HUMAN_AGENT, Role.AGENT, domain)
    supervisor = issue(settings, SUPERVISOR, Role.SUPERVISOR, domain)
    return gateway, [f"agent desktop: http://127.0.0.1:{port}/?token={agent}",
                     f"supervisor console: http://127.0.0.1:{port}/supervisor?token={supervisor}"]
