"""load_tests.banking77_dev: development splits of a training split (pure logic)."""

from __future__ import annotations

from load_tests.banking77_dev import dev_split
from router.bot.scoring import OOS
from router.bot.trainer import Labelled
from router.events import Language


def rows() -> list[Labelled]:
    return [Labelled(f"question {k} about {intent}", intent, Language.EN)
            for intent in (f"intent{i}" for i in range(8)) for k in range(10)]


def test_a_quarter_of_the_intents_is_unseen_and_a_fifth_of_the_questions_tested() -> None:
    fit, test = dev_split(rows(), 0)
    assert len(test) == 16  # 2 of each intent's 10 questions
    unseen = {r.intent for r in rows()} - {r.intent for r in fit}
    assert len(unseen) == 2
    assert sum(r.intent == OOS for r in test) == 4
    assert {r.text for r in fit}.isdisjoint({r.text for r in test})
    assert len(fit) == 6 * 8  # the seen intents' other questions


def test_splits_differ_by_seed_and_repeat_for_one() -> None:
    assert dev_split(rows(), 1) == dev_split(rows(), 1)
    assert dev_split(rows(), 0) != dev_split(rows(), 1)
