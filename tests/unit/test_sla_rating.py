"""The merchant service rating (router/sla/rating.py) on hand-computed cases; the worked example
of docs/METRICS.md is the first."""

from __future__ import annotations

import pytest

from router.errors import SettingsError
from router.settings import Settings
from router.sla.rating import (
    UNRATED,
    components,
    parse_tiers,
    ranked,
    rate,
    rate_figures,
    tier_of,
)
from router.sla.snapshot import DomainFigures, QueueFigures, WindowFigures
from router.sla.windows import WINDOW_NAMES, Counts

TIERS = parse_tiers("gold=85,silver=70,bronze=55,basic=0")
FORMULA = "short_abandons_excluded"
# The METRICS.md minute: 100 answered, 80 within 30 s, 20 left (5 within 5 s), waits 500 s.
EXAMPLE = Counts(offered=125, answered=100, answered_within_target=80, abandoned=20,
                 short_abandoned=5, wait_sum_ms=500_000)


def test_the_worked_example() -> None:
    values = components([(EXAMPLE, 30.0)], 0.6, 0.8, FORMULA)
    assert values["service_level"] == pytest.approx((80 / 115) / 0.8)  # 0.8696
    assert values["within_target"] == pytest.approx(0.8)
    assert values["answer_speed"] == pytest.approx(1 - 5 / 30)  # ASA 5 s of 30 s
    assert values["retention"] == pytest.approx(1 - 15 / 115)  # 0.8696
    assert values["bot_containment"] == 0.6
    r = rate("shop-1", "today", [(EXAMPLE, 30.0)], 0.6, 0.8, FORMULA, TIERS, 20)
    # 100 x (0.35 x 0.8696 + 0.15 x 0.8 + 0.20 x 0.8333 + 0.20 x 0.8696 + 0.10 x 0.6) = 82.5
    assert r.score == 82.5
    assert r.tier == "silver"
    assert r.contacts == 120


def test_a_queue_above_its_objective_scores_full_marks_for_it() -> None:
    c = Counts(answered=50, answered_within_target=50, wait_sum_ms=0)
    r = rate("d", "1h", [(c, 30.0)], 1.0, 0.8, FORMULA, TIERS, 20)
    assert r.components["service_level"] == 1.0  # 100 % / 80 %, capped
    assert r.score == 100.0
    assert r.tier == "gold"


def test_answer_speed_weighs_each_wait_by_its_own_queues_target() -> None:
    fast_target = Counts(answered=50, answered_within_target=50, wait_sum_ms=100_000)  # 2 s of 10
    slow_target = Counts(answered=50, answered_within_target=50, wait_sum_ms=300_000)  # 6 s of 30
    values = components([(fast_target, 10.0), (slow_target, 30.0)], None, 0.8, FORMULA)
    assert values["answer_speed"] == pytest.approx(1 - (10 + 10) / 100)  # 0.8
    slow = components([(Counts(answered=10, wait_sum_ms=600_000), 30.0)], None, 0.8, FORMULA)
    assert slow["answer_speed"] == 0.0  # ASA 60 s: twice the target, floored at 0


def test_undefined_components_leave_the_weights_of_the_others() -> None:
    # nothing arrived at the bot (escalations only): four components, weights 0.9 in all
    r = rate("d", "1h", [(EXAMPLE, 30.0)], None, 0.8, FORMULA, TIERS, 20)
    assert r.components["bot_containment"] is None
    expected = (0.35 * (80 / 115) / 0.8 + 0.15 * 0.8 + 0.20 * (1 - 5 / 30)
                + 0.20 * (1 - 15 / 115)) / 0.9
    assert r.score == round(100 * expected, 1) == 85.0  # 0.7649 / 0.9
    assert r.tier == "gold"  # 85 reaches gold


def test_too_few_contacts_is_unrated() -> None:
    c = Counts(answered=19, answered_within_target=19)
    r = rate("d", "1h", [(c, 30.0)], 0.5, 0.8, FORMULA, TIERS, 20)
    assert (r.score, r.tier, r.contacts) == (None, UNRATED, 19)
    assert rate("d", "1h", [(c, 30.0)], 0.5, 0.8, FORMULA, TIERS, 19).tier == "gold"


def test_tiers_take_the_first_threshold_reached() -> None:
    assert [tier_of(s, TIERS) for s in (100, 85, 84.9, 70, 55, 54.9, 0)] == [
        "gold", "gold", "silver", "silver", "bronze", "basic", "basic"]
    assert tier_of(40, parse_tiers("top=90,ok=50")) == "none"


@pytest.mark.parametrize("text", ["", "gold", "gold=x", "gold=120", "b=50,a=60", "a=5,a=1",
                                  "unrated=10", "two words=5"])
def test_bad_tier_settings_are_refused(text: str) -> None:
    with pytest.raises(SettingsError, match="PEAKROUTE_RATING_TIERS"):
        parse_tiers(text)
    with pytest.raises(SettingsError):
        Settings.from_env({"PEAKROUTE_RATING_TIERS": text})


def test_ranking_puts_unrated_last() -> None:
    a = rate("a", "1h", [(EXAMPLE, 30.0)], 0.6, 0.8, FORMULA, TIERS, 20)
    b = rate("b", "1h", [(Counts(answered=5), 30.0)], 0.6, 0.8, FORMULA, TIERS, 20)
    c = rate("c", "1h", [(Counts(answered=50, answered_within_target=50), 30.0)], 1.0, 0.8,
             FORMULA, TIERS, 20)
    assert [r.domain for r in ranked([a, b, c])] == ["c", "a", "b"]


def test_a_snapshot_domain_is_rated_over_the_settings_window() -> None:
    empty = WindowFigures(Counts(), None, None)
    windows = {w: empty for w in WINDOW_NAMES} | {"1h": WindowFigures(EXAMPLE, 0.7, 5.0)}
    q = QueueFigures("shop-1", "refunds", 30.0, windows, EXAMPLE, 0, 0, 0.0, 0, 1, None)
    d = DomainFigures("shop-1", {"ready": 1}, 0.5, {"arrived": 10, "contained": 6})
    assert rate_figures(d, [q], Settings(rating_window="1h")).score == 82.5
    assert rate_figures(d, [q], Settings(rating_window="today")).tier == UNRATED
    with pytest.raises(SettingsError, match="PEAKROUTE_RATING_WINDOW"):
        Settings.from_env({"PEAKROUTE_RATING_WINDOW": "2h"})
