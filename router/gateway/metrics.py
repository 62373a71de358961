"""The gateway's Prometheus metrics, in a registry of its own (a gateway process serves them
on its /metrics; a router worker's exposition does not carry them). Bounded labels only."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
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


def exposition() -> bytes:
    return generate_latest(REGISTRY)


_SENT: dict[str, Counter] = {}  # frame type -> its labelled child (labels() costs per call)


def sent(frame_type: str) -> None:
    """Count one frame pushed to a client."""
    child = _SENT.get(frame_type)
    if child is None:
        child = _SENT[frame_type] = FRAMES_OUT.labels(frame_type)
    child.inc()
