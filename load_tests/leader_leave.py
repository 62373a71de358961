"""Reproduction of the embedded broker's group wedge, without the router: plain aiokafka
consumers in one group on the embedded stack's Tansu broker.

    python -m load_tests.leader_leave            # the leader sends LeaveGroup mid-rebalance
    python -m load_tests.leader_leave --no-leave  # the leader just goes (the stack's setting)

Consumer A joins first (the group's leader), B joins (a second generation, so A's generation is
above 0 and aiokafka will send LeaveGroup), then C joins and, one second into the rebalance C
starts, A stops. With LeaveGroup, Tansu removes A from the members but keeps naming it as the
group's leader: every JoinGroup answer names A, B's and C's SyncGroup wait ~8 s for A's
assignment and end in REBALANCE_IN_PROGRESS, they join again, for ever. A fresh consumer D that
joins half way is stuck the same way. Without LeaveGroup, A is dropped at its session timeout
like a crashed member, the leadership with it, and B, C and D are assigned. The last line is
one JSON object (docs/ARCHITECTURE.md, "Embedded stack").
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from router.kafka import client_kwargs
from router.settings import Settings
from router.stack import EmbeddedStack

LEADER = re.compile(r"leader_id='([^']+)'")


class Watch(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """When a member got partitions (monotonic seconds)."""

    def __init__(self) -> None:
        self.assigned_at: float | None = None

    async def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    async def on_partitions_assigned(self, assigned: Any) -> None:
        if assigned and self.assigned_at is None:
            self.assigned_at = time.monotonic()


class Leaders(logging.Handler):
    """The leader named by every JoinGroup answer (aiokafka logs them at DEBUG)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.named: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        found = LEADER.search(record.getMessage())
        if found and record.getMessage().startswith("Join group response"):
            self.named.append(found.group(1))


def member(settings: Settings, group: str) -> AIOKafkaConsumer:
    """A consumer with the worker's group timings (the embedded stack's: 10 s and 5 s)."""
    return AIOKafkaConsumer(
        **client_kwargs(settings), group_id=group, enable_auto_commit=False,
        session_timeout_ms=int(settings.kafka_session_timeout_s * 1000),
        rebalance_timeout_ms=int(settings.kafka_rebalance_timeout_s * 1000),
        heartbeat_interval_ms=int(min(3.0, settings.kafka_session_timeout_s / 3) * 1000))


async def until(check: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.1)
    return False


async def assigned(*watches: Watch, timeout_s: float) -> bool:
    return await until(lambda: all(w.assigned_at is not None for w in watches), timeout_s)


async def run(args: argparse.Namespace, out: Any = sys.stderr) -> dict[str, Any]:
    def say(line: str) -> None:
        print(line, file=out, flush=True)

    leaders = Leaders()
    coordinator_log = logging.getLogger("aiokafka.consumer.group_coordinator")
    coordinator_log.setLevel(logging.DEBUG)
    coordinator_log.addHandler(leaders)
    state = Path(args.state_dir or tempfile.mkdtemp(prefix="peakroute-leader-leave-"))
    stack = EmbeddedStack(state, partitions=4)
    settings = await stack.start()
    topic, group = f"leave-{uuid.uuid4().hex[:6]}", f"leave-{uuid.uuid4().hex[:6]}"
    members: list[AIOKafkaConsumer] = []
    try:
        admin = AIOKafkaAdminClient(**client_kwargs(settings))
        await admin.start()
        await admin.create_topics([NewTopic(topic, 4, 1)])
        await admin.close()
        watch = {name: Watch() for name in "ABCD"}
        cons = {name: member(settings, group) for name in "ABCD"}
        for name in "AB":
            await cons[name].start()
            members.append(cons[name])
            cons[name].subscribe([topic], listener=watch[name])
            if not await assigned(watch[name], timeout_s=30):
                raise SystemExit(f"{name} was not assigned in 30 s: the group did not form")
            say(f"{name} assigned (generation {cons[name]._coordinator.generation})")
        # A takes part in B's round too: then its generation is above 0.
        if not await until(lambda: cons["A"]._coordinator.generation >= 1
                           and cons["A"].assignment(), 30):
            raise SystemExit("A did not take part in B's round in 30 s")
        leader = cons["A"]._coordinator.member_id
        say(f"A leads generation {cons['A']._coordinator.generation} ({leader}); C joins")
        await cons["C"].start()
        members.append(cons["C"])
        cons["C"].subscribe([topic], listener=watch["C"])
        watch["B"].assigned_at = None
        await asyncio.sleep(1.0)  # the rebalance C started is under way
        if not args.leave:
            cons["A"]._coordinator.generation = -1  # aiokafka then sends no LeaveGroup
        stopped = time.monotonic()
        await cons["A"].stop()
        members.remove(cons["A"])
        say(f"A stopped {'with' if args.leave else 'without'} LeaveGroup; "
            f"watching B, C (and D) for {args.observe:g} s")
        before = len(leaders.named)
        formed = await assigned(watch["B"], watch["C"], timeout_s=args.observe / 2)
        # A fresh consumer half way: it does not unwedge the group either.
        await cons["D"].start()
        members.append(cons["D"])
        cons["D"].subscribe([topic], listener=watch["D"])
        say("D (fresh) joins")
        formed = await assigned(watch["B"], watch["C"], watch["D"], timeout_s=args.observe / 2)
        after = leaders.named[before:]
        result: dict[str, Any] = {
            "leave_group": args.leave,
            "formed_again": formed,
            "assigned_after_stop_s": {
                name: (round(w.assigned_at - stopped, 1) if w.assigned_at is not None else None)
                for name, w in watch.items() if name != "A"},
            "join_answers_after_stop": len(after),
            "join_answers_naming_departed_leader": sum(named == leader for named in after),
            "observed_s": args.observe,
        }
        return result
    finally:
        for cons_ in members:
            cons_._coordinator.generation = -1  # leave the wedge as it is: no LeaveGroup
            await cons_.stop()
        coordinator_log.removeHandler(leaders)
        stack.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m load_tests.leader_leave",
        description="The embedded broker's group wedge: the leader sends LeaveGroup while a "
        "rebalance is under way, and the group never forms again.")
    parser.add_argument("--no-leave", dest="leave", action="store_false",
                        help="A stops without LeaveGroup (what the embedded stack records)")
    parser.add_argument("--observe", type=float, default=45.0,
                        help="seconds to wait for B and C to be assigned after A stops")
    parser.add_argument("--state-dir", help="the stack's state dir (default: a temp dir)")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    print(orjson.dumps(result).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
