"""The router against queueing theory: `python -m load_tests.erlang --rate L --aht S --agents N
--target T --duration D --json`.

One queue, Poisson arrivals (``routing.requested.v1`` straight to routing.requests: no bot),
exponential handle times, N agents of capacity 1 who accept at once, no abandonment, all through
the real pipeline (embedded stack, a router worker process, simulated agents on the agents
client). Two comparisons:

* **Paired ideal replay**: the very same arrival times (the requests' ``ts_ms``) and handle times
  go through a zero-latency FIFO M/M/N simulation (``mmn_fifo_waits``). Contact by contact, the
  router's wait (escalation to acceptance, as its ``accepted`` decision reports it) minus the
  ideal wait is the waiting the router added. Same sample path, so almost no sampling noise.
* **Erlang C** (``router.plan.erlang``): the steady-state formulas, against the measured
  figures, with a tolerance derived from the run: ``z`` standard deviations of the service
  level (and ASA) over ``--replications`` independent simulated runs of the same length, rate,
  agents and warm-up.

Contacts that arrive during the warm-up (default 10 % of the run) feed the queue but are left out
of every figure: the run starts empty, Erlang C describes the steady state.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from agents.client import AgentBus
from agents.simulated import AgentPool, AgentProfile, Behaviour
from load_tests.sim import (
    BrokerProbe,
    Ledger,
    Publisher,
    Recorder,
    arrival_times,
    percentile,
    quantiles,
    wait_agents_known,
)
from router.demo import WorkerProcess, wait_ready
from router.events import Event, RoutingRequested
from router.plan.erlang import erlang_c, erlang_c_asa, erlang_c_service_level
from router.stack import EmbeddedStack
from router.stage import now_ms

DOMAIN = "erlang"
QUEUE = "erlang"
SKILL = "erlang"
Z = 3.0  # tolerance = Z standard deviations of a run's figure (about 99.7 % two-sided)
SL_GOAL_POINTS = 0.01  # measured and ideal service level within 1 point
EXTRA_WAIT_P99_GOAL_MS = 50.0


# --- Queueing theory (pure; the Erlang C formulas are router/plan/erlang.py's) -------------

def mmn_fifo_waits(arrivals_s: Sequence[float], handles_s: Sequence[float],
                   agents: int) -> list[float]:
    """Waits (seconds) of a zero-latency FIFO queue with ``agents`` identical servers: each
    arrival, in order, takes the server that frees first, at once if it is already free."""
    free = [0.0] * agents
    heapq.heapify(free)
    waits = []
    for arrival, handle in zip(arrivals_s, handles_s, strict=True):
        start = max(arrival, heapq.heappop(free))
        waits.append(start - arrival)
        heapq.heappush(free, start + handle)
    return waits


@dataclass(frozen=True)
class Figures:
    service_level: float
    asa_s: float


def figures(waits_s: Sequence[float], target_s: float) -> Figures:
    if not waits_s:
        return Figures(0.0, 0.0)
    return Figures(sum(w <= target_s for w in waits_s) / len(waits_s),
                   sum(waits_s) / len(waits_s))


def replicate(rate: float, aht_s: float, agents: int, target_s: float, duration_s: float,
              warmup_s: float, replications: int, seed: int) -> list[Figures]:
    """Independent simulated runs of the same length: what one run's figures spread over."""
    rng = random.Random(seed)
    out = []
    for _ in range(replications):
        times = arrival_times(rate, duration_s, rng)
        handles = [rng.expovariate(1 / aht_s) for _ in times]
        waits = mmn_fifo_waits(times, handles, agents)
        kept = [w for t, w in zip(times, waits, strict=True) if t >= warmup_s]
        out.append(figures(kept, target_s))
    return out


# --- The run through the pipeline -------------------------------------------------------------

def erlang_policy_text(target_s: float, offer_timeout_s: float) -> str:
    """One queue, FIFO (equal weights and priorities), agents of capacity 1, no rings."""
    return f"""version: 1
defaults:
  service_target_s: {target_s}
  offer_timeout_s: {offer_timeout_s}
  language_skill: false
  capacity: {{chat: 1, voice: 1, email: 1}}
  vip: {{service_target_s: {target_s}, weight: 1.0}}
domains:
  "*":
    default_queue: {QUEUE}
    queues:
      {QUEUE}:
        skills: {{{SKILL}: 1}}
"""


async def run_pipeline(args: argparse.Namespace, times: list[float], handles: list[float]
                       ) -> tuple[Ledger, list[tuple[int, int]]]:
    """Publish the arrivals through the real pipeline; return what the router reported and
    the broker probe's samples (sent ms, latency ms) over the same time."""
    handle_of = {contact_id(i): h for i, h in enumerate(handles)}
    ledger = Ledger()
    with tempfile.TemporaryDirectory(prefix="erlang-") as tmp:
        policy = Path(tmp) / "policy.yaml"
        offer_timeout = max(60.0, 20 * args.aht)  # agents always answer: nothing lapses
        policy.write_text(erlang_policy_text(args.target, offer_timeout))
        stack = EmbeddedStack(Path(tmp) / "stack", partitions=4)
        settings = (await stack.start()).replace(
            routing_policy=str(policy), sla_target_s=args.target, offer_timeout_s=offer_timeout,
            kafka_fetch_max_wait_ms=args.fetch_wait_ms, batch_within_s=args.batch_within_ms / 1000,
            kafka_linger_ms=args.linger_ms)
        worker = WorkerProcess(settings, 0, Path(tmp))
        bus = AgentBus(settings)
        pool: AgentPool | None = None
        recorder = Recorder(settings, ledger, roles=("routing_decisions",))
        publisher = Publisher(settings)
        probe = BrokerProbe(settings)
        try:
            await wait_ready([worker])
            await bus.start()
            profiles = [AgentProfile(f"erlang-agent-{i:03d}", {SKILL: 1}, {"chat": 1})
                        for i in range(args.agents)]
            behaviour = Behaviour(accept_delay_s=(0.0, 0.0),
                                  handle_time=lambda o: handle_of[o.contact_id])
            pool = AgentPool(bus, profiles, DOMAIN, behaviour)
            await pool.start()
            await wait_agents_known(settings, DOMAIN, args.agents)
            await recorder.start()
            await publisher.start()
            await probe.start()

            def make(i: int) -> tuple[str, str, Event | bytes]:
                return settings.topic_routing_requests, DOMAIN, RoutingRequested(
                    event_id=f"erlang-req-{i}", ts_ms=now_ms(), contact_id=contact_id(i),
                    domain=DOMAIN, queue=QUEUE)

            def sent(i: int, event: Event | bytes) -> None:
                assert isinstance(event, Event)
                ledger.published(contact_id(i), event.ts_ms)

            await publisher.run(times, make, sent)
            drain_until = time.monotonic() + args.drain
            while time.monotonic() < drain_until:
                if all(c.answered_ms for c in ledger.contacts.values()):
                    break
                await asyncio.sleep(0.2)
        finally:
            await probe.stop()
            await recorder.stop()
            await publisher.stop()
            if pool is not None:
                await pool.stop(logout=False)
            await bus.stop()
            worker.stop()
            stack.stop()
    return ledger, probe.samples


def contact_id(i: int) -> str:
    return f"e-{i:07d}"


def per_minute(arrived_ms: Sequence[int], extra_ms: Sequence[float], unanswered_ms: Sequence[int],
               probes: Sequence[tuple[int, int]], origin_ms: int, from_s: float,
               minute_s: float = 60.0) -> list[dict[str, Any]]:
    """Each minute of the run from ``from_s`` (by arrival): the measured contacts, the extra
    wait's p99 and max, the contacts left unanswered, and the broker probe's p99 and max over
    the same minute (the control: the broker alone)."""
    def minute(ms: int) -> int:
        return int((ms - origin_ms) / 1000 // minute_s)
    first = int(from_s // minute_s)
    last = max([minute(a) for a in arrived_ms] + [minute(a) for a in unanswered_ms] + [first])
    rows = []
    for m in range(first, last + 1):
        extra = [e for a, e in zip(arrived_ms, extra_ms, strict=True) if minute(a) == m]
        broker = [lat for sent, lat in probes if minute(sent) == m]
        rows.append({
            "minute": m, "contacts": len(extra),
            "extra_wait_p99_ms": round(percentile(extra, 0.99), 1) if extra else None,
            "extra_wait_max_ms": round(max(extra), 1) if extra else None,
            "unanswered": sum(minute(a) == m for a in unanswered_ms),
            "broker_probes": len(broker),
            "broker_p99_ms": round(percentile(broker, 0.99), 1) if broker else None,
            "broker_max_ms": max(broker) if broker else None,
        })
    return rows


def compare(args: argparse.Namespace, times: list[float], handles: list[float],
            ledger: Ledger, probes: Sequence[tuple[int, int]] = ()) -> dict[str, Any]:
    """Pair the router's waits with the ideal replay's; Erlang C with its tolerance."""
    ids = [contact_id(i) for i in range(len(times))]
    unanswered = [c for c in ids if not ledger.contacts[c].answered_ms]
    arrivals_ms = [ledger.contacts[c].arrived_ms for c in ids]
    origin = arrivals_ms[0] if arrivals_ms else 0
    arrivals_s = [(a - origin) / 1000 for a in arrivals_ms]
    ideal = mmn_fifo_waits(arrivals_s, handles, args.agents)
    warmup_s = args.warmup * args.duration
    kept = [i for i, t in enumerate(times) if t >= warmup_s and ledger.contacts[ids[i]].answered_ms]
    measured_s = [ledger.contacts[ids[i]].waited_ms / 1000 for i in kept]
    ideal_s = [ideal[i] for i in kept]
    extra_ms = [(m - w) * 1000 for m, w in zip(measured_s, ideal_s, strict=True)]
    within = [ledger.contacts[ids[i]].within_target for i in kept]
    measured = Figures(sum(within) / len(kept) if kept else 0.0,
                       statistics.fmean(measured_s) if kept else 0.0)
    ideal_fig = figures(ideal_s, args.target)
    reps = replicate(args.rate, args.aht, args.agents, args.target, args.duration, warmup_s,
                     args.replications, args.seed + 1)
    sl_sd = statistics.stdev(r.service_level for r in reps) if len(reps) > 1 else 0.0
    asa_sd = statistics.stdev(r.asa_s for r in reps) if len(reps) > 1 else 0.0
    erlang_sl = erlang_c_service_level(args.agents, args.rate, args.aht, args.target)
    erlang_asa = erlang_c_asa(args.agents, args.rate, args.aht)
    tol_sl, tol_asa = Z * sl_sd, Z * asa_sd
    extra_p99 = percentile(extra_ms, 0.99)
    minutes = per_minute([ledger.contacts[ids[i]].arrived_ms for i in kept], extra_ms,
                         [ledger.contacts[c].arrived_ms for c in unanswered], probes, origin,
                         warmup_s)
    broker = sorted(lat for _, lat in probes)
    paired_ok = (not unanswered and abs(measured.service_level - ideal_fig.service_level)
                 <= SL_GOAL_POINTS and extra_p99 <= EXTRA_WAIT_P99_GOAL_MS)
    erlang_ok = (abs(measured.service_level - erlang_sl) <= tol_sl
                 and abs(measured.asa_s - erlang_asa) <= tol_asa)
    load = args.rate * args.aht
    at_once = [ledger.contacts[ids[i]] for i in kept if ideal[i] == 0]
    hops = {  # where the extra wait goes, for contacts the ideal queue served at once
        "request_to_offer_ms": quantiles([c.offered_ms - c.arrived_ms for c in at_once]),
        "offer_to_accept_ms": quantiles([c.answered_ms - c.offered_ms for c in at_once]),
    }
    # The agent's side of each cycle is two Kafka hops the ideal queue does not have: the offer
    # reaching the desktop and the completion reaching the router. Replaying with each handle
    # time longer by the measured offer-to-accept time (two hops) shows how much of the extra
    # wait that transport explains.
    hop_s = hops["offer_to_accept_ms"]["p50"] / 1000
    with_hops = mmn_fifo_waits(arrivals_s, [h + hop_s for h in handles], args.agents)
    with_hops_kept = [with_hops[i] for i in kept]
    extra_vs_hops = [(m - w) * 1000 for m, w in zip(measured_s, with_hops_kept, strict=True)]
    transport = {
        "agent_cycle_hops_ms": round(hop_s * 1000, 1),
        "sl": round(figures(with_hops_kept, args.target).service_level, 4),
        "asa_s": round(figures(with_hops_kept, args.target).asa_s, 4),
        "extra_wait_mean_ms": round(statistics.fmean(extra_vs_hops), 1) if extra_vs_hops else 0.0,
        "extra_wait_p99_ms": round(percentile(extra_vs_hops, 0.99), 1),
    }
    return {
        "params": {"rate": args.rate, "aht_s": args.aht, "agents": args.agents,
                   "target_s": args.target, "duration_s": args.duration,
                   "warmup_s": round(warmup_s, 1), "seed": args.seed,
                   "offered_load_erlangs": round(load, 3),
                   "occupancy": round(load / args.agents, 4),
                   "fetch_wait_ms": args.fetch_wait_ms, "batch_within_ms": args.batch_within_ms,
                   "linger_ms": args.linger_ms},
        "contacts": len(times), "measured_contacts": len(kept), "unanswered": len(unanswered),
        "redirects": ledger.redirects,  # offers that lapsed or were declined: none expected
        "erlang_c_wait_probability": round(erlang_c(args.agents, load), 4),
        "extra_wait_mean_ms": round(statistics.fmean(extra_ms), 1) if extra_ms else 0.0,
        "extra_wait_p50_ms": round(percentile(extra_ms, 0.5), 1),
        "extra_wait_min_ms": round(min(extra_ms, default=0.0), 1),
        "tolerance": {"how": f"{Z:g} x the standard deviation over {args.replications} "
                             "simulated runs of this length, rate, agents and warm-up",
                      "sl": round(tol_sl, 4), "asa_s": round(tol_asa, 4),
                      "replications_mean_sl": round(statistics.fmean(
                          r.service_level for r in reps), 4) if reps else None,
                      "replications_mean_asa_s": round(statistics.fmean(
                          r.asa_s for r in reps), 4) if reps else None},
        "hops_when_served_at_once": hops,
        "ideal_replay_with_agent_hops": transport,
        "paired_ok": paired_ok, "erlang_ok": erlang_ok,
        "measured_sl": round(measured.service_level, 4),
        "ideal_sl": round(ideal_fig.service_level, 4),
        "erlang_c_sl": round(erlang_sl, 4),
        "measured_asa_s": round(measured.asa_s, 4),
        "ideal_asa_s": round(ideal_fig.asa_s, 4),
        "erlang_c_asa_s": round(erlang_asa, 4),
        "extra_wait_p99_ms": round(extra_p99, 1),
        "extra_wait_max_ms": round(max(extra_ms, default=0.0), 1),
        # The broker alone over the same run (load_tests.sim.BrokerProbe): a record every
        # 100 ms, produced and read back as the router's clients do.
        "broker_probe_p50_ms": round(percentile(broker, 0.5), 1) if broker else None,
        "broker_probe_p99_ms": round(percentile(broker, 0.99), 1) if broker else None,
        "per_minute": minutes,
        "per_minute_ok": all(r["extra_wait_p99_ms"] is not None
                             and r["extra_wait_p99_ms"] <= EXTRA_WAIT_P99_GOAL_MS
                             and not r["unanswered"] for r in minutes),
    }


def write_dump(path: Path, times: list[float], handles: list[float], ledger: Ledger,
               agents: int) -> None:
    """One CSV row per contact: its times as published, offered and answered (epoch ms), its
    handle time, and its wait measured and in the ideal replay."""
    ids = [contact_id(i) for i in range(len(times))]
    cs = [ledger.contacts[c] for c in ids]
    origin = cs[0].arrived_ms if cs else 0
    ideal = mmn_fifo_waits([(c.arrived_ms - origin) / 1000 for c in cs], handles, agents)
    rows = ["contact_id,arrived_ms,offered_ms,answered_ms,handle_s,waited_ms,ideal_wait_ms"]
    rows += [f"{i},{c.arrived_ms},{c.offered_ms},{c.answered_ms},{h:.4f},{c.waited_ms},"
             f"{w * 1000:.1f}" for i, c, h, w in zip(ids, cs, handles, ideal, strict=True)]
    path.write_text("\n".join(rows) + "\n")


def render(result: dict[str, Any]) -> str:
    p = result["params"]
    t = result["tolerance"]
    hop = result["ideal_replay_with_agent_hops"]
    return "\n".join([
        f"M/M/{p['agents']}: rate {p['rate']}/s, AHT {p['aht_s']} s, load "
        f"{p['offered_load_erlangs']} erlangs, occupancy {p['occupancy'] * 100:.1f} %, target "
        f"{p['target_s']} s; {result['measured_contacts']} of {result['contacts']} contacts "
        f"measured (warm-up {p['warmup_s']} s)",
        f"  service level  measured {result['measured_sl'] * 100:6.2f} %  ideal replay "
        f"{result['ideal_sl'] * 100:6.2f} %  Erlang C {result['erlang_c_sl'] * 100:6.2f} % "
        f"(tolerance +-{t['sl'] * 100:.2f} points)",
        f"  ASA            measured {result['measured_asa_s']:7.3f} s ideal replay "
        f"{result['ideal_asa_s']:7.3f} s Erlang C {result['erlang_c_asa_s']:7.3f} s "
        f"(tolerance +-{t['asa_s']:.3f} s)",
        f"  extra wait the router added: mean {result['extra_wait_mean_ms']} ms, p50 "
        f"{result['extra_wait_p50_ms']} ms, p99 {result['extra_wait_p99_ms']} ms, max "
        f"{result['extra_wait_max_ms']} ms",
        "  served at once: request to offer p50/p99 "
        f"{result['hops_when_served_at_once']['request_to_offer_ms']['p50']}/"
        f"{result['hops_when_served_at_once']['request_to_offer_ms']['p99']} ms, offer to "
        f"accept {result['hops_when_served_at_once']['offer_to_accept_ms']['p50']}/"
        f"{result['hops_when_served_at_once']['offer_to_accept_ms']['p99']} ms",
        f"  ideal replay with each agent cycle {hop['agent_cycle_hops_ms']} ms longer (two "
        f"hops): SL {hop['sl'] * 100:.2f} %, extra wait mean {hop['extra_wait_mean_ms']} ms, "
        f"p99 {hop['extra_wait_p99_ms']} ms",
        f"  the broker alone (probe): p50 {result['broker_probe_p50_ms']} ms, p99 "
        f"{result['broker_probe_p99_ms']} ms",
        "  minute  contacts  extra p99 ms  unanswered  broker p99 ms",
        *(f"  {r['minute']:6d}  {r['contacts']:8d}  {r['extra_wait_p99_ms'] or '-':>12}  "
          f"{r['unanswered']:10d}  {r['broker_p99_ms'] or '-':>13}" for r in result["per_minute"]),
        f"  paired replay {'OK' if result['paired_ok'] else 'NOT MET'} (SL within "
        f"{SL_GOAL_POINTS * 100:g} point, p99 <= {EXTRA_WAIT_P99_GOAL_MS:g} ms); Erlang C "
        f"{'OK' if result['erlang_ok'] else 'OUTSIDE TOLERANCE'}",
    ])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m load_tests.erlang",
        description="Run one M/M/N queue through the router and compare it with an ideal "
                    "FIFO replay of the same arrivals and handle times, and with Erlang C.")
    ap.add_argument("--rate", type=float, required=True, help="arrivals per second (Poisson)")
    ap.add_argument("--aht", type=float, required=True,
                    help="average handle time in seconds (exponential)")
    ap.add_argument("--agents", type=int, required=True, help="agents, capacity 1 each")
    ap.add_argument("--target", type=float, required=True,
                    help="service-level target in seconds (answered within it)")
    ap.add_argument("--duration", type=float, required=True, help="seconds of arrivals")
    ap.add_argument("--warmup", type=float, default=0.1,
                    help="share of the run whose arrivals are left out of the figures (0.1)")
    ap.add_argument("--replications", type=int, default=200,
                    help="simulated runs that give the Erlang C tolerance (200)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--drain", type=float, default=60.0,
                    help="seconds to wait for the last contacts to be answered (60)")
    ap.add_argument("--fetch-wait-ms", type=int, default=2,
                    help="consumers' fetch wait on the embedded broker (2)")
    ap.add_argument("--batch-within-ms", type=float, default=2.0,
                    help="the worker's batch wait (2)")
    ap.add_argument("--linger-ms", type=int, default=0,
                    help="producers' linger, the worker's and the agents' (0)")
    ap.add_argument("--dump", type=Path, default=None,
                    help="write every contact's times and waits (measured, ideal) to this CSV")
    ap.add_argument("--json", action="store_true", help="end with one JSON line")
    args = ap.parse_args(argv)
    if args.agents < 1 or args.rate <= 0 or args.aht <= 0 or args.duration <= 0:
        ap.error("--rate, --aht, --agents and --duration must be > 0")
    if args.rate * args.aht >= args.agents:
        ap.error(f"offered load {args.rate * args.aht:g} erlangs needs more than "
                 f"{args.agents} agents (the queue would grow without bound)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    times = arrival_times(args.rate, args.duration, rng)
    handles = [rng.expovariate(1 / args.aht) for _ in times]
    load_before = os.getloadavg()[0]
    ledger, probes = asyncio.run(run_pipeline(args, times, handles))
    result = compare(args, times, handles, ledger, probes)
    # A shared machine's other work shows in the latency tails: say how busy it was.
    result["params"]["load_average_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    if args.dump is not None:
        write_dump(args.dump, times, handles, ledger, args.agents)
    print(render(result), flush=True)
    if args.json:
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0 if result["paired_ok"] and result["erlang_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
