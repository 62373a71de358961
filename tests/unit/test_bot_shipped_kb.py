"""The shipped knowledge base (router/bot/kb/default.yaml) and its model on the held-out set
tests/data/bot_heldout.csv, written so that the model was never trained on it."""

from __future__ import annotations

import functools

import pytest

from router.bot.classifier import IntentClassifier
from router.bot.kb import KnowledgeBase, Message, Rule, default_kb_path, load_kb
from router.bot.scoring import Scores
from router.bot.trainer import EvalReport, evaluate, read_labelled, train_model
from router.events import Language

from ._bot import DATA

HELDOUT = DATA / "bot_heldout.csv"
ROUTING_QUEUES = {"presale", "orders", "refunds", "payment", "security", "complaints",
                  "general"}
MAX_FALSE_CONTAINMENT = 0.05
TARGET_CONTAINMENT = 0.50  # the goal; not reached yet (see the xfail below)
MIN_EXAMPLES = 40  # per intent and language


@functools.cache
def shipped() -> KnowledgeBase:
    return load_kb(default_kb_path())


@functools.cache
def shipped_model() -> IntentClassifier:
    return train_model(shipped(), (), MAX_FALSE_CONTAINMENT)


@functools.cache
def report() -> EvalReport:
    return evaluate(shipped_model(), read_labelled(HELDOUT), shipped(), shipped_model().threshold)


def per_language() -> dict[str, Scores]:
    return report().by_language


def test_the_shipped_kb_is_valid_and_bilingual() -> None:
    kb = shipped()
    assert kb.languages == (Language.ZH, Language.EN)
    assert len(kb.intents) >= 40
    assert all(kb.phrases(rule) for rule in Rule)
    assert all(kb.message(m, lang) for m in Message for lang in Language)


def test_every_intent_goes_to_a_queue_of_the_routing_policy() -> None:
    assert {i.queue for i in shipped().intents.values()} <= ROUTING_QUEUES
    assert {r.queue for r in shipped().routes.values()} <= ROUTING_QUEUES


def test_every_intent_has_enough_examples_in_both_languages() -> None:
    for intent in shipped().intents.values():
        assert all(len(intent.examples[lang]) >= MIN_EXAMPLES for lang in Language), intent.name


def test_the_kb_has_out_of_scope_examples_in_both_languages() -> None:
    assert all(len(shipped().out_of_scope[lang]) >= MIN_EXAMPLES for lang in Language)
    assert "oos" not in shipped_model().intents


def test_the_kb_sets_the_threshold_of_its_own_model() -> None:
    assert shipped().threshold is not None
    assert shipped_model().threshold == shipped().threshold
    assert shipped_model().manifest.validation == {"threshold_from": "knowledge base"}


def test_the_heldout_set_has_both_languages_and_out_of_scope_questions() -> None:
    r = report()
    assert set(r.by_language) == {"zh", "en"}
    assert r.overall.out_of_scope >= 50


@pytest.mark.parametrize("language", ["zh", "en"])
def test_false_containment_stays_within_5_percent_per_language(language: str) -> None:
    assert per_language()[language].false_containment <= MAX_FALSE_CONTAINMENT


@pytest.mark.parametrize("language", ["zh", "en"])
def test_accuracy_and_out_of_scope_recall_do_not_regress(language: str) -> None:
    s = per_language()[language]
    assert s.accuracy >= 0.80
    assert s.oos_recall >= 0.85
    assert s.containment >= 0.40


@pytest.mark.parametrize("language", [
    "zh",
    pytest.param("en", marks=pytest.mark.xfail(strict=True, reason=(
        "issue 5's goal, not reached in English: with ~58 examples per intent and language, "
        "41 intents and a margin-based confidence, the threshold chosen on the even rows "
        "closes ~47 % of the English questions there at <= 5 % false containment "
        "(docs/BOT.md, Figures)"))),
])
def test_containment_reaches_50_percent_with_false_containment_within_5_percent(
        language: str) -> None:
    s = per_language()[language]
    assert s.false_containment <= MAX_FALSE_CONTAINMENT
    assert s.containment >= TARGET_CONTAINMENT
