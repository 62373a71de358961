"""The gateway's Prometheus metrics, in a registry of its own (a gateway process serves them
on its /metrics; a router worker's exposition does not carry them). Bounded labels only."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

disable_created_metrics()  # type: ignore[no-untyped-call]  # as router.metrics: no *_created
REGISTRY = CollectorRegistry(auto_describe=True)

CONNECTIONS = Gauge(
    "peakroute_gateway_connections", "Open WebSocket connections with a valid hello, by role.",
    ["role"], registry=REGISTRY,
)
FRAMES_IN = Counter(
    "peakroute_gateway_frames_received_total", "Client frames accepted, by frame type.",
    ["type"], registry=REGISTRY,
)
FRAMES_OUT = Counter(
    "peakroute_gateway_frames_sent_total", "Frames pushed to clients, by frame type.",
    ["type"], registry=REGISTRY,
)
REFUSED = Counter(
    "peakroute_gateway_refused_frames_total",
    "Client frames refused (answered with an error frame or a close), by error code.",
    ["code"], registry=REGISTRY,
)
PUBLISHED = Counter(
    "peakroute_gateway_published_total", "Events the gateway published to agents.events, by type.",
    ["type"], registry=REGISTRY,
)

OFFER_DELAY = Histogram(
    "peakroute_gateway_offer_delay_seconds",
    "From an offer's event time (the router's, when it offered) to the gateway: read from "
    "Kafka (stage=fetched), and its frame queued for the agent's sockets (stage=queued).",
    ["stage"], registry=REGISTRY,
    buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0),
)
OFFER_FETCHED = OFFER_DELAY.labels("fetched")
OFFER_QUEUED = OFFER_DELAY.labels("queued")


def exposition() -> bytes:
    return generate_latest(REGISTRY)


_SENT: dict[str, Counter] = {}  # frame type -> its labelled child (labels() costs per call)


def sent(frame_type: str) -> None:
    """Count one frame pushed to a client."""
    child = _SENT.get(frame_type)
    if child is None:
        child = _SENT[frame_type] = FRAMES_OUT.labels(frame_type)
    child.inc()
