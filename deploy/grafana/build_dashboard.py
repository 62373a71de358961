"""Writes peakroute.json, the Grafana dashboard for the night of the sale (docs/METRICS.md).

    python deploy/grafana/build_dashboard.py    # after changing a panel; commit both files

Top row: service level vs objective per queue, waiting, oldest wait, at risk; then bot
containment, throughput, routing latency; then agents by state, occupancy, lag, deadletters;
the queues now; Redis and Kafka errors by kind.
tests/unit/test_grafana_dashboard.py checks that every query uses series the code exports.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DS = {"type": "prometheus", "uid": "${datasource}"}
D = 'domain=~"$domain"'
DQ = 'domain=~"$domain", queue=~"$queue"'
_ids = iter(range(1, 100))


def target(expr: str, legend: str, ref: str = "A") -> dict[str, Any]:
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref}


def panel(kind: str, title: str, x: int, y: int, w: int, h: int, targets: list[dict[str, Any]],
          unit: str = "short", description: str = "", **extra: Any) -> dict[str, Any]:
    for i, t in enumerate(targets):
        t["refId"] = chr(ord("A") + i)
    p: dict[str, Any] = {
        "id": next(_ids), "type": kind, "title": title, "description": description,
        "datasource": DS, "gridPos": {"x": x, "y": y, "w": w, "h": h}, "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
    }
    p.update(extra)
    return p


def thresholds(*steps: tuple[str, float | None]) -> dict[str, Any]:
    return {"mode": "absolute",
            "steps": [{"color": color, "value": value} for color, value in steps]}


def stat(title: str, x: int, expr: str, unit: str, steps: dict[str, Any],
         description: str) -> dict[str, Any]:
    p = panel("stat", title, x, 0, 4, 8, [target(expr, title)], unit, description,
              options={"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "background",
                       "graphMode": "area"})
    p["fieldConfig"]["defaults"]["thresholds"] = steps
    return p


def build() -> dict[str, Any]:
    sl = panel(
        "timeseries", "Service level vs objective (5 min), per queue", 0, 0, 12, 8,
        [target(f'max by (domain, queue) (peakroute_service_level_ratio{{{DQ}, window="5m"}})',
                "{{domain}}/{{queue}}"),
         target(f"max(peakroute_service_level_objective_ratio{{{D}}})", "objective")],
        "percentunit", "Answered within target over the last 5 minutes (PEAKROUTE_SLA_FORMULA); "
        "the dashed line is the objective.",
        options={"legend": {"displayMode": "table", "placement": "right",
                            "calcs": ["lastNotNull", "min"]}})
    sl["fieldConfig"]["defaults"].update({"min": 0, "max": 1})
    sl["fieldConfig"]["overrides"] = [{
        "matcher": {"id": "byName", "options": "objective"},
        "properties": [{"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
                       {"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}}]}]
    top = [
        sl,
        stat("Waiting", 12, f"sum(peakroute_queue_waiting_contacts{{{DQ}}})", "short",
             thresholds(("green", None), ("orange", 50), ("red", 200)),
             "Escalated contacts not yet answered nor abandoned."),
        stat("Oldest wait", 16, f"max(peakroute_queue_oldest_wait_seconds{{{DQ}}})", "s",
             thresholds(("green", None), ("orange", 20), ("red", 30)),
             "The longest current wait across the selected queues (target 30 s)."),
        stat("At risk", 20, f"sum(peakroute_queue_at_risk_contacts{{{DQ}}})", "short",
             thresholds(("green", None), ("orange", 1), ("red", 20)),
             "Contacts that waited past 2/3 of their target."),
    ]
    second = [
        panel("timeseries", "Bot containment", 0, 8, 8, 8,
              [target("peakroute:bot_containment:ratio_rate15m", "15 min (not handed off)"),
               target("1 - sum(rate(peakroute_bot_escalations_total[5m])) / "
                      "sum(rate(peakroute_bot_contacts_total[5m]))", "5 min (not handed off)"),
               target("sum(rate(peakroute_bot_contained_total[5m])) / "
                      "sum(rate(peakroute_bot_contacts_total[5m]))", "5 min (closed by the bot)")],
              "percentunit", "Share of new contacts the bot did not hand to a person."),
        panel("timeseries", "Throughput per queue (contacts/s)", 8, 8, 8, 8,
              [target(f"sum by (queue) (rate(peakroute_contacts_offered_total{{{DQ}}}[1m]))",
                      "{{queue}} in"),
               target(f"sum by (queue) (rate(peakroute_contacts_answered_total{{{DQ}}}[1m]))",
                      "{{queue}} answered"),
               target(f"sum by (queue) (rate(peakroute_contacts_abandoned_total{{{DQ}}}[1m]))",
                      "{{queue}} abandoned")],
              "reqps", "Contacts entering each queue, answered and abandoned, per second."),
        panel("timeseries", "Routing decision latency", 16, 8, 8, 8,
              [target("histogram_quantile(0.5, sum by (le) "
                      "(rate(peakroute_routing_decision_duration_seconds_bucket[1m])))", "p50"),
               target("histogram_quantile(0.99, sum by (le) "
                      "(rate(peakroute_routing_decision_duration_seconds_bucket[1m])))", "p99"),
               target("histogram_quantile(0.9, sum by (le) "
                      "(rate(peakroute_answer_wait_seconds_bucket[5m])))",
                      "answer wait p90")],
              "s", "Time to decide a batch of routing events in Redis; and the 90th "
              "percentile of answer waits."),
    ]
    third = [
        panel("timeseries", "Agents by state", 0, 16, 6, 8,
              [target(f"sum by (state) (peakroute_agents{{{D}}})", "{{state}}")], "short",
              "Logged-in agents, ready or not ready.",
              fieldConfig={"defaults": {"unit": "short",
                                        "custom": {"stacking": {"mode": "normal"}}},
                           "overrides": []}),
        panel("timeseries", "Occupancy and ready agents per queue", 6, 16, 6, 8,
              [target(f"max by (domain) (peakroute_agent_occupancy_ratio{{{D}}})",
                      "occupancy {{domain}}"),
               target(f"max by (queue) (peakroute_queue_agents_ready{{{DQ}}})",
                      "ready for {{queue}}")],
              "short", "Slots in use over slots in use plus free slots of ready agents (0-1); "
              "ready agents who serve each queue."),
        panel("timeseries", "Consumer lag per topic", 12, 16, 6, 8,
              [target("sum by (topic) (peakroute_consumer_lag_records)", "{{topic}}")],
              "short", "Records not yet processed, summed over workers."),
        panel("timeseries", "Deadletters per reason", 18, 16, 6, 8,
              [target("sum by (topic, reason) (rate(peakroute_deadletter_total[5m]))",
                      "{{topic}} {{reason}}")],
              "reqps", "Records sent to the deadletter topic per second."),
        panel("table", "Queues now", 0, 24, 24, 8,
              [target(f'max by (domain, queue) (peakroute_service_level_ratio{{{DQ}, '
                      f'window="today"}})', "SL today"),
               target(f"max by (domain, queue) (peakroute_queue_waiting_contacts{{{DQ}}})",
                      "waiting"),
               target(f"max by (domain, queue) "
                      f"(peakroute_queue_estimated_wait_seconds{{{DQ}}})", "est. wait"),
               target(f"max by (domain, queue) "
                      f"(peakroute_answer_wait_average_seconds{{{DQ}, window=\"15m\"}})",
                      "ASA 15m")],
              "short", "Per queue: service level today, waiting, estimated wait of a new "
              "contact, average speed of answer over 15 minutes.",
              transformations=[{"id": "merge"}]),
    ]
    for t in third[-1]["targets"]:
        t.update({"instant": True, "format": "table"})
    fourth = [
        panel("timeseries", "Redis and Kafka errors by kind (retried)", 0, 32, 12, 8,
              [target("sum by (kind) (rate(peakroute_redis_errors_total[1m]))", "redis {{kind}}"),
               target("sum by (error) (rate(peakroute_kafka_errors_total[1m]))",
                      "kafka {{error}}")],
              "reqps", "Failures of a dependency the workers retried, per second: Redis by "
              "kind (oom, readonly, busy, loading, timeout, connection, cluster codes), Kafka by "
              "error class. Nothing of a retried batch is committed or dead-lettered, but its "
              "partitions wait (alert PeakrouteRedisRefusing; docs/OPERATIONS.md)."),
    ]
    return {
        "uid": "peakroute-sale-night", "title": "peakroute: the night of the sale",
        "description": "Service level against the answer target, queues, bot, routing, agents "
                       "and Kafka (docs/METRICS.md).",
        "tags": ["peakroute"], "timezone": "browser", "refresh": "10s", "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"}, "editable": True, "graphTooltip": 1,
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus",
             "label": "Prometheus"},
            {"name": "domain", "type": "query", "datasource": DS, "label": "Domain",
             "query": "label_values(peakroute_queue_waiting_contacts, domain)",
             "refresh": 2, "multi": True, "includeAll": True, "current": {}},
            {"name": "queue", "type": "query", "datasource": DS, "label": "Queue",
             "query": 'label_values(peakroute_queue_waiting_contacts{domain=~"$domain"}, queue)',
             "refresh": 2, "multi": True, "includeAll": True, "current": {}},
        ]},
        "panels": top + second + third + fourth,
    }


if __name__ == "__main__":
    out = Path(__file__).with_name("peakroute.json")
    out.write_text(json.dumps(build(), indent=2) + "\n")
    print(f"wrote {out}")
