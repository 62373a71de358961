"""The rehearsal's report: figures and time series computed from a ledger of per-contact times
(pure), PNG plots of them (matplotlib), and a short text summary."""

from __future__ import annotations

import csv
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from load_tests.sim import ContactTimes, quantiles

PLOTS = ("arrivals_throughput.png", "queue.png", "service_level.png", "latency.png",
         "agents.png")


@dataclass(frozen=True)
class Grading:
    """How a run is graded (run seconds, i.e. after time scaling)."""

    short_abandon_ms: int
    sl_objective: float = 0.8  # share answered within target the operation aims for


def service_level(contacts: Iterable[ContactTimes], short_abandon_ms: int) -> dict[str, Any]:
    """answered within target / (answered + abandoned - short abandoned), the ASA and
    abandonment of escalated contacts (docs/REHEARSAL.md)."""
    answered = within = abandoned = short = 0
    waits: list[int] = []
    for c in contacts:
        if c.answered_ms:
            answered += 1
            within += c.within_target
            waits.append(c.waited_ms)
        elif c.abandoned_ms:
            abandoned += 1
            short += c.abandon_waited_ms < short_abandon_ms
    denominator = answered + abandoned - short
    offered = answered + abandoned
    return {
        "service_level": round(within / denominator, 4) if denominator else None,
        "answered": answered, "answered_within_target": within,
        "abandoned": abandoned, "short_abandoned": short,
        "abandonment_rate": round(abandoned / offered, 4) if offered else None,
        "asa_s": round(statistics.fmean(waits) / 1000, 3) if waits else None,
        "wait_p90_s": round(quantiles(waits)["p90"] / 1000, 3) if waits else None,
    }


def wait_estimate_rows(contacts: dict[str, ContactTimes], handle_mean_s: float,
                       serving: dict[str, int]) -> list[dict[str, Any]]:
    """One row per contact that was told an estimate and then answered: lane, when (ms), the
    position and estimate told, the naive estimate and the wait it had (seconds; ``ewt.csv``)."""
    rows = []
    for cid, c in contacts.items():
        if c.told_estimate_s < 0 or not c.answered_ms:
            continue
        agents = max(serving.get(c.told_lane, 0), 1)
        rows.append({"contact_id": cid, "lane": c.told_lane, "escalated_ms": c.escalated_ms,
                     "told_ms": c.told_ms, "answered_ms": c.answered_ms,
            "position": c.told_position, "estimate_s": c.told_estimate_s,
            "naive_s": c.told_position * handle_mean_s / agents,
            "actual_s": max(c.answered_ms - c.told_ms, 0) / 1000})
    return rows


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows of one shape as CSV with a header (an empty file when there are none)."""
    with path.open("w", newline="") as f:
        if rows:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


def wait_estimates(contacts: dict[str, ContactTimes], handle_mean_s: float,
                   serving: dict[str, int]) -> dict[str, Any]:
    """How good the estimated wait told to queued customers was: for each contact that was
    queued (told its position and estimate, contact.wait_updated.v1) and then answered, the
    absolute error of the first estimate against the wait it then had (answer time minus the
    notice's time); beside it the naive estimate's: position x mean handle time / agents
    serving the lane (``serving``: "<domain>/<lane>" -> agents logged in who serve it at any
    ring)."""
    rows = wait_estimate_rows(contacts, handle_mean_s, serving)
    ours = [abs(r["estimate_s"] - r["actual_s"]) for r in rows]
    naive = [abs(r["naive_s"] - r["actual_s"]) for r in rows]
    q_ours, q_naive = quantiles(ours, 2), quantiles(naive, 2)
    return {
        "ewt_error_p50_s": q_ours["p50"], "ewt_error_p90_s": q_ours["p90"],
        "naive_ewt_error_p50_s": q_naive["p50"], "naive_ewt_error_p90_s": q_naive["p90"],
        "ewt_contacts": len(ours),
        "ewt_method": "position x the recent wait per place in line (running median) "
                      "(docs/ROUTING.md, Position and estimated wait)",
    }


def summarise(contacts: dict[str, ContactTimes], grading: Grading, *, start_ms: int,
              publish_s: float, malformed: int, malformed_deadlettered: int,
              books: dict[str, int]) -> dict[str, Any]:
    """report.json's figures (everything but the run's parameters and the plots)."""
    all_c = list(contacts.values())
    escalated = [c for c in all_c if c.escalated_ms]
    contained = sum(c.bot_action == "answered" for c in all_c)
    bot_seen = sum(bool(c.bot_ms) for c in all_c)
    per_queue: dict[str, list[ContactTimes]] = defaultdict(list)
    for c in escalated:
        per_queue[c.queue or "(not routed)"].append(c)
    arrivals_per_s = bucket_counts([c.arrived_ms for c in all_c], start_ms, 1000)
    bot_per_s = bucket_counts([c.bot_ms for c in all_c if c.bot_ms], start_ms, 1000)
    answered_per_s = bucket_counts([c.answered_ms for c in all_c if c.answered_ms], start_ms,
                                   1000)
    published = len(all_c) + malformed
    deadlettered = sum(c.deadlettered for c in all_c) + malformed_deadlettered
    open_now = sum(not c.done for c in all_c)
    return {
        "totals": {
            "published": published, "malformed_published": malformed,
            "contained": contained, "escalated": len(escalated),
            "answered": sum(bool(c.answered_ms) for c in all_c),
            "abandoned": sum(bool(c.abandoned_ms) and not c.answered_ms for c in all_c),
            "deadlettered": deadlettered, "open": open_now,
        },
        "service_level": {
            "overall": service_level(escalated, grading.short_abandon_ms),
            "per_queue": {q: service_level(cs, grading.short_abandon_ms)
                          for q, cs in sorted(per_queue.items())},
            "objective": grading.sl_objective,
        },
        "bot_containment": round(contained / bot_seen, 4) if bot_seen else None,
        "throughput": {
            "published_per_s": round(published / publish_s, 1) if publish_s else 0.0,
            "peak_arrivals_per_s": max(arrivals_per_s, default=0),
            "peak_bot_replies_per_s": max(bot_per_s, default=0),
            "peak_answers_per_s": max(answered_per_s, default=0),
        },
        "latency_ms": {
            "arrival_to_bot_reply": quantiles(
                [c.bot_seen_ms - c.arrived_ms for c in all_c if c.bot_seen_ms]),
            "arrival_to_first_routing_decision": quantiles(
                [min(x for x in (c.queued_ms, c.offered_ms) if x) - c.arrived_ms
                 for c in escalated if c.queued_ms or c.offered_ms]),
            "arrival_to_offer": quantiles(
                [c.offered_ms - c.arrived_ms for c in escalated if c.offered_ms]),
            "arrival_to_answer": quantiles(
                [c.answered_ms - c.arrived_ms for c in escalated if c.answered_ms]),
        },
        "books": books,
    }


def bucket_counts(times_ms: Iterable[int], start_ms: int, width_ms: int) -> list[int]:
    counts: dict[int, int] = defaultdict(int)
    for t in times_ms:
        counts[max(0, (t - start_ms) // width_ms)] += 1
    return [counts.get(i, 0) for i in range(max(counts, default=-1) + 1)]


def waiting_series(contacts: Sequence[ContactTimes], start_ms: int, end_ms: int,
                   step_ms: int) -> tuple[list[float], list[int], list[float]]:
    """(t_s, contacts waiting for a person, oldest wait in s) at each step: escalated and not
    yet answered nor abandoned (an offered contact still waits)."""
    spans = [(c.escalated_ms, c.answered_ms or c.abandoned_ms or end_ms + 1)
             for c in contacts if c.escalated_ms]
    ts, depth, oldest = [], [], []
    for t in range(start_ms, end_ms + 1, step_ms):
        waiting = [s for s, e in spans if s <= t < e]
        ts.append((t - start_ms) / 1000)
        depth.append(len(waiting))
        oldest.append((t - min(waiting)) / 1000 if waiting else 0.0)
    return ts, depth, oldest


def busy_series(contacts: Sequence[ContactTimes], start_ms: int, end_ms: int,
                step_ms: int) -> tuple[list[float], list[int], list[int]]:
    """(t_s, agents holding at least one contact, contacts in hand) at each step."""
    spans = [(c.agent_id, c.answered_ms, c.completed_ms or end_ms + 1)
             for c in contacts if c.answered_ms and c.agent_id]
    ts, agents, held = [], [], []
    for t in range(start_ms, end_ms + 1, step_ms):
        now = [a for a, s, e in spans if s <= t < e]
        ts.append((t - start_ms) / 1000)
        agents.append(len(set(now)))
        held.append(len(now))
    return ts, agents, held


def windowed(contacts: Sequence[ContactTimes], start_ms: int, end_ms: int, width_ms: int,
             grading: Grading) -> dict[str, list[float | None]]:
    """Per window: service level of outcomes in it, and latency percentiles of arrivals in it."""
    n = max(1, (end_ms - start_ms + width_ms - 1) // width_ms)
    outcome: list[list[ContactTimes]] = [[] for _ in range(n)]
    arrived: list[list[ContactTimes]] = [[] for _ in range(n)]
    for c in contacts:
        end = c.answered_ms or c.abandoned_ms
        if c.escalated_ms and end:
            outcome[min(n - 1, max(0, (end - start_ms) // width_ms))].append(c)
        arrived[min(n - 1, max(0, (c.arrived_ms - start_ms) // width_ms))].append(c)
    out: dict[str, list[float | None]] = defaultdict(list)
    for i in range(n):
        out["t_s"].append((i + 0.5) * width_ms / 1000)
        out["service_level"].append(service_level(outcome[i],
                                                  grading.short_abandon_ms)["service_level"])
        bot = [c.bot_seen_ms - c.arrived_ms for c in arrived[i] if c.bot_seen_ms]
        offer = [c.offered_ms - c.arrived_ms for c in arrived[i] if c.offered_ms]
        routed = [min(x for x in (c.queued_ms, c.offered_ms) if x) - c.arrived_ms
                  for c in arrived[i] if c.queued_ms or c.offered_ms]
        for name, values in (("bot", bot), ("offer", offer), ("routed", routed)):
            q = quantiles(values) if values else None
            out[f"{name}_p50_ms"].append(q["p50"] if q else None)
            out[f"{name}_p99_ms"].append(q["p99"] if q else None)
    return dict(out)


def nan_gaps(values: Sequence[float | None]) -> list[float]:
    """None (no data in a window) as NaN: matplotlib leaves a gap in the line."""
    return [math.nan if v is None else v for v in values]


def plot(out_dir: Path, contacts: dict[str, ContactTimes], grading: Grading, *,
         start_ms: int, end_ms: int, publish_end_ms: int, slots: int, agents: int,
         title: str, redis_waiting: Sequence[tuple[float, int]] = ()) -> list[str]:
    """Write the PNGs; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cs = list(contacts.values())
    step = 500
    width = max(1000, (end_ms - start_ms) // 40 // 1000 * 1000)
    publish_end_s = (publish_end_ms - start_ms) / 1000

    def finish(fig: Any, ax: Any, name: str, ylabel: str) -> str:
        ax.set_xlabel("seconds into the run")
        ax.set_ylabel(ylabel)
        ax.axvline(publish_end_s, color="grey", linestyle=":", linewidth=1)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
        ax.set_title(title, fontsize=9)
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        return name

    names = []
    fig, ax = plt.subplots(figsize=(9, 4))
    for label, times in (
        ("arrivals", [c.arrived_ms for c in cs]),
        ("bot replies", [c.bot_ms for c in cs if c.bot_ms]),
        ("escalations", [c.escalated_ms for c in cs if c.escalated_ms]),
        ("answered by agents", [c.answered_ms for c in cs if c.answered_ms]),
        ("abandoned", [c.abandoned_ms for c in cs if c.abandoned_ms and not c.answered_ms]),
    ):
        counts = bucket_counts(times, start_ms, 1000)
        ax.plot([i + 0.5 for i in range(len(counts))], counts, label=label, linewidth=1.2)
    names.append(finish(fig, ax, PLOTS[0], "contacts per second"))

    ts, depth, oldest = waiting_series(cs, start_ms, end_ms, step)
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(ts, depth, label="waiting for a person (from the audit log)", color="tab:blue")
    if redis_waiting:
        ax.plot([t for t, _ in redis_waiting], [w for _, w in redis_waiting], ".",
                markersize=3, color="tab:cyan", label="waiting + offered (Redis, sampled)")
    ax2 = ax.twinx()
    ax2.plot(ts, oldest, label="oldest wait", color="tab:red")
    ax2.set_ylabel("oldest wait (s)")
    ax2.legend(loc="upper left", fontsize=8)
    names.append(finish(fig, ax, PLOTS[1], "contacts waiting"))

    win = windowed(cs, start_ms, end_ms, width, grading)
    fig, ax = plt.subplots(figsize=(9, 4))
    sl = [math.nan if v is None else v * 100 for v in win["service_level"]]
    ax.plot(nan_gaps(win["t_s"]), sl, marker="o", markersize=3,
            label=f"service level per {width // 1000} s window")
    ax.axhline(grading.sl_objective * 100, color="tab:red", linestyle="--",
               label=f"objective {grading.sl_objective * 100:g} % within target")
    ax.set_ylim(0, 105)
    names.append(finish(fig, ax, PLOTS[2], "answered within target (%)"))

    fig, ax = plt.subplots(figsize=(9, 4))
    for key, label in (("bot_p50_ms", "arrival to bot reply p50"),
                       ("bot_p99_ms", "arrival to bot reply p99"),
                       ("routed_p50_ms", "arrival to first routing decision p50"),
                       ("routed_p99_ms", "arrival to first routing decision p99"),
                       ("offer_p99_ms", "arrival to offer p99 (includes waiting)")):
        ax.plot(nan_gaps(win["t_s"]), nan_gaps(win[key]), marker=".", label=label)
    ax.set_yscale("log")
    names.append(finish(fig, ax, PLOTS[3], "milliseconds (log)"))

    ts, busy, held = busy_series(cs, start_ms, end_ms, step)
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(ts, busy, label="agents with a contact", color="tab:green")
    ax.plot(ts, held, label="contacts in hand", color="tab:olive")
    ax.axhline(agents, color="tab:green", linestyle="--", linewidth=1, label="agents logged in")
    ax.axhline(slots, color="tab:olive", linestyle="--", linewidth=1,
               label="chat slots (capacity)")
    names.append(finish(fig, ax, PLOTS[4], "agents / contacts"))
    return names


def render(report: dict[str, Any]) -> str:
    """The short text summary."""
    t = report["totals"]
    sl = report["service_level"]["overall"]
    lat = report["latency_ms"]

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{v * 100:.1f} %"

    lines = [
        f"rehearsal {report['run']['profile']}: {t['published']} contacts in "
        f"{report['run']['duration_s']:g} s (peak {report['throughput']['peak_arrivals_per_s']}"
        f"/s), {report['run']['agents']} agents, time scale {report['run']['time_scale']:g}",
        f"  contained by the bot {t['contained']} ({pct(report['bot_containment'])}), escalated "
        f"{t['escalated']}, answered {t['answered']}, abandoned {t['abandoned']}, "
        f"deadlettered {t['deadlettered']}, open {t['open']}",
        f"  service level {pct(sl['service_level'])} (objective "
        f"{report['service_level']['objective'] * 100:g} %), ASA {sl['asa_s']} s, abandonment "
        f"{pct(sl['abandonment_rate'])}",
        f"  latency p50/p99: bot reply {lat['arrival_to_bot_reply']['p50']}/"
        f"{lat['arrival_to_bot_reply']['p99']} ms, first routing decision "
        f"{lat['arrival_to_first_routing_decision']['p50']}/"
        f"{lat['arrival_to_first_routing_decision']['p99']} ms, answer "
        f"{lat['arrival_to_answer']['p50']}/{lat['arrival_to_answer']['p99']} ms",
    ]
    for q, fig in report["service_level"]["per_queue"].items():
        lines.append(f"    {q:<14} SL {pct(fig['service_level']):>7}  answered "
                     f"{fig['answered']:5d}  abandoned {fig['abandoned']:4d}  ASA {fig['asa_s']} s")
    lines.append(f"  books {'balance' if report['balanced'] else 'DO NOT BALANCE'}; report and "
                 f"plots in {report['out_dir']}")
    return "\n".join(lines)
