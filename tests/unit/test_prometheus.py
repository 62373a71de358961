"""deploy/prometheus: the rules load (`promtool check rules`), the alert unit tests pass
(`promtool test rules`), and every series a rule reads is one the code exports."""

from __future__ import annotations

import re
import subprocess

import yaml

from tests.unit._exposition import ROOT, exported_names, exposition, promtool

RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
RULE_TESTS = sorted((ROOT / "deploy" / "prometheus" / "tests").glob("*.yml"))
SERIES = re.compile(r"\b(peakroute_[a-z0-9_]+|peakroute:[a-z0-9_:]+)")


def test_promtool_accepts_the_rules() -> None:
    proc = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_alert_unit_tests_pass() -> None:
    assert RULE_TESTS
    proc = subprocess.run([promtool(), "test", "rules", *map(str, RULE_TESTS)],
                          capture_output=True, text=True, check=False, cwd=RULES.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_the_issue_asks_for_exists() -> None:
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"]
              for r in g["rules"] if "alert" in r}
    assert {"PeakrouteSLABurnCritical", "PeakrouteSLABurnHigh", "PeakrouteSLABurnSlow",
            "PeakrouteOldestWaitAboveTarget", "PeakrouteAtRiskGrowing",
            "PeakrouteBotContainmentDrop", "PeakrouteConsumerLagGrowing",
            "PeakrouteDeadletterRate", "PeakrouteNoAgentReady"} <= alerts


def test_rules_read_only_series_the_code_exports_or_records() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    recorded = {r["record"] for g in groups for r in g["rules"] if "record" in r}
    exported = exported_names()
    for g in groups:
        for rule in g["rules"]:
            for name in SERIES.findall(rule["expr"]):
                assert name in exported or name in recorded, (rule.get("alert") or
                                                              rule.get("record"), name)


def test_promtool_accepts_the_full_exposition() -> None:
    """The exposition with every SLA family filled (the demo's is checked in integration)."""
    proc = subprocess.run([promtool(), "check", "metrics"], input=exposition(),
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_labels_are_bounded_never_ids() -> None:
    allowed = {"domain", "queue", "window", "outcome", "state", "topic", "reason", "stage",
               "type", "kind", "action", "intent", "language", "result", "le",
               "tier", "component",  # rating: tiers from settings, five components
               "side", "error"}  # clamped requests: future, too_old; Kafka error classes
    for line in exposition().splitlines():
        if line.startswith("#") or "{" not in line:
            continue
        labels = set(re.findall(r'([a-z_]+)="', line.split("}", 1)[0]))
        assert labels <= allowed, line
