"""Faults of a Redis Cluster on the embedded stack (``peakroute stack up --redis-cluster N``),
for the load tools and the cluster tests: which primary serves a domain, SIGKILL a primary
until its replica takes over, and move the slots of live domains to another primary while
traffic flows (as ``redis-cli --cluster reshard`` does it: IMPORTING / MIGRATING, MIGRATE of
the keys in batches, then the slot assigned to its new owner on every node).

Every call here talks to one node at a time with a plain client (CLUSTER commands are the
node's own view); the router's processes keep using their cluster clients and must ride the
moves and the failover out (MOVED, ASK, TRYAGAIN, CLUSTERDOWN, a lost connection).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass

import redis
from redis.cluster import key_slot

from router.routing import state
from router.stack import EmbeddedStack, cluster_state

MIGRATE_BATCH = 200  # keys per MIGRATE
MIGRATE_TIMEOUT_MS = 5000


@dataclass(frozen=True)
class Node:
    port: int
    node_id: str
    primary: bool
    primary_id: str  # its primary's id ("" for a primary)
    slots: tuple[tuple[int, int], ...]
    failed: bool

    def serves(self, slot: int) -> bool:
        return any(lo <= slot <= hi for lo, hi in self.slots)


def _client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1, socket_timeout=10)


def domain_slot(domain: str) -> int:
    """The slot of every routing key of ``domain`` (its hash tag)."""
    return key_slot(state.key(domain, state.Key.STATS).encode())


def nodes(ports: Iterable[int]) -> list[Node]:
    """The cluster as the first node that answers sees it."""
    for port in ports:
        try:
            with _client(port) as client:
                raw = client.execute_command("CLUSTER", "NODES")
        except redis.RedisError:
            continue
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        return [_parse(line) for line in text.splitlines() if line.strip()]
    raise RuntimeError("no node of the Redis Cluster answers")


def _parse(line: str) -> Node:
    parts = line.split()
    port = int(parts[1].split("@", 1)[0].rsplit(":", 1)[1])
    flags = parts[2].split(",")
    slots = []
    for part in parts[8:]:
        if part.startswith("["):  # a slot being migrated or imported
            continue
        lo, _, hi = part.partition("-")
        slots.append((int(lo), int(hi or lo)))
    return Node(port, parts[0], "master" in flags, "" if parts[3] == "-" else parts[3],
                tuple(slots), "fail" in flags or "fail?" in flags)


def owner(ports: Iterable[int], slot: int) -> Node:
    """The primary serving ``slot``."""
    found = [n for n in nodes(ports) if n.primary and not n.failed and n.serves(slot)]
    if not found:
        raise RuntimeError(f"no primary serves slot {slot}")
    return found[0]


def move_slot(ports: list[int], slot: int, to_port: int) -> int:
    """Move ``slot`` to the primary on ``to_port`` with its keys, while clients keep using it;
    returns the keys moved."""
    all_nodes = nodes(ports)
    src = next(n for n in all_nodes if n.primary and n.serves(slot))
    dst = next(n for n in all_nodes if n.port == to_port)
    if src.port == dst.port:
        return 0
    moved = 0
    with _client(src.port) as source, _client(dst.port) as target:
        target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src.node_id)
        source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst.node_id)
        while True:
            keys = source.execute_command("CLUSTER", "GETKEYSINSLOT", slot, MIGRATE_BATCH)
            if not keys:
                break
            source.execute_command("MIGRATE", "127.0.0.1", dst.port, "", 0, MIGRATE_TIMEOUT_MS,
                                   "REPLACE", "KEYS", *keys)
            moved += len(keys)
        # The new owner first, then the old one (which then answers MOVED), then the others.
        target.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst.node_id)
        source.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst.node_id)
    for node in all_nodes:
        if node.primary and node.port not in (src.port, dst.port) and not node.failed:
            try:
                with _client(node.port) as other:
                    other.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst.node_id)
            except redis.RedisError:
                pass  # it learns the new owner from the cluster bus
    return moved


def move_domains(ports: list[int], domains: Iterable[str]) -> dict[str, dict[str, int]]:
    """Move each domain's slot to the next primary (by port order); returns, per domain, the
    slot, the ports it went from and to, and the keys moved."""
    out: dict[str, dict[str, int]] = {}
    for domain in domains:
        slot = domain_slot(domain)
        src = owner(ports, slot)
        primaries = sorted(n.port for n in nodes(ports) if n.primary and not n.failed)
        to = primaries[(primaries.index(src.port) + 1) % len(primaries)]
        keys = move_slot(ports, slot, to)
        out[domain] = {"slot": slot, "from": src.port, "to": to, "keys": keys}
    return out


async def kill_primary_until_promoted(stack: EmbeddedStack, slot: int, timeout_s: float = 30.0
                                      ) -> dict[str, float | int]:
    """SIGKILL the primary serving ``slot`` and wait until a replica serves it and every node
    left says the cluster is ok; returns the ports and the seconds it took."""
    ports = stack.cluster_ports()
    victim = owner(ports, slot)
    started = time.monotonic()
    stack.kill_cluster_node(victim.port)
    alive = [p for p in ports if p != victim.port]
    deadline = started + timeout_s
    while True:
        try:
            now_owner = owner(alive, slot)
        except RuntimeError:
            now_owner = None
        if now_owner is not None and now_owner.port != victim.port and all(
                cluster_state(p)[0] in ("ok", "") for p in alive):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"no replica took slot {slot} over within {timeout_s:.0f} s")
        await asyncio.sleep(0.1)
    promoted_s = time.monotonic() - started
    # The killed node comes back (as an operator or an orchestrator would bring it back): it
    # rejoins as the replica of the one promoted, so that its shard has a replica again (the
    # workers WAIT for one; until it is in sync their writes to that shard are refused as
    # transient ``noreplicas``).
    await stack.restart_cluster_node(victim.port)
    while not replica_in_sync(victim.port):
        if time.monotonic() > deadline + timeout_s:
            raise RuntimeError(f"the restarted node {victim.port} did not sync as a replica")
        await asyncio.sleep(0.1)
    return {"killed_port": victim.port, "promoted_port": now_owner.port,
            "promoted_after_s": round(promoted_s, 2),
            "replica_again_after_s": round(time.monotonic() - started, 2)}


def replica_in_sync(port: int) -> bool:
    """The node on ``port`` is a replica whose link to its primary is up."""
    try:
        with _client(port) as client:
            info = client.info("replication")
    except redis.RedisError:
        return False
    return info.get("role") == "slave" and info.get("master_link_status") == "up"


def live_slots(ports: Iterable[int], pattern: str, count: int) -> list[int]:
    """Up to ``count`` distinct slots holding keys that match ``pattern`` (SCAN on every
    primary)."""
    slots: list[int] = []
    for node in nodes(ports):
        if not node.primary or node.failed:
            continue
        with _client(node.port) as client:
            for key in client.scan_iter(match=pattern, count=500):
                slot = key_slot(key if isinstance(key, bytes) else str(key).encode())
                if slot not in slots:
                    slots.append(slot)
                if len(slots) >= count:
                    return slots
    return slots
