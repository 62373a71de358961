"""load_tests.banking77_parts: the trainer's rule and the hindsight reading on kept parts
(pure logic, no fitting)."""

from __future__ import annotations

import numpy as np

from load_tests.banking77_parts import choose, hindsight, run, today
from router.bot.scoring import OOS


def parts(confidence: list[float], truth: list[str], weight: float = 1.0) -> dict[str, object]:
    """Questions all predicted as intent ``a`` with these confidences."""
    n = len(confidence)
    p = np.zeros((n, 2))
    p[:, 0] = 1.0  # top and margin 1: the confidence is closeness x coverage
    return {"classes": ["a", "b"], "p": p, "best": np.zeros(n, dtype=int),
            "closeness": np.array(confidence) ** 2, "coverage": np.ones(n),
            "truth": truth, "weight": np.array([weight if t == OOS else 1.0 for t in truth])}


def test_hindsight_is_the_most_right_within_the_target() -> None:
    confidence = np.array([0.9, 0.8, 0.7, 0.6])
    right = np.array([True, False, True, True])
    in_scope = np.array([True, True, True, True])
    assert hindsight(confidence, right, in_scope, 0.25) == 0.75  # one wrong of 4 allowed
    assert hindsight(confidence, right, in_scope, 0.0) == 0.25


def test_the_rule_takes_the_lowest_threshold_within_the_weighted_target() -> None:
    # Neighbours' power 0.5 turns closeness (confidence squared) back into the confidence.
    val = parts([0.9, 0.8, 0.7, 0.6, 0.5], ["a", "a", OOS, "a", OOS], weight=2.0)
    options = {"0.5 0.0": today()["0.5 0.0"]}
    name, threshold, met = choose(options, [val], target=0.2)
    # 0.6 closes 0.7's unseen question, weighted 2 of 5 = 0.4 > 0.2; 0.71 closes only right ones
    assert (name, met) == ("0.5 0.0", True)
    assert threshold == 0.71


def test_run_reads_the_test_at_the_choice_against_the_baseline() -> None:
    val = parts([0.9, 0.8, 0.7, 0.6], ["a", "a", OOS, "a"])
    test = parts([0.95, 0.75, 0.65], ["a", OOS, "a"])
    result = run({"val": [val], "test": test, "baseline": {"correct_containment": 0.25}},
                 {"0.5 0.0": today()["0.5 0.0"]}, target=0.0)
    assert result["threshold"] == 0.71
    assert result["correct_containment"] == 0.5  # 0.95 closed right of 2 in scope
    assert result["false_containment_of_all"] == 0.3333  # 0.75, unseen, closed
    assert result["gain_points"] == 25.0
