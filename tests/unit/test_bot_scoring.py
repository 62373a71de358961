"""router.bot.scoring: the evaluation maths on hand-made outcomes."""

from __future__ import annotations

import pytest

from router.bot.scoring import (
    OOS,
    Outcome,
    best_at,
    per_intent,
    pick_threshold,
    score,
    sweep,
)
from router.events import Language


def o(label: str, predicted: str, confidence: float, containable: bool = True,
      ruled: bool = False) -> Outcome:
    return Outcome(label, predicted, confidence, containable, ruled, Language.EN)


# 10 questions: 7 in scope, 3 out of scope.
OUTCOMES = [
    o("a", "a", 0.9),  # closed right
    o("a", "a", 0.8),  # closed right
    o("b", "b", 0.95),  # closed right
    o("b", "a", 0.7),  # closed wrong
    o("c", "c", 0.9, containable=False),  # handed off (c needs a person)
    o("a", "a", 0.3),  # below threshold
    o("a", "a", 0.99, ruled=True),  # asked for a person
    o(OOS, "a", 0.85),  # out of scope answered: closed wrong
    o(OOS, "b", 0.2),  # out of scope detected
    o(OOS, OOS, 0.9),  # predicted as the oos class: detected
]


def test_containment_is_closed_over_all_questions() -> None:
    s = score(OUTCOMES, 0.5)
    assert s.closed == 5
    assert s.containment == pytest.approx(5 / 10)


def test_false_containment_is_wrong_closures_over_closures() -> None:
    s = score(OUTCOMES, 0.5)
    assert s.closed_wrongly == 2
    assert s.false_containment == pytest.approx(2 / 5)
    assert s.false_containment_of_all == pytest.approx(2 / 10)


def test_correct_containment_is_right_closures_over_in_scope_questions() -> None:
    assert score(OUTCOMES, 0.5).correct_containment == pytest.approx(3 / 7)


def test_accuracy_counts_the_top_intent_of_in_scope_questions_without_threshold() -> None:
    assert score(OUTCOMES, 0.5).accuracy == pytest.approx(6 / 7)
    assert score(OUTCOMES, 0.99).accuracy == score(OUTCOMES, 0.0).accuracy


def test_oos_recall_counts_oos_below_threshold_or_predicted_oos() -> None:
    assert score(OUTCOMES, 0.5).oos_recall == pytest.approx(2 / 3)
    assert score(OUTCOMES, 0.9).oos_recall == pytest.approx(1.0)


def test_counts_of_in_and_out_of_scope() -> None:
    s = score(OUTCOMES, 0.5)
    assert (s.n, s.in_scope, s.out_of_scope) == (10, 7, 3)


def test_nothing_closed_gives_zero_false_containment_not_a_division_error() -> None:
    s = score(OUTCOMES, 1.0)
    assert s.closed == 0
    assert s.false_containment == 0.0


def test_empty_outcomes_score_zero() -> None:
    s = score([], 0.5)
    assert (s.n, s.containment, s.accuracy, s.oos_recall) == (0, 0.0, 0.0, 0.0)


def test_a_ruled_or_uncontainable_question_is_never_closed() -> None:
    assert not o("a", "a", 1.0, ruled=True).closed(0.0)
    assert not o("a", "a", 1.0, containable=False).closed(0.0)
    assert not o(OOS, OOS, 1.0).closed(0.0)


def test_sweep_is_sorted_and_containment_never_rises_with_the_threshold() -> None:
    rows = sweep(OUTCOMES, [0.9, 0.1, 0.5, 0.5])
    assert [r.threshold for r in rows] == [0.1, 0.5, 0.9]
    assert rows[0].containment >= rows[1].containment >= rows[2].containment


def test_pick_threshold_takes_the_lowest_threshold_within_the_target_of_all_questions() -> None:
    # false containment of all 10 questions: 0.1 -> 3/10, 0.5 -> 2/10, 0.86 -> 0/10
    threshold, met = pick_threshold(OUTCOMES, 0.0, grid=[0.1, 0.5, 0.86, 0.91, 0.96])
    assert (threshold, met) == (0.86, True)
    threshold, met = pick_threshold(OUTCOMES, 0.2, grid=[0.1, 0.5, 0.86])
    assert (threshold, met) == (0.5, True)
    # of closures it would be 2/5 at 0.5: a target of 0.25 of all is met there, not of closed
    assert pick_threshold(OUTCOMES, 0.25, grid=[0.1, 0.5, 0.86]) == (0.5, True)


def test_pick_threshold_without_a_feasible_point_takes_the_lowest_false_containment() -> None:
    bad = [o(OOS, "a", 0.9), o(OOS, "a", 0.95), o("a", "a", 0.5)]
    # false containment of all: 0.1 -> 2/3, 0.92 -> 1/3
    threshold, met = pick_threshold(bad, 0.01, grid=[0.1, 0.92])
    assert not met
    assert threshold == 0.92


def test_per_intent_precision_and_recall_treat_low_confidence_as_oos() -> None:
    scores = per_intent(OUTCOMES, 0.5)
    a = scores["a"]
    # taken as "a": rows 1, 2, 4 (b->a), 8 (oos->a); ruled row 7 also "a" at 0.99
    assert a.predicted == 5
    assert a.support == 4
    assert a.precision == pytest.approx(3 / 5)
    assert a.recall == pytest.approx(3 / 4)
    assert scores[OOS].recall == pytest.approx(2 / 3)


def test_best_at_is_the_most_correct_containment_within_the_bound() -> None:
    # of all: 0.1 -> 3/10 wrong, 0.5 -> 2/10 and 0.75 -> 1/10 (3 right), 0.86 -> 0 (2 right)
    best = best_at(OUTCOMES, 0.2, grid=[0.1, 0.5, 0.75, 0.86])
    assert best is not None
    assert best.threshold == 0.5
    best = best_at(OUTCOMES, 0.1, grid=[0.1, 0.5, 0.75, 0.86])
    assert best is not None
    assert best.threshold == 0.75
    best = best_at(OUTCOMES, 0.0, grid=[0.1, 0.5, 0.75, 0.86])
    assert best is not None
    assert best.threshold == 0.86
    assert best_at([o(OOS, "a", 0.9)], 0.0, grid=[0.1]) is None
