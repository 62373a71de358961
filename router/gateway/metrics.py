"""The gateway's Prometheus metrics (same registry as the router's; bounded labels only)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from router.metrics import REGISTRY

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
