"""Prometheus metrics of a router worker (prometheus-client, base units, bounded labels only).

Labels never carry a contact, customer or agent id: stage, event type, reason, transition kind.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series: they double the exposition and nobody graphs them

REGISTRY = CollectorRegistry(auto_describe=True)

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
    "Wait from escalation to an agent's acceptance, for answered contacts.",
    buckets=(5, 10, 20, 30, 45, 60, 120), registry=REGISTRY,
)


def exposition() -> bytes:
    """The Prometheus text exposition of this worker's metrics."""
    return generate_latest(REGISTRY)
