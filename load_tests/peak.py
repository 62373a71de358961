"""The peak rehearsal: `python -m load_tests.peak --profile {steady,ramp,double11} --duration S
--out DIR`.

On the embedded stack (or, with ``--external``, against the Kafka and Redis that the
``PEAKROUTE_*`` settings name, served by your own workers), customers arrive as a Poisson process
shaped by the profile, ask questions from the knowledge base (Chinese and English; most the bot
can close, some hand-offs, some asking for a person), and leave when their patience runs out;
simulated agents on the agents client accept after a delay, handle contacts for a drawn time,
sometimes let an offer lapse and take breaks. Every contact-centre time (service targets, ring
delays, offer timeout, handle times, patience, breaks) is multiplied by ``--time-scale`` so that
a rehearsal fits in a minute. DIR gets report.json and PNG plots; stdout a short summary.
With ``--domains N`` the contacts are spread over N routing domains (merchants) with their own
agents, staffed unevenly with ``--domain-staffing``; the summary then ranks them by their service
rating (`peakroute rating`), and ``--keep-stack`` leaves the embedded stack running to ask it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import math
import random
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import yaml

from agents.client import AgentBus
from agents.simulated import AgentPool, Behaviour, roster
from load_tests import report as rpt
from load_tests.gateway import MALFORMED
from load_tests.questions import questions
from load_tests.sim import (
    PROFILES,
    Ledger,
    Publisher,
    Recorder,
    arrival_times,
    peak_factor,
    wait_agents_known,
)
from router.books import read_books
from router.bot.kb import resolve_kb_path
from router.demo import WorkerProcess, wait_ready
from router.events import ContactArrived, CustomerLeft, Event, Language, Tier
from router.redis_client import redis_client
from router.routing.config import DEFAULT_POLICY, load_policy
from router.routing.policy import memberships
from router.settings import Settings
from router.sla.rating import ranked
from router.sla.snapshot import read_snapshot
from router.stack import EmbeddedStack
from router.stage import now_ms

DOMAIN = "shop-1"  # the first routing domain (with --domains N: shop-1 .. shop-N)
POLICY_FILE = "policy.scaled.yaml"  # the routing policy the rehearsal's worker serves
# Policy keys that are durations: scaled with the run (the policy wants targets >= 1 s).
SCALED_POLICY_KEYS = ("service_target_s", "offer_timeout_s", "after_s", "priority_step_s")
MIN_POLICY_S = {"service_target_s": 1.0, "offer_timeout_s": 1.0}
ESCALATED_SHARE = 0.13  # share of the question mix the bot hands to a person (measured, 0.12)
SLOTS_PER_AGENT = 3.0  # the roster's mean chat capacity
STAFFING = 0.5  # --agents 0: staff for this share of the peak's offered load


@dataclass(frozen=True)
class Options:
    profile: str
    duration_s: float
    out: Path
    rate: float = 20.0
    time_scale: float = 0.1
    agents: int = 0
    workers: int = 1
    handle_dist: str = "lognormal"
    handle_mean_s: float = 90.0  # full-scale seconds (all below too)
    patience_dist: str = "exponential"
    patience_mean_s: float = 60.0
    accept_delay_s: tuple[float, float] = (1.0, 5.0)
    no_answer_ratio: float = 0.02
    break_every_s: float = 900.0
    break_s: float = 120.0
    vip_ratio: float = 0.05
    bad_ratio: float = 0.001
    sl_objective: float = 0.8
    drain_s: float = 30.0
    seed: int = 11
    external: bool = False
    json_line: bool = False
    domains: int = 1
    domain_staffing: tuple[float, ...] = ()  # relative staffing per domain (default equal)
    keep_stack: bool = False

    @property
    def domain_names(self) -> list[str]:
        return [DOMAIN] if self.domains == 1 else [f"shop-{i + 1}" for i in range(self.domains)]

    def agents_per_domain(self) -> list[int]:
        """The staffed agents split over the domains: an equal share of the load each, times
        the domain's relative staffing."""
        weights = list(self.domain_staffing) or [1.0] * self.domains
        share = self.staffed_agents() / self.domains
        return [max(1, round(share * w)) for w in weights]

    def scaled(self, seconds: float) -> float:
        return seconds * self.time_scale

    def staffed_agents(self) -> int:
        if self.agents:
            return self.agents
        peak_load = (self.rate * peak_factor(self.profile) * ESCALATED_SHARE
                     * self.scaled(self.handle_mean_s))
        return max(10, math.ceil(STAFFING * peak_load / SLOTS_PER_AGENT))


def scaled_policy(text: str, scale: float) -> str:
    """The routing policy with every duration multiplied by ``scale``."""
    data = yaml.safe_load(text)

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if key in SCALED_POLICY_KEYS and isinstance(value, int | float):
                    out[key] = max(MIN_POLICY_S.get(key, 0.001), round(value * scale, 3))
                else:
                    out[key] = walk(value)
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return yaml.safe_dump(walk(data), sort_keys=False)


def write_scaled_policy(base: Settings, opts: Options) -> Path:
    """The configured routing policy (or the shipped one), scaled, in the output directory."""
    policy_file = opts.out / POLICY_FILE
    source = (Path(base.routing_policy).read_text() if base.routing_policy
              else (resources.files("router.routing") / DEFAULT_POLICY).read_text())
    policy_file.write_text(scaled_policy(source, opts.time_scale))
    return policy_file


def run_settings(base: Settings, opts: Options, policy_file: Path) -> Settings:
    """The worker's settings for a scaled rehearsal."""
    return base.replace(
        routing_policy=str(policy_file),
        sla_target_s=max(1.0, opts.scaled(base.sla_target_s)),
        offer_timeout_s=max(1.0, opts.scaled(base.offer_timeout_s)),
        short_abandon_s=opts.scaled(base.short_abandon_s),
        bot_silence_close_s=max(1.0, opts.scaled(base.bot_silence_close_s)),
    )


class Customers:
    """The gateway side: publishes the arrivals and sends the customers away whose patience
    runs out before an agent answers."""

    def __init__(self, settings: Settings, opts: Options, ledger: Ledger) -> None:
        self.settings = settings
        self.opts = opts
        self.ledger = ledger
        self.rng = random.Random(opts.seed)
        self.publisher = Publisher(settings)
        mix = questions(resolve_kb_path(settings.bot_kb_path))
        self._questions = [(Language(lang), text) for lang, text, _ in mix]
        self._weights = [w for _, _, w in mix]
        self.run_id = uuid.uuid4().hex[:6]
        self.malformed = 0
        self.left = 0
        self._leaving: list[tuple[float, str]] = []
        self.domains = opts.domain_names
        self.domain_of: dict[str, str] = {}
        self._seen_escalations = 0

    def patience_s(self) -> float:
        mean = self.opts.scaled(self.opts.patience_mean_s)
        if self.opts.patience_dist == "lognormal":
            sigma = 0.8
            return self.rng.lognormvariate(math.log(mean) - sigma**2 / 2, sigma)
        return self.rng.expovariate(1 / mean)

    def make(self, i: int) -> tuple[str, str, Event | bytes]:
        topic = self.settings.topic_contacts_inbound
        if self.rng.random() < self.opts.bad_ratio:
            self.malformed += 1
            return topic, f"bad-{self.run_id}-{i}", MALFORMED[i % len(MALFORMED)]
        language, text = self.rng.choices(self._questions, self._weights)[0]
        contact_id = f"pk-{self.run_id}-{i:07d}"
        domain = self.domains[i % len(self.domains)]
        self.domain_of[contact_id] = domain
        tier = Tier.VIP if self.rng.random() < self.opts.vip_ratio else Tier.NORMAL
        return topic, contact_id, ContactArrived(
            event_id=uuid.uuid4().hex, ts_ms=now_ms(), contact_id=contact_id, domain=domain,
            customer_id=f"cust-{self.rng.randrange(10**8)}", language=language, text=text,
            tier=tier)

    def sent(self, _i: int, event: Event | bytes) -> None:
        if isinstance(event, ContactArrived):
            self.ledger.published(event.contact_id, event.ts_ms)

    async def patience_loop(self) -> None:
        """Escalated customers leave when their patience runs out, unless answered by then."""
        while True:
            new = self.ledger.escalations[self._seen_escalations:]
            self._seen_escalations += len(new)
            now = time.monotonic()
            for contact_id in new:
                heapq.heappush(self._leaving, (now + self.patience_s(), contact_id))
            while self._leaving and self._leaving[0][0] <= now:
                _, contact_id = heapq.heappop(self._leaving)
                c = self.ledger.contacts.get(contact_id)
                if c is None or c.answered_ms or c.abandoned_ms:
                    continue
                event = CustomerLeft(event_id=uuid.uuid4().hex, ts_ms=now_ms(),
                                     contact_id=contact_id,
                                     domain=self.domain_of.get(contact_id, DOMAIN))
                await self.publisher.producer.send(self.settings.topic_contacts_inbound,
                                                   event.to_json(), key=contact_id.encode())
                self.left += 1
            await asyncio.sleep(0.02)


async def rehearse(opts: Options, say: Any = print) -> dict[str, Any]:
    opts.out.mkdir(parents=True, exist_ok=True)
    base = Settings.from_env()
    policy_file = write_scaled_policy(base, opts)
    stack: EmbeddedStack | None = None
    workers: list[WorkerProcess] = []
    keep = False
    try:
        if opts.external:
            settings = base
            say(f"against kafka {settings.kafka_bootstrap_servers} (your workers, your policy)")
        else:
            stack = EmbeddedStack(opts.out / "stack", partitions=base.topic_partitions,
                                  detach=opts.keep_stack)
            say("starting the embedded stack and the router worker(s) ...")
            settings = run_settings((await stack.start()).replace(
                **{k: getattr(base, k) for k in ("bot_kb_path", "bot_model_dir")}), opts,
                policy_file)
            workers = [WorkerProcess(settings, i, stack.state_dir / "logs")
                       for i in range(opts.workers)]
            await wait_ready(workers)
        report = await _drive(opts, settings, workers)
        keep = opts.keep_stack
        return report
    finally:
        for w in workers:
            w.stop()
        if stack is not None and not keep:
            stack.stop()


async def _drive(opts: Options, settings: Settings, workers: list[WorkerProcess]
                 ) -> dict[str, Any]:
    rng = random.Random(opts.seed)
    staffing = dict(zip(opts.domain_names, opts.agents_per_domain(), strict=True))
    agents = sum(staffing.values())
    rosters = {d: roster(n, d, seed=opts.seed + i) for i, (d, n) in enumerate(staffing.items())}
    profiles = [p for r in rosters.values() for p in r]
    behaviour = Behaviour(
        accept_delay_s=(opts.scaled(opts.accept_delay_s[0]), opts.scaled(opts.accept_delay_s[1])),
        handle_mean_s=opts.scaled(opts.handle_mean_s), handle_dist=opts.handle_dist,
        back_after_redirect_s=opts.scaled(20.0), no_answer_ratio=opts.no_answer_ratio,
        break_every_s=opts.scaled(opts.break_every_s), break_s=opts.scaled(opts.break_s))
    ledger = Ledger()
    bus = AgentBus(settings)
    pools = [AgentPool(bus, r, d, behaviour, seed=opts.seed + i)
             for i, (d, r) in enumerate(rosters.items())]
    recorder = Recorder(settings, ledger)
    customers = Customers(settings, opts, ledger)
    client = redis_client(settings)
    times = arrival_times(opts.rate, opts.duration_s, rng, opts.profile)
    redis_waiting: list[tuple[float, int]] = []
    tasks: list[asyncio.Task[None]] = []
    print(f"{agents} agents ({sum(sum(p.capacity.values()) for p in profiles)} chat slots); "
          f"{len(times)} arrivals over {opts.duration_s:g} s, profile {opts.profile} "
          f"(base {opts.rate:g}/s, peak {opts.rate * peak_factor(opts.profile):g}/s)",
          flush=True)
    try:
        await bus.start()
        for pool in pools:
            await pool.start()
        for d, n in staffing.items():
            await wait_agents_known(settings, d, n)
        await recorder.start()
        await customers.publisher.start()
        start_ms = now_ms()
        tasks.append(asyncio.create_task(customers.patience_loop()))

        async def sample() -> None:
            while True:
                books = await read_books(client)
                redis_waiting.append(((now_ms() - start_ms) / 1000, books.waiting + books.offered))
                await asyncio.sleep(1.0)

        tasks.append(asyncio.create_task(sample()))
        progress = asyncio.create_task(_progress(ledger, customers, start_ms))
        tasks.append(progress)
        await customers.publisher.run(times, customers.make, customers.sent)
        publish_end_ms = now_ms()
        print("publishing done; draining (answered or abandoned) ...", flush=True)
        drain_until = time.monotonic() + max(opts.drain_s,
                                             3 * opts.scaled(opts.patience_mean_s))
        while time.monotonic() < drain_until and ledger.open_count():  # noqa: ASYNC110
            await asyncio.sleep(0.5)
        end_ms = now_ms()
        await asyncio.sleep(1.0)  # the last completions and dead letters
        books = (await read_books(client)).as_dict()
        snapshot = await read_snapshot(client, settings)
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await recorder.stop()
        with contextlib.suppress(Exception):
            await customers.publisher.stop()
        with contextlib.suppress(Exception):
            for pool in pools:
                await pool.stop()
            await bus.stop()
        await client.aclose()

    grading = rpt.Grading(short_abandon_ms=int(settings.short_abandon_s * 1000),
                          sl_objective=opts.sl_objective)
    publish_s = (publish_end_ms - start_ms) / 1000
    result = rpt.summarise(ledger.contacts, grading, start_ms=start_ms, publish_s=publish_s,
                           malformed=customers.malformed,
                           malformed_deadlettered=ledger.other_dead_letters, books=books)
    # The router's books: every published contact is contained, answered, abandoned,
    # dead-lettered or still open (the dead letters counted from the topic).
    dead = result["totals"]["deadlettered"]
    accounted = books["contained"] + books["answered"] + books["abandoned"] + dead + books["open"]
    result["balanced"] = accounted == result["totals"]["published"]
    # The estimated wait told to queued customers against their actual wait, beside the naive
    # estimate's (position x mean handle time / agents serving the lane).
    policy = load_policy(settings.routing_policy)
    serving: Counter[str] = Counter(
        f"{d}/{m.lane}" for d, r in rosters.items() for p in r
        for m in memberships(p.skills, policy.for_domain(d)))
    result.update(rpt.wait_estimates(ledger.contacts, opts.scaled(opts.handle_mean_s), serving))
    rpt.write_csv(opts.out / "ewt.csv", rpt.wait_estimate_rows(
        ledger.contacts, opts.scaled(opts.handle_mean_s), serving))
    slots = sum(sum(p.capacity.values()) for p in profiles)
    title = (f"{opts.profile}, {opts.duration_s:g} s, base {opts.rate:g}/s, {agents} agents, "
             f"time scale {opts.time_scale:g}")
    plots = rpt.plot(opts.out, ledger.contacts, grading, start_ms=start_ms, end_ms=end_ms,
                     publish_end_ms=publish_end_ms, slots=slots, agents=agents, title=title,
                     redis_waiting=redis_waiting)
    report = {
        "run": {
            "profile": opts.profile, "duration_s": opts.duration_s, "base_rate": opts.rate,
            "peak_rate": opts.rate * peak_factor(opts.profile), "agents": agents,
            "chat_slots": slots, "workers": opts.workers, "time_scale": opts.time_scale,
            "handle": {"dist": opts.handle_dist, "mean_s": opts.scaled(opts.handle_mean_s)},
            "patience": {"dist": opts.patience_dist,
                         "mean_s": opts.scaled(opts.patience_mean_s)},
            "accept_delay_s": [opts.scaled(x) for x in opts.accept_delay_s],
            "no_answer_ratio": opts.no_answer_ratio,
            "breaks": {"every_s": opts.scaled(opts.break_every_s),
                       "length_s": opts.scaled(opts.break_s)},
            "targets_s": {"default": settings.sla_target_s,
                          "policy": POLICY_FILE},
            "seconds_are": "run seconds (full-scale seconds x time_scale)",
            "drained_s": round((end_ms - publish_end_ms) / 1000, 1),
        },
        **result,
        "agents_sim": {name: sum(getattr(p.stats, field) for p in pools)
                       for name, field in (("offers", "offers"), ("accepted", "accepted"),
                                           ("completed", "completed"),
                                           ("let_lapse", "unanswered"),
                                           ("rescinded", "rescinded"), ("breaks", "breaks"))},
        "domains": {"agents": staffing,
                    "ratings": [r.as_dict() for r in ranked(snapshot.ratings)]},
        "customers_left": customers.left,
        "redirects": ledger.redirects,
        "plots": plots,
        "out_dir": str(opts.out),
        "stack_kept": str(opts.out / "stack") if opts.keep_stack and not opts.external else None,
    }
    (opts.out / "report.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return report


async def _progress(ledger: Ledger, customers: Customers, start_ms: int) -> None:
    while True:
        await asyncio.sleep(5.0)
        cs = ledger.contacts.values()
        waiting = sum(bool(c.escalated_ms) and not (c.answered_ms or c.abandoned_ms) for c in cs)
        print(f"t={(now_ms() - start_ms) / 1000:5.0f}s published={customers.publisher.sent:6d} "
              f"escalated={len(ledger.escalations):5d} waiting={waiting:5d} "
              f"answered={sum(bool(c.answered_ms) for c in cs):5d} left={customers.left:4d}",
              flush=True)


def parse_args(argv: list[str] | None = None) -> Options:
    ap = argparse.ArgumentParser(
        prog="python -m load_tests.peak",
        description="Rehearse a sales peak on the router: load profile, customers, agents; "
                    "writes report.json and plots to --out.")
    ap.add_argument("--profile", choices=PROFILES, required=True,
                    help="steady; ramp (10 %% to 100 %% over 3/4 of the run); double11 "
                         "(baseline, 10x within seconds at 30 %% of the run, slow decay)")
    ap.add_argument("--duration", type=float, required=True, help="seconds of arrivals")
    ap.add_argument("--out", type=Path, required=True, help="directory for report and plots")
    ap.add_argument("--rate", type=float, default=20.0,
                    help="base arrival rate, contacts/s (double11 peaks at 10x) (20)")
    ap.add_argument("--time-scale", type=float, default=0.1,
                    help="multiplies every contact-centre time: targets, ring delays, offer "
                         "timeout, handle times, patience, breaks (0.1: a 30 s target is 3 s)")
    ap.add_argument("--agents", type=int, default=0,
                    help=f"simulated agents (0: staffed for {STAFFING * 100:g} %% of the "
                         "peak's offered load)")
    ap.add_argument("--workers", type=int, default=1, help="router worker processes (1)")
    ap.add_argument("--handle-dist", choices=("lognormal", "exponential"), default="lognormal")
    ap.add_argument("--handle-mean", type=float, default=90.0,
                    help="mean handle time, full-scale seconds (90)")
    ap.add_argument("--patience-dist", choices=("exponential", "lognormal"),
                    default="exponential")
    ap.add_argument("--patience-mean", type=float, default=60.0,
                    help="customers' mean patience for a person, full-scale seconds (60)")
    ap.add_argument("--no-answer", type=float, default=0.02,
                    help="share of offers an agent lets lapse (0.02)")
    ap.add_argument("--break-every", type=float, default=900.0,
                    help="mean time between an agent's breaks, full-scale s (900; 0 = none)")
    ap.add_argument("--break-length", type=float, default=120.0,
                    help="break length, full-scale s (120)")
    ap.add_argument("--vip-ratio", type=float, default=0.05)
    ap.add_argument("--bad-ratio", type=float, default=0.001,
                    help="share of malformed records (they must end in the deadletter topic)")
    ap.add_argument("--sl-objective", type=float, default=0.8,
                    help="service level the operation aims for (0.8 = 80 %% within target)")
    ap.add_argument("--drain", type=float, default=30.0,
                    help="seconds to wait after the last arrival for open contacts (30)")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--external", action="store_true",
                    help="use the Kafka and Redis of the PEAKROUTE_* settings and the workers "
                         "already serving them (their policy is not scaled)")
    ap.add_argument("--domains", type=int, default=1,
                    help="routing domains (merchants) the contacts are spread over, each with "
                         "its own agents: shop-1 .. shop-N (1)")
    ap.add_argument("--domain-staffing", default="",
                    help="relative staffing per domain, e.g. 1.2,0.8,0.5 (default equal)")
    ap.add_argument("--keep-stack", action="store_true",
                    help="leave the embedded stack (broker, Redis) running afterwards, for "
                         "`peakroute rating` and `peakroute status` (PEAKROUTE_STATE_DIR="
                         "DIR/stack); `peakroute stack down` stops it")
    ap.add_argument("--json", action="store_true", help="end with report.json on one line")
    a = ap.parse_args(argv)
    if a.duration <= 0 or a.rate <= 0 or not 0 < a.time_scale <= 1:
        ap.error("--duration and --rate must be > 0, --time-scale in (0, 1]")
    try:
        staffing = tuple(float(x) for x in a.domain_staffing.split(",") if x.strip())
    except ValueError:
        ap.error("--domain-staffing: numbers separated by commas")
    if a.domains < 1 or (staffing and (len(staffing) != a.domains
                                       or min(staffing) <= 0)):
        ap.error("--domains must be >= 1 and --domain-staffing give one positive number per "
                 "domain")
    opts = Options(profile=a.profile, duration_s=a.duration, out=a.out, rate=a.rate,
                   time_scale=a.time_scale, agents=a.agents, workers=a.workers,
                   handle_dist=a.handle_dist, handle_mean_s=a.handle_mean,
                   patience_dist=a.patience_dist, patience_mean_s=a.patience_mean,
                   no_answer_ratio=a.no_answer, break_every_s=a.break_every,
                   break_s=a.break_length, vip_ratio=a.vip_ratio, bad_ratio=a.bad_ratio,
                   sl_objective=a.sl_objective, drain_s=a.drain, seed=a.seed,
                   external=a.external, json_line=a.json, domains=a.domains,
                   domain_staffing=staffing, keep_stack=a.keep_stack)
    return opts


def render_domains(report: dict[str, Any]) -> str:
    """The domains ranked by their service rating (as `peakroute rating` shows them)."""
    lines = ["  domains by service rating (window "
             + (report["domains"]["ratings"][0]["window"] if report["domains"]["ratings"]
                else "-") + "):"]
    for i, r in enumerate(report["domains"]["ratings"]):
        c = r["components"]

        def pct(name: str, parts: dict[str, Any] = c) -> str:
            return "-" if parts.get(name) is None else f"{parts[name] * 100:.0f}"

        score = "-" if r["score"] is None else f"{r['score']:.1f}"
        lines.append(f"    {i + 1}. {r['domain']:<8} {r['tier']:<8} {score:>5}  agents "
                     f"{report['domains']['agents'].get(r['domain'], 0):3d}  contacts "
                     f"{r['contacts']:5d}  SL/obj {pct('service_level')} within "
                     f"{pct('within_target')} speed {pct('answer_speed')} kept "
                     f"{pct('retention')} bot {pct('bot_containment')}")
    if report.get("stack_kept"):
        lines.append(f"  stack kept running: PEAKROUTE_STATE_DIR={report['stack_kept']} "
                     ".venv/bin/peakroute rating (then ... peakroute stack down)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    report = asyncio.run(rehearse(opts))
    print(rpt.render(report), flush=True)
    if opts.domains > 1 or opts.keep_stack:
        print(render_domains(report), flush=True)
    if opts.json_line:
        sys.stdout.write(orjson.dumps(report).decode() + "\n")
    return 0 if report["balanced"] else 1


if __name__ == "__main__":
    sys.exit(main())
