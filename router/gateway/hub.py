"""The connections of one gateway process: each agent's sockets, the supervisors' sockets, the
flood gate of each identity, and which agent each open offer belongs to."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from router.gateway import metrics as gm
from router.gateway.auth import Identity, Role
from router.gateway.protocol import FloodGate
from router.gateway.session import Session
from router.settings import Settings


class Hub:
    """Who is connected to this process (an instance holds only its own connections)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.agents: dict[tuple[str, str], set[Session]] = defaultdict(set)
        self.supervisors: set[Session] = set()
        self.gates: dict[tuple[str, str, Role], FloodGate] = {}  # per identity, all its sockets
        self.offer_owner: dict[tuple[str, str], str] = {}  # (domain, offer id) -> agent
        self.closed = 0  # signed-in sockets forgotten so far (router/gateway/heap.py)
        # agents whose routing state, load or figures a decision may have changed since the
        # last sync round (router/gateway/sync.py reads these, not every agent)
        self.touched: set[tuple[str, str]] = set()

    def of_agent(self, domain: str, agent_id: str) -> set[Session]:
        """The agent's sockets on this process (an empty set when none)."""
        return self.agents.get((domain, agent_id), set())

    def of_identity(self, domain: str, subject: str) -> list[Session]:
        """Every socket signed in as this subject, agent or supervisor."""
        return list(self.of_agent(domain, subject)) + [
            s for s in self.supervisors
            if s.identity is not None and (s.identity.domain, s.identity.subject)
            == (domain, subject)]

    def held(self, ident: Identity) -> int:
        """Sockets this identity holds open here."""
        if ident.role == Role.AGENT:
            return len(self.of_agent(ident.domain, ident.subject))
        return sum(1 for s in self.supervisors if s.identity is not None
                   and (s.identity.domain, s.identity.subject) == (ident.domain, ident.subject))

    def touch(self, domain: str, agent_id: str) -> None:
        """Have the next sync round read this agent (if it is connected here)."""
        if (domain, agent_id) in self.agents:
            self.touched.add((domain, agent_id))

    def take_touched(self) -> set[tuple[str, str]]:
        touched, self.touched = self.touched, set()
        return touched

    def gate(self, session: Session) -> FloodGate:
        """The identity's gate once signed in (shared by its sockets), the socket's before."""
        ident = session.identity
        if ident is None:
            return session.gate
        return self.gates.setdefault(
            (ident.domain, ident.subject, ident.role),
            FloodGate(self.settings.gateway_frames_per_s, self.settings.gateway_frame_burst))

    def add(self, session: Session) -> None:
        ident = session.identity
        assert ident is not None
        if ident.role == Role.SUPERVISOR:
            self.supervisors.add(session)
        else:
            self.agents[session.key].add(session)
        gm.CONNECTIONS.labels(ident.role.value).inc()

    def forget(self, session: Session) -> None:
        if session.expiry is not None:
            session.expiry.cancel()
            session.expiry = None
        ident = session.identity
        if ident is None:
            return
        self.closed += 1
        if ident.role == Role.SUPERVISOR:
            if session in self.supervisors:
                self.supervisors.discard(session)
                gm.CONNECTIONS.labels("supervisor").dec()
            if not self.held(ident):
                self.gates.pop((ident.domain, ident.subject, ident.role), None)
            return
        group = self.agents.get(session.key)
        if group is not None and session in group:
            group.discard(session)
            gm.CONNECTIONS.labels("agent").dec()
            if not group:
                del self.agents[session.key]
                self.gates.pop((ident.domain, ident.subject, ident.role), None)

    def all(self) -> Iterator[Session]:
        for group in self.agents.values():
            yield from group
        yield from self.supervisors
