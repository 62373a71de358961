"""Prometheus metrics of a router worker (prometheus-client, base units, bounded labels only).

Labels never carry a contact, customer or agent id: stage, event type, reason, transition kind,
and for the SLA figures domain, queue, window, outcome and agent state (docs/METRICS.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Self

from prometheus_client import CollectorRegistry, disable_created_metrics, generate_latest
from prometheus_client import Counter as _Counter
from prometheus_client import Histogram as _Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:  # annotations only: router.sla.snapshot imports the store, which counts here
    from router.sla.snapshot import Snapshot

disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series: they double the exposition and nobody graphs them

REGISTRY = CollectorRegistry(auto_describe=True)


class _CachedChildren:
    """``labels()`` with the children kept by the label values as given: the stages ask for a
    child per record, and prometheus-client's own ``labels`` turns every value into a string
    and takes a lock each time. ``remove`` and ``clear`` forget the kept children."""

    _children: dict[tuple[object, ...], Any]

    def labels(self, *labelvalues: object, **labelkwargs: object) -> Self:
        if labelkwargs:
            return super().labels(*labelvalues, **labelkwargs)  # type: ignore[misc,no-any-return]
        try:
            return self._children[labelvalues]  # type: ignore[no-any-return]
        except AttributeError:
            self._children = {}
        except KeyError:
            pass
        child = super().labels(*labelvalues)  # type: ignore[misc]
        self._children[labelvalues] = child
        return child  # type: ignore[no-any-return]

    def remove(self, *labelvalues: Any) -> None:
        self._children = {}
        super().remove(*labelvalues)  # type: ignore[misc]

    def clear(self) -> None:
        self._children = {}
        super().clear()  # type: ignore[misc]


class Counter(_CachedChildren, _Counter):
    pass


class Histogram(_CachedChildren, _Histogram):
    pass

EVENTS = Counter(
    "peakroute_events_total", "Input events decoded and processed, by stage and event type.",
    ["stage", "type"], registry=REGISTRY,
)
DEADLETTERS = Counter(
    "peakroute_deadletter_total",
    "Records sent to the deadletter topic, by source topic and reason.",
    ["topic", "reason"], registry=REGISTRY,
)
BOT_DECISIONS = Counter(
    "peakroute_bot_decisions_total",
    "Bot decisions on new contacts and messages, by action and intent.",
    ["action", "intent"], registry=REGISTRY,
)
BOT_CONTACTS = Counter(
    "peakroute_bot_contacts_total",
    "New contacts the bot handled (once each), by language. Containment = "
    "peakroute_bot_contained_total / this; 1 - peakroute_bot_escalations_total / this leads it.",
    ["language"], registry=REGISTRY,
)
BOT_CONTAINED = Counter(
    "peakroute_bot_contained_total",
    "Contacts the bot closed itself (the customer stayed silent after its answer), by language.",
    ["language"], registry=REGISTRY,
)
BOT_ESCALATIONS = Counter(
    "peakroute_bot_escalations_total",
    "Contacts the bot handed to a person (once each), by reason and language.",
    ["reason", "language"], registry=REGISTRY,
)
BOT_INTENTS = Counter(
    "peakroute_bot_intents_total",
    "Customer messages by the intent the bot acted on (unknown = below the threshold) and "
    "language.",
    ["intent", "language"], registry=REGISTRY,
)
BOT_CLASSIFICATION_SECONDS = Histogram(
    "peakroute_bot_classification_duration_seconds",
    "Time to classify one batch of customer messages (one predict call).",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
    registry=REGISTRY,
)
BOT_MODEL_RELOADS = Counter(
    "peakroute_bot_model_reloads_total",
    "Knowledge base or model reloads by the running worker, by result (loaded, failed).",
    ["result"], registry=REGISTRY,
)
TRANSITIONS = Counter(
    "peakroute_routing_transitions_total",
    "Routing transitions applied in Redis (offered, queued, answered, duplicate, stale, ...).",
    ["kind"], registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "peakroute_batch_size", "Records per processed batch, by stage.", ["stage"],
    buckets=(1, 5, 10, 50, 100, 500, 1000, 2000, 5000), registry=REGISTRY,
)
BATCH_SECONDS = Histogram(
    "peakroute_batch_duration_seconds", "Time to process one batch (decode, Redis, produce).",
    ["stage"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    registry=REGISTRY,
)
ANSWER_WAIT = Histogram(
    "peakroute_answer_wait_seconds",
    "Wait from escalation to an agent's acceptance, for answered contacts, by routing domain "
    "and queue (observed by the worker that handled the acceptance: sum over workers).",
    ["domain", "queue"], buckets=(5, 10, 20, 30, 45, 60, 120), registry=REGISTRY,
)

DECISION_SECONDS = Histogram(
    "peakroute_routing_decision_duration_seconds",
    "Time to decide one batch of routing events in Redis (one pipelined round trip of atomic "
    "scripts); every decision of the batch is out when it ends.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
    registry=REGISTRY,
)
CONSUMER_STALLS = Counter(
    "peakroute_consumer_stalls_total",
    "Times this worker owned no partitions longer than a rebalance takes while records of its "
    "topics waited unconsumed by the group, and rejoined the group (router/watchdog.py).",
    registry=REGISTRY,
)

REDIS_ERRORS = Counter(
    "peakroute_redis_errors_total",
    "Redis failures the worker retried (never dead-lettered), by kind: oom, readonly, busy, "
    "loading, masterdown, noreplicas, tryagain, clusterdown, moved, ask, timeout, connection "
    "(router/transient.py).",
    ["kind"], registry=REGISTRY,
)
REQUESTS_CLAMPED = Counter(
    "peakroute_requests_clamped_total",
    "Routing requests whose escalation time was outside [now - contact retention, now] and "
    "was clamped to that range (docs/EVENTS.md), by side (future, too_old).",
    ["side"], registry=REGISTRY,
)
KAFKA_ERRORS = Counter(
    "peakroute_kafka_errors_total",
    "Kafka client errors the worker retried, by error class.",
    ["error"], registry=REGISTRY,
)


class LagCollector(Collector):
    """Consumer lag of this worker's assigned partitions, summed per topic (each partition has
    one owner in the group, so summing over workers gives the group's lag)."""

    def __init__(self) -> None:
        self.source: Callable[[], Mapping[str, int]] | None = None

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "peakroute_consumer_lag_records",
            "Records in this worker's assigned partitions not yet processed (log end offset - "
            "committed offset), per topic.", labels=["topic"])
        for topic, lag in sorted((self.source() if self.source else {}).items()):
            family.add_metric([topic], lag)
        yield family


class ClusterCollector(Collector):
    """The SLA figures from Redis (one truth for every worker). Only the worker holding the
    metrics lease (router/sla/export.py) has a snapshot to export, so a sum over workers counts
    each queue once; every worker says whether it is the one (peakroute_sla_exporter)."""

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None
        self.exporting = False

    def collect(self) -> Iterator[Metric]:
        exporter = GaugeMetricFamily(
            "peakroute_sla_exporter",
            "1 on the worker that exports the cluster's SLA figures (holds the Redis lease).")
        exporter.add_metric([], 1 if self.exporting else 0)
        yield exporter
        if self.exporting and self.snapshot is not None:
            yield from cluster_families(self.snapshot)


Q = ["domain", "queue"]
QW = ["domain", "queue", "window"]


def cluster_families(snap: Snapshot) -> list[Metric]:
    """A snapshot as metric families (pure: also what the tests compare against)."""
    def gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, labels=labels)

    def counter(name: str, doc: str) -> CounterMetricFamily:
        return CounterMetricFamily(name, doc, labels=Q)

    sl = gauge("peakroute_service_level_ratio", "Share of contacts answered within target over "
               "the window (formula: PEAKROUTE_SLA_FORMULA, docs/METRICS.md); absent while "
               "nothing counts.", QW)
    objective = gauge("peakroute_service_level_objective_ratio",
                      "The service-level objective (PEAKROUTE_SLA_OBJECTIVE_RATIO).", Q)
    target = gauge("peakroute_answer_target_seconds",
                   "The queue's answer target (its normal contacts').", Q)
    asa = gauge("peakroute_answer_wait_average_seconds",
                "Average speed of answer over the window (answered contacts).", QW)
    wmax = gauge("peakroute_answer_wait_max_seconds",
                 "Longest wait of a contact answered in the window.", QW)
    window = gauge("peakroute_window_contacts", "Contacts per outcome counted in the window "
                   "(offered = entered the queue).", [*QW, "outcome"])
    totals = {
        "offered": counter("peakroute_contacts_offered", "Contacts that entered the queue."),
        "answered": counter("peakroute_contacts_answered", "Contacts an agent accepted."),
        "answered_within_target": counter("peakroute_contacts_answered_within_target",
                                          "Contacts accepted within their answer target."),
        "abandoned": counter("peakroute_contacts_abandoned",
                             "Contacts whose customer left before an agent accepted."),
        "short_abandoned": counter("peakroute_contacts_short_abandoned",
                                   "Abandoned within PEAKROUTE_SHORT_ABANDON_S."),
    }
    wait_total = counter("peakroute_contacts_answered_wait_seconds",
                         "Sum of the waits of answered contacts.")
    waiting = gauge("peakroute_queue_waiting_contacts", "Contacts escalated to the queue and "
                    "not yet answered nor abandoned (in line or with an offer out).", Q)
    oldest = gauge("peakroute_queue_oldest_wait_seconds",
                   "Wait of the longest-waiting unanswered contact (0 when none).", Q)
    risk = gauge("peakroute_queue_at_risk_contacts", "Unanswered contacts that waited past "
                 "PEAKROUTE_SLA_AT_RISK_SHARE of their target.", Q)
    ewt = gauge("peakroute_queue_estimated_wait_seconds", "Estimated wait of a contact entering "
                "the queue now (docs/METRICS.md); absent when unknown.", Q)
    ready = gauge("peakroute_queue_agents_ready", "Ready agents who serve the queue.", Q)
    agents = gauge("peakroute_agents", "Logged-in agents by state.", ["domain", "state"])
    occupancy = gauge("peakroute_agent_occupancy_ratio", "Agent slots in use over slots in use "
                      "plus free slots of ready agents.", ["domain"])
    for q in snap.queues:
        labels = [q.domain, q.queue]
        objective.add_metric(labels, snap.objective)
        target.add_metric(labels, q.target_s)
        for name, w in q.windows.items():
            if w.service_level is not None:
                sl.add_metric([*labels, name], w.service_level)
            if w.average_wait_s is not None:
                asa.add_metric([*labels, name], w.average_wait_s)
            wmax.add_metric([*labels, name], w.counts.wait_max_ms / 1000)
            for outcome in totals:
                window.add_metric([*labels, name, outcome], getattr(w.counts, outcome))
        for outcome, family in totals.items():
            family.add_metric(labels, getattr(q.totals, outcome))
        wait_total.add_metric(labels, q.totals.wait_sum_ms / 1000)
        waiting.add_metric(labels, q.waiting)
        oldest.add_metric(labels, q.oldest_wait_s)
        risk.add_metric(labels, q.at_risk)
        if q.estimated_wait_s is not None:
            ewt.add_metric(labels, q.estimated_wait_s)
        ready.add_metric(labels, q.agents_ready)
    for d in snap.domains:
        for state, n in sorted(d.agents.items()):
            agents.add_metric([d.domain, state], n)
        if d.occupancy is not None:
            occupancy.add_metric([d.domain], d.occupancy)
    return [sl, objective, target, asa, wmax, window, *totals.values(), wait_total, waiting,
            oldest, risk, ewt, ready, agents, occupancy, *rating_families(snap)]


def rating_families(snap: Snapshot) -> list[Metric]:
    """The merchant service rating per domain (router/sla/rating.py, docs/METRICS.md)."""
    score = GaugeMetricFamily(
        "peakroute_domain_rating_score", "The domain's service rating, 0-100, over "
        "PEAKROUTE_RATING_WINDOW (docs/METRICS.md); absent while unrated.", labels=["domain"])
    tier = GaugeMetricFamily(
        "peakroute_domain_rating_tier", "1 for the domain's tier (PEAKROUTE_RATING_TIERS; "
        "unrated: too few contacts in the window).", labels=["domain", "tier"])
    part = GaugeMetricFamily(
        "peakroute_domain_rating_component_ratio", "A component of the rating, 0-1 "
        "(service_level, within_target, answer_speed, retention, bot_containment); absent "
        "while undefined.", labels=["domain", "component"])
    for r in snap.ratings:
        if r.score is not None:
            score.add_metric([r.domain], r.score)
        tier.add_metric([r.domain, r.tier], 1)
        for name, value in r.components.items():
            if value is not None:
                part.add_metric([r.domain, name], value)
    return [score, tier, part]


LAG = LagCollector()
CLUSTER = ClusterCollector()
REGISTRY.register(LAG)
REGISTRY.register(CLUSTER)


def exposition() -> bytes:
    """The Prometheus text exposition of this worker's metrics."""
    return generate_latest(REGISTRY)
