"""deploy/grafana: the dashboard is what its builder writes, has the layout the SREs asked for,
and every query uses series the code exports (or the Prometheus rules record)."""

from __future__ import annotations

import importlib.util
import json
import re

import yaml

from tests.unit._exposition import ROOT, exported_names

DASHBOARD = ROOT / "deploy" / "grafana" / "peakroute.json"
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
SERIES = re.compile(r"\b(peakroute_[a-z0-9_]+|peakroute:[a-z0-9_:]+)")


def _dashboard() -> dict:  # type: ignore[type-arg]
    return json.loads(DASHBOARD.read_text())


def test_the_committed_dashboard_is_what_the_builder_writes() -> None:
    spec = importlib.util.spec_from_file_location("build_dashboard",
                                                  DASHBOARD.with_name("build_dashboard.py"))
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.build() == _dashboard()


def test_every_query_uses_series_the_code_exports() -> None:
    exported = exported_names()
    recorded = {r["record"] for g in yaml.safe_load(RULES.read_text())["groups"]
                for r in g["rules"] if "record" in r}
    queries = [t["expr"] for p in _dashboard()["panels"] for t in p["targets"]]
    queries += [v["query"] for v in _dashboard()["templating"]["list"] if v["type"] == "query"]
    assert len(queries) > 20
    for q in queries:
        names = SERIES.findall(q)
        assert names, q
        for name in names:
            assert name in exported or name in recorded, (name, q)


def test_the_top_row_is_service_level_waiting_oldest_wait_and_at_risk() -> None:
    top = sorted((p for p in _dashboard()["panels"] if p["gridPos"]["y"] == 0),
                 key=lambda p: p["gridPos"]["x"])
    assert [p["title"] for p in top] == [
        "Service level vs objective (5 min), per queue", "Waiting", "Oldest wait", "At risk"]
    below = {p["title"] for p in _dashboard()["panels"] if p["gridPos"]["y"] > 0}
    assert {"Bot containment", "Throughput per queue (contacts/s)", "Routing decision latency",
            "Agents by state", "Consumer lag per topic", "Deadletters per reason"} <= below
    ids = [p["id"] for p in _dashboard()["panels"]]
    assert len(ids) == len(set(ids))
