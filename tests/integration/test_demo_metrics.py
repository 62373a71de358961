"""`peakroute demo --metrics-out FILE`: the final exposition passes `promtool check metrics` and
carries the SLA figures of the demo's queues (the lease holder's page)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.unit._exposition import promtool

pytestmark = pytest.mark.integration


def test_the_demo_exposition_passes_promtool_and_has_the_sla_figures(tmp_path: Path) -> None:
    out = tmp_path / "metrics.prom"
    env = {**os.environ, "PEAKROUTE_STATE_DIR": str(tmp_path / "state")}
    proc = subprocess.run(
        [sys.executable, "-m", "router.cli", "demo", "--duration", "6", "--rate", "20",
         "--agents", "8", "--drain", "20", "--bad-ratio", "0.1", "--metrics-out", str(out),
         "--report", str(tmp_path / "report.json")],
        env=env, capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    check = subprocess.run([promtool(), "check", "metrics"], stdin=out.open("rb"),
                           capture_output=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    families = {f.name: f for f in text_string_to_metric_families(out.read_text())}
    assert [s.value for s in families["peakroute_sla_exporter"].samples] == [1.0]
    # The queues' counters add up to the books (the same scripts count both).
    books = orjson.loads((tmp_path / "report.json").read_bytes())["detail"]

    def total(family: str) -> float:
        return sum(s.value for s in families[family].samples
                   if s.name.endswith("_total") and s.labels["domain"] == "shop-1")

    assert total("peakroute_contacts_answered") == books["answered"] >= 1
    assert total("peakroute_contacts_answered_within_target") == books["answered_within_target"]
    assert total("peakroute_contacts_offered") == books["escalated"]
    # (a customer who leaves while the bot's hand-off is in flight is in no queue)
    assert total("peakroute_contacts_abandoned") <= books["abandoned"]
    windows = {s.labels["window"] for s in families["peakroute_service_level_ratio"].samples}
    assert windows == {"5m", "15m", "1h", "today"}
    buckets = {s.labels["le"] for s in families["peakroute_answer_wait_seconds"].samples
               if s.name.endswith("_bucket")}
    assert buckets == {"5.0", "10.0", "20.0", "30.0", "45.0", "60.0", "120.0", "+Inf"}
    for name in ("peakroute_queue_waiting_contacts", "peakroute_queue_oldest_wait_seconds",
                 "peakroute_queue_at_risk_contacts", "peakroute_agents",
                 "peakroute_routing_decision_duration_seconds",
                 "peakroute_consumer_lag_records", "peakroute_deadletter"):
        assert families[name].samples, name
