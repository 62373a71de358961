"""The routing policy file: the shipped default loads; every mistake is named with its fix."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from router.errors import PolicyError
from router.routing.config import (
    AgentOutcome,
    Strategy,
    load_policy,
    parse_policy,
    policy_from_settings,
)
from router.settings import Settings

MINIMAL = """
domains:
  "*":
    queues:
      refunds: {skills: {refunds: 1}}
"""


def test_the_shipped_policy_covers_an_e_commerce_operation() -> None:
    policy = load_policy()
    domain = policy.for_domain("any-merchant")
    assert set(domain.queues) == {"presale", "orders", "refunds", "payment", "security",
                                  "complaints", "general"}
    assert domain.default_queue == "general"
    assert domain.capacity == {"chat": 3, "voice": 1, "email": 5, "callback": 1}
    assert domain.on_no_answer == AgentOutcome.NOT_READY
    refunds = domain.queues["refunds"]
    assert refunds.normal.target_s == 30.0
    assert refunds.vip.target_s == 10.0
    assert [ring.after_s for ring in refunds.rings] == [0.0, 10.0, 20.0]
    assert domain.queues["general"].strategy == Strategy.LEAST_OCCUPIED
    assert domain.queues["presale"].strategy == Strategy.ROUND_ROBIN
    assert domain.queues["security"].normal.target_s == 45.0
    assert len(policy.digest) == 16


def test_settings_supply_the_target_and_offer_timeout_the_file_leaves_out() -> None:
    policy = policy_from_settings(Settings(sla_target_s=12, offer_timeout_s=4))
    domain = policy.for_domain("x")
    assert domain.offer_timeout_s == 4.0
    assert domain.queues["orders"].normal.target_s == 12.0
    assert domain.queues["security"].normal.target_s == 45.0  # the file's own value wins


def test_a_policy_file_is_read_from_the_path_in_settings(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(MINIMAL)
    policy = policy_from_settings(Settings(routing_policy=str(path)))
    assert policy.source == str(path)
    assert list(policy.for_domain("m1").queues) == ["refunds"]
    assert policy.for_domain("m1").default_queue == "refunds"


def test_named_domains_come_before_the_wildcard() -> None:
    policy = parse_policy(MINIMAL + """
  vip-shop:
    offer_timeout_s: 5
    queues:
      vip: {skills: {vip: 3}}
""", "p.yaml")
    assert list(policy.for_domain("vip-shop").queues) == ["vip"]
    assert policy.for_domain("vip-shop").offer_timeout_s == 5.0
    assert list(policy.for_domain("other").queues) == ["refunds"]


def test_a_domain_without_policy_is_an_error_naming_the_fix() -> None:
    policy = parse_policy("""
domains:
  shop-a:
    queues: {q: {skills: {a: 1}}}
""", "p.yaml")
    with pytest.raises(PolicyError, match=r"p\.yaml: no policy for routing domain 'shop-b'"):
        policy.for_domain("shop-b")


@pytest.mark.parametrize(("text", "message"), [
    ("domains: [", r"p\.yaml: not valid YAML at line 1"),
    ("[]", r"p\.yaml: top level: must be a mapping"),
    ("queues: {}", r"p\.yaml: queues: unknown key; fix: use one of defaults, domains, version"),
    ("version: 1", r"p\.yaml: domains: missing; fix: add domains"),
    ("version: 2\ndomains: {}", r"version: unsupported version 2; fix: write 1"),
    ("domains: {}", r"domains: no routing domain"),
    ('domains: {"*": {queues: {}}}', r"domains\.\*\.queues: no queue; fix: add at least one"),
    ('domains: {"*": {queues: {Bad Name: {skills: {a: 1}}}}}',
     r"domains\.\*\.queues\.Bad Name: 'Bad Name' is not a valid name"),
    ('domains: {"*": {queues: {q: {}}}}', r"queues\.q\.skills: missing; fix: add skills"),
    ('domains: {"*": {queues: {q: {skills: {}}}}}', r"queues\.q\.skills: no skill"),
    ('domains: {"*": {queues: {q: {skills: {a: 11}}}}}',
     r"queues\.q\.skills\.a: 11 is not a whole number in 1\.\.10; fix: write a whole number"),
    ('domains: {"*": {queues: {q: {skills: {a: 1}, sla: 3}}}}',
     r"queues\.q\.sla: unknown key; fix: use one of rings, service_target_s, skills"),
    ('domains: {"*": {queues: {q: {skills: {a: 1}, strategy: fastest}}}}',
     r"queues\.q\.strategy: 'fastest' is not allowed; fix: use one of longest_idle, "
     r"least_occupied, round_robin"),
    ('domains: {"*": {queues: {q: {skills: {a: 1}, service_target_s: 0}}}}',
     r"queues\.q\.service_target_s: 0 is not a number >= 1"),
    ('domains: {"*": {queues: {q: {skills: {a: 1}, weight: .nan}}}}',
     r"queues\.q\.weight: nan is not a number"),
    ('domains: {"*": {queues: {q: {skills: {a: 1}, rings: {after_s: 1}}}}}',
     r"queues\.q\.rings: must be a list"),
    ('domains: {"*": {queues: {q: {skills: {a: 1}, rings: [{after_s: 5}]}}}}',
     r"queues\.q\.rings\[0\]\.skills: missing"),
    ('domains: {"*": {queues: {q: {skills: {a: 1}, rings: [{after_s: 9, skills: {b: 1}}, '
     '{after_s: 5, skills: {c: 1}}]}}}}',
     r"rings\[1\]\.after_s: 5 s does not come after the previous ring \(9 s\); fix: list rings"),
    ('domains: {"*": {default_queue: x, queues: {q: {skills: {a: 1}}}}}',
     r"domains\.\*\.default_queue: 'x' is not a queue of this domain; fix: use one of \['q'\]"),
    ('domains: {"*": {capacity: {fax: 1}, queues: {q: {skills: {a: 1}}}}}',
     r"capacity: unknown channel 'fax'; fix: use chat, voice or email"),
    ('domains: {"*": {capacity: {chat: 99}, queues: {q: {skills: {a: 1}}}}}',
     r"capacity\.chat: 99 is not a whole number in 0\.\.32"),
    ('domains: {"*": {on_no_answer: logout, queues: {q: {skills: {a: 1}}}}}',
     r"on_no_answer: 'logout' is not allowed; fix: use one of ready, not_ready"),
    ('domains: {"*": {language_skill: "yes", queues: {q: {skills: {a: 1}}}}}',
     r"language_skill: 'yes' is not true or false"),
    ('domains: {"bad domain!": {queues: {q: {skills: {a: 1}}}}}',
     r"domains\.bad domain!: 'bad domain!' is not a valid name"),
    ('defaults: {vip: {target: 3}}\ndomains: {"*": {queues: {q: {skills: {a: 1}}}}}',
     r"queues\.q\.vip\.target: unknown key"),
])
def test_invalid_policies_name_the_file_the_key_and_the_fix(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_policy(text, "p.yaml")


def test_an_unreadable_policy_file_says_which_setting_to_fix(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"cannot read the routing policy .*"
                                          r"PEAKROUTE_ROUTING_POLICY"):
        load_policy(tmp_path / "missing.yaml")


def test_queue_settings_inherit_from_defaults_then_domain() -> None:
    policy = parse_policy("""
defaults: {weight: 2, strategy: round_robin, vip: {service_target_s: 5}}
domains:
  "*":
    weight: 3
    queues:
      a: {skills: {a: 1}}
      b: {skills: {b: 1}, weight: 4, strategy: least_occupied}
""", "p.yaml")
    queues = policy.for_domain("x").queues
    assert queues["a"].normal.weight == 3.0
    assert queues["a"].strategy == Strategy.ROUND_ROBIN
    assert queues["a"].vip.target_s == 5.0
    assert queues["a"].vip.weight == 3.0  # VIP weight defaults to the queue's weight
    assert queues["b"].normal.weight == 4.0
    assert queues["b"].strategy == Strategy.LEAST_OCCUPIED


def test_routing_check_prints_the_policy_and_an_agents_lanes(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    from router.cli import main

    monkeypatch.delenv("PEAKROUTE_ROUTING_POLICY", raising=False)
    assert main(["routing", "check", "--agent", "zh=2,refunds=3", "--json"]) == 0
    report = orjson.loads(capsys.readouterr().out)
    assert report["default_queue"] == "general"
    assert {q["name"] for q in report["queues"]} >= {"refunds", "security"}
    assert {"lane": "refunds.zh", "from_ring": 0, "rank": 3} in report["agent"]


def test_routing_check_of_a_bad_file_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    from router.cli import main

    bad = tmp_path / "p.yaml"
    bad.write_text('domains: {"*": {queues: {q: {skills: {a: 0}}}}}')
    assert main(["routing", "check", str(bad)]) == 2
    assert "queues.q.skills.a: 0 is not a whole number in 1..10" in capsys.readouterr().err
