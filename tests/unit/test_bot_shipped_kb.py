"""The shipped knowledge base (router/bot/kb/default.yaml) and its model on the test sets
tests/data/bot_test_v3.csv and bot_blind_v4.csv, written blind and never trained on; its
threshold is the one the trainer chose on its examples (docs/BOT.md)."""

from __future__ import annotations

import csv
import functools

import pytest

from router.bot.kb import Message, Rule
from router.bot.scoring import OOS, Outcome, Scores, score
from router.bot.text import normalize
from router.bot.trainer import EvalReport, evaluate, outcomes, read_labelled
from router.events import Language

from ._bot import DATA, shipped, shipped_model
from ._near import MAX_JACCARD, max_similarity

TEST_SET = DATA / "bot_test_v3.csv"
ROUTING_QUEUES = {"presale", "orders", "refunds", "payment", "security", "complaints",
                  "general"}
MAX_FALSE_CONTAINMENT = 0.05
TARGET_CONTAINMENT = 0.50  # issue 5's goal, with false containment <= 5 %, per language
MIN_EXAMPLES = 35  # per intent and language (the issue asks for 15)


@functools.cache
def report() -> EvalReport:
    return evaluate(shipped_model(), read_labelled(TEST_SET), shipped(), shipped_model().threshold)


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


def test_the_kb_records_the_threshold_the_trainer_chose_for_its_own_model() -> None:
    assert shipped().threshold is not None
    assert shipped_model().threshold == shipped().threshold
    assert shipped_model().manifest.validation == {"threshold_from": "knowledge base"}
    assert shipped_model().manifest.neighbour_power == shipped().neighbour_power
    assert shipped_model().manifest.coverage_power == shipped().coverage_power
    assert shipped_model().manifest.language_thresholds == shipped().language_thresholds


def test_the_test_set_has_both_languages_and_out_of_scope_questions() -> None:
    r = report()
    assert set(r.by_language) == {"zh", "en"}
    assert all(s.out_of_scope >= 50 for s in r.by_language.values())


def test_the_test_set_was_not_trained_on() -> None:
    def key(text: str) -> str:  # case, width and spacing aside ("shou dao" = "shoudao")
        return normalize(text).replace(" ", "")

    known = {key(text) for text, _ in shipped().examples()}
    assert not [row.text for row in read_labelled(TEST_SET) if key(row.text) in known]


@pytest.mark.parametrize("language", ["zh", "en"])
def test_false_containment_stays_within_5_percent_per_language(language: str) -> None:
    assert per_language()[language].false_containment <= MAX_FALSE_CONTAINMENT


@pytest.mark.parametrize("language", ["zh", "en"])
def test_accuracy_and_out_of_scope_recall_do_not_regress(language: str) -> None:
    s = per_language()[language]
    assert s.accuracy >= 0.85
    assert s.oos_recall >= 0.90


@pytest.mark.parametrize("language", ["zh", "en"])
def test_containment_reaches_50_percent_with_false_containment_within_5_percent(
        language: str) -> None:
    s = per_language()[language]
    assert s.false_containment <= MAX_FALSE_CONTAINMENT
    assert s.containment >= TARGET_CONTAINMENT


# --- the blind set v4 (issue 17): written blind to the knowledge base, never trained on -----

BLIND_SET = DATA / "bot_blind_v4.csv"
MUST_ESCALATE = (DATA / "bot_must_escalate.csv", DATA / "bot_must_escalate_blind.csv")
CLOSABLE_CLOSED_RIGHT = 0.85  # of the questions whose intent the bot may close
MAX_FALSE_CONTAINMENT_OF_ALL = 0.02


@functools.cache
def blind() -> list[Outcome]:
    return outcomes(shipped_model(), read_labelled(BLIND_SET), shipped())


def closed_right_of_closable(rows: list[Outcome], threshold: float) -> float:
    closable = [o for o in rows if o.label != OOS and shipped().intents[o.label].containable]
    return sum(o.closed(threshold) and o.predicted == o.label for o in closable) / len(closable)


@pytest.mark.parametrize("language", ["zh", "en"])
def test_the_blind_set_has_200_everyday_questions_per_language(language: str) -> None:
    rows = [o for o in blind() if o.language.value == language]
    assert len(rows) >= 200
    assert {o.label for o in rows} - {OOS} <= set(shipped().intents)


@pytest.mark.parametrize("language", ["zh", "en"])
def test_the_bot_closes_85_percent_of_closable_blind_questions_at_2_percent_false_containment(
        language: str) -> None:
    rows = [o for o in blind() if o.language.value == language]
    threshold = shipped_model().threshold
    assert closed_right_of_closable(rows, threshold) >= CLOSABLE_CLOSED_RIGHT
    assert score(rows, threshold).false_containment_of_all <= MAX_FALSE_CONTAINMENT_OF_ALL


def test_no_test_question_nearly_duplicates_a_training_example() -> None:
    """The blind sets were written without reading the knowledge base; a question too close
    to an example (character pairs, Jaccard) would measure memory, not understanding."""
    kb = shipped()
    examples = [t for t, _ in kb.examples()] + [t for t, _ in kb.handoff_examples()]
    questions = [r.text for r in read_labelled(BLIND_SET)]
    for path in MUST_ESCALATE:
        with path.open(encoding="utf-8") as f:
            questions += [row["text"] for row in csv.DictReader(f)]
    similarity = max_similarity(questions, examples)
    too_close = sum(s >= MAX_JACCARD for s in similarity)
    assert too_close == 0, f"{too_close} test questions nearly duplicate a training example"


def test_the_near_duplicate_check_finds_a_reworded_example() -> None:
    similarity = max_similarity(["我的快递到哪了呀", "where is my parcel now", "发票怎么开"],
                                ["我的快递到哪了", "where is my parcel", "今天天气怎么样"])
    assert similarity[0] >= MAX_JACCARD
    assert similarity[1] >= MAX_JACCARD
    assert similarity[2] < 0.2
