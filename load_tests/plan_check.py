"""The plan against the router: `python -m load_tests.plan_check --rate L --aht S --target T
--objective R --duration D --replications K --json`.

Plans one interval with `peakroute plan`'s code (router/plan/planner.py: the fewest agents whose
Erlang C service level meets the objective), then rehearses it K times through the real
pipeline with exactly that staffing (load_tests.erlang: Poisson arrivals straight to the routing
stage, exponential handle times, agents of capacity 1, a fresh embedded stack and worker per
run, each with its own seed). The measured service level is the router's own (its ``accepted``
decisions' ``within_target``, after the warm-up). The check: the mean over the runs lies within
3 standard errors of the planned service level, the standard error being the runs' standard
deviation / sqrt(K). Heavy (K runs of D seconds each): not part of `make test`; its figures are
in docs/REHEARSAL.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import os
import random
import statistics
import sys
from typing import Any

import orjson

from load_tests import erlang as rehearsal
from load_tests.sim import arrival_times
from router.plan.planner import Assumptions, Interval, plan_interval

Z = 3.0


def planned(args: argparse.Namespace) -> dict[str, Any]:
    """The interval as `peakroute plan` would staff it (no bot in front: containment 0)."""
    interval = Interval(dt.datetime.now(dt.UTC), args.duration, args.rate * args.duration)
    a = Assumptions(containment=0.0, aht_s=args.aht, patience_s=1e9, target_s=args.target,
                    objective=args.objective, formula="answered_only")
    row = plan_interval(interval, a)
    return {"agents": row.agents_c, **row.erlang_c.as_dict()}


def rehearse_once(args: argparse.Namespace, agents: int, seed: int) -> dict[str, Any]:
    run = rehearsal.parse_args([
        "--rate", str(args.rate), "--aht", str(args.aht), "--agents", str(agents),
        "--target", str(args.target), "--duration", str(args.duration),
        "--warmup", str(args.warmup), "--seed", str(seed),
        "--replications", str(args.sim_replications)])
    rng = random.Random(seed)
    times = arrival_times(args.rate, args.duration, rng)
    handles = [rng.expovariate(1 / args.aht) for _ in times]
    ledger, probes = asyncio.run(rehearsal.run_pipeline(run, times, handles))
    return rehearsal.compare(run, times, handles, ledger, probes)


def summarise(plan: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    measured = [r["measured_sl"] for r in runs]
    mean = statistics.fmean(measured)
    sd = statistics.stdev(measured) if len(measured) > 1 else math.nan
    se = sd / math.sqrt(len(measured))
    gap = mean - plan["service_level"]
    return {
        "planned_sl": round(plan["service_level"], 4),
        "measured_sl_mean": round(mean, 4),
        "measured_sl_sd": round(sd, 4),
        "standard_error": round(se, 4),
        "gap": round(gap, 4),
        "gap_in_standard_errors": round(gap / se, 2) if se > 0 else None,
        "ideal_sl_mean": round(statistics.fmean(r["ideal_sl"] for r in runs), 4),
        "measured_asa_s_mean": round(statistics.fmean(r["measured_asa_s"] for r in runs), 4),
        "planned_asa_s": round(plan["asa_s"], 4),
        "within_3_standard_errors": bool(se > 0 and abs(gap) <= Z * se),
    }


def render(args: argparse.Namespace, plan: dict[str, Any], runs: list[dict[str, Any]],
           s: dict[str, Any]) -> str:
    lines = [
        f"plan: {args.rate:g}/s x AHT {args.aht:g} s = {args.rate * args.aht:g} erlangs, "
        f"objective {args.objective * 100:g}% within {args.target:g} s -> {plan['agents']} "
        f"agents, planned service level {plan['service_level'] * 100:.2f}% (occupancy "
        f"{plan['occupancy'] * 100:.1f}%, P(wait) {plan['wait_probability'] * 100:.1f}%, ASA "
        f"{plan['asa_s']:.3f} s)",
        f"rehearsal: {len(runs)} runs of {args.duration:g} s through the router with "
        f"{plan['agents']} agents (warm-up {args.warmup * 100:g}%)",
    ]
    for i, r in enumerate(runs):
        lines.append(f"  run {i + 1} (seed {args.seed + i}): measured "
                     f"{r['measured_sl'] * 100:6.2f}%  ideal replay {r['ideal_sl'] * 100:6.2f}%"
                     f"  ASA {r['measured_asa_s']:.3f} s"
                     f"  contacts {r['measured_contacts']}, unanswered {r['unanswered']}")
    lines.append(
        f"measured {s['measured_sl_mean'] * 100:.2f}% (sd {s['measured_sl_sd'] * 100:.2f}, "
        f"standard error {s['standard_error'] * 100:.2f} points) vs planned "
        f"{s['planned_sl'] * 100:.2f}%: gap {s['gap'] * 100:+.2f} points = "
        f"{s['gap_in_standard_errors']} standard errors -> "
        + ("within 3 standard errors" if s["within_3_standard_errors"]
           else "OUTSIDE 3 standard errors"))
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m load_tests.plan_check",
        description="Plan one interval (Erlang C staffing for the objective), rehearse it "
                    "through the router with that staffing several times, and compare the "
                    "measured service level with the planned one.")
    # Defaults: many handle times per run (60) and a quarter of it as warm-up, so that a run
    # that starts empty is near the steady state the plan describes (docs/REHEARSAL.md).
    ap.add_argument("--rate", type=float, default=10.0, help="contacts per second (10)")
    ap.add_argument("--aht", type=float, default=2.0, help="handle time, seconds (2)")
    ap.add_argument("--target", type=float, default=1.0,
                    help="answer target, seconds, at least 1 (1)")
    ap.add_argument("--objective", type=float, default=0.8, help="service-level objective (0.8)")
    ap.add_argument("--duration", type=float, default=120.0, help="seconds per run (120)")
    ap.add_argument("--replications", type=int, default=10, help="runs through the router (10)")
    ap.add_argument("--warmup", type=float, default=0.25,
                    help="share of each run left out (0.25)")
    ap.add_argument("--seed", type=int, default=200, help="first run's seed (then +1 each)")
    ap.add_argument("--sim-replications", type=int, default=50,
                    help="simulated runs behind load_tests.erlang's own Erlang C tolerance (50)")
    ap.add_argument("--json", action="store_true", help="end with one JSON line")
    args = ap.parse_args(argv)
    if args.replications < 2:
        ap.error("--replications must be at least 2 (the standard error needs them)")
    if args.target < 1:
        ap.error("--target must be at least 1 s (the routing policy's minimum)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = planned(args)
    load_before = os.getloadavg()[0]
    runs = []
    for i in range(args.replications):
        runs.append(rehearse_once(args, plan["agents"], args.seed + i))
        print(f"run {i + 1}/{args.replications}: measured {runs[-1]['measured_sl'] * 100:.2f}%",
              file=sys.stderr, flush=True)
    s = summarise(plan, runs)
    print(render(args, plan, runs, s), flush=True)
    if args.json:
        out = {"params": {k: getattr(args, k) for k in ("rate", "aht", "target", "objective",
                                                        "duration", "replications", "warmup",
                                                        "seed")},
               "plan": plan, **s, "load_average_1m": [round(load_before, 2),
                                                      round(os.getloadavg()[0], 2)],
               "runs": [{k: r[k] for k in ("measured_sl", "ideal_sl", "erlang_c_sl",
                                           "measured_asa_s", "measured_contacts", "unanswered",
                                           "extra_wait_p99_ms")} for r in runs]}
        sys.stdout.write(orjson.dumps(out).decode() + "\n")
    return 0 if s["within_3_standard_errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
