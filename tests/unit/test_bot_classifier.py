"""router.bot.classifier on the small test knowledge base: train, predict, save, load."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import orjson
import pytest
import sklearn

from router.bot.classifier import (
    COVERAGE_POWERS,
    GATE_FILE,
    MANIFEST_FILE,
    MIN_GATE_EXAMPLES,
    MODEL_FILE,
    NEIGHBOUR_POWERS,
    NEIGHBOURS_FILE,
    IntentClassifier,
    Manifest,
    Scorer,
    build_model,
    check_compatible,
    confidences,
    scaled,
    top_and_confidence,
    train,
    word_coverage,
)
from router.bot.errors import ModelError
from router.bot.scoring import OOS
from router.bot.text import features_text

from ._bot import TARGET, small_kb, small_model


def test_it_predicts_its_own_examples_in_both_languages() -> None:
    kb = small_kb()
    texts, labels = zip(*kb.examples(), strict=True)
    predictions = small_model().predict_batch(list(texts))
    right = sum(p.intent == label for p, label in zip(predictions, labels, strict=True))
    assert right / len(labels) > 0.95


@pytest.mark.parametrize(("text", "intent"), [
    ("快递到哪里了", "logistics"), ("my parcel has not arrived", "logistics"),
    ("优惠券不能用", "coupon"), ("please refund me", "refund"),
])
def test_it_generalises_to_unseen_wordings(text: str, intent: str) -> None:
    assert small_model().predict_batch([text])[0].intent == intent


def test_digits_do_not_matter() -> None:
    a, b = small_model().predict_batch(["订单 123456 的快递到哪了", "订单 987 的快递到哪了"])
    assert a == b


def test_full_width_and_case_do_not_matter() -> None:
    wide = "ｗｈｅｒｅ ｉｓ ｍｙ ｐａｃｋａｇｅ"
    a, b = small_model().predict_batch(["WHERE IS MY PACKAGE", wide])
    assert a == b


def test_confidences_are_probabilities() -> None:
    for p in small_model().predict_batch(["hello", "快递", "", "🙂" * 50]):
        assert 0.0 <= p.confidence <= 1.0


def test_the_confidence_combines_the_top_probability_and_its_margin() -> None:
    best, confidence = top_and_confidence(np.array([[0.6, 0.3, 0.1], [0.4, 0.1, 0.5],
                                                    [0.9, 0.05, 0.05]]))
    assert best.tolist() == [0, 2, 0]
    assert confidence == pytest.approx([(0.6 * 0.3) ** 0.5, (0.5 * 0.1) ** 0.5,
                                        (0.9 * 0.85) ** 0.5])


def test_unknown_english_words_lower_the_confidence_chinese_is_not_checked() -> None:
    vocabulary = {"where": 0, "is": 1, "my": 2, "parcel": 3}
    coverage = word_coverage(["where is my parcel", "where is mount everest", "珠穆朗玛峰多高",
                              "0"], vocabulary)
    assert coverage.tolist() == [1.0, 0.5, 1.0, 1.0]


def test_predictions_use_the_same_confidence_as_validation() -> None:
    model = small_model()
    texts = ["my parcel has not arrived", "how tall is mount everest"]
    _, expected = confidences(model.model, [features_text(t) for t in texts], model.gate,
                              neighbours=model.neighbours,
                              neighbour_power=model.manifest.neighbour_power,
                              coverage_power=model.manifest.coverage_power)
    m = model.manifest  # English texts: scaled by the model's / English's own threshold
    expected = [scaled(c, m.threshold, m.language_thresholds.get("en", m.threshold))
                for c in expected.tolist()]
    assert [p.confidence for p in model.predict_batch(texts)] == pytest.approx(expected)


def test_an_empty_batch_gives_no_predictions() -> None:
    assert small_model().predict_batch([]) == []


def test_one_batch_equals_one_at_a_time() -> None:
    texts = ["快递到哪里了", "refund please", "发票"]
    batch = small_model().predict_batch(texts)
    assert batch == [small_model().predict_batch([t])[0] for t in texts]


def test_the_manifest_records_intents_containable_kb_and_threshold() -> None:
    m = small_model().manifest
    assert m.intents == tuple(sorted(small_kb().intents))
    assert m.containable["logistics"] is True
    assert m.containable["refund"] is False
    assert m.kb_digest == small_kb().digest
    assert m.sklearn_version == sklearn.__version__
    assert 0.0 <= m.threshold < 1.0
    assert m.target_false_containment == TARGET
    assert m.validation["method"] == "unseen intents"  # the small KB has no oos examples
    assert m.validation["splits"] == 4
    assert m.examples == len(small_kb().examples())


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    model = small_model()
    model.save(tmp_path / "m")
    loaded = IntentClassifier.load(tmp_path / "m")
    assert loaded.manifest == model.manifest
    texts = ["快递到哪里了", "refund please"]
    assert loaded.predict_batch(texts) == model.predict_batch(texts)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [MANIFEST_FILE, MODEL_FILE,
                                                                  NEIGHBOURS_FILE]


def test_save_replaces_an_existing_model_and_leaves_no_temporary_dirs(tmp_path: Path) -> None:
    small_model().save(tmp_path / "m")
    small_model().save(tmp_path / "m")
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_load_of_a_missing_dir_says_how_to_train(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="peakroute bot train"):
        IntentClassifier.load(tmp_path / "none")


def test_load_of_a_corrupt_manifest_says_to_retrain(tmp_path: Path) -> None:
    small_model().save(tmp_path / "m")
    (tmp_path / "m" / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(ModelError, match="not a valid model manifest"):
        IntentClassifier.load(tmp_path / "m")


def test_load_of_a_corrupt_model_file_says_to_retrain(tmp_path: Path) -> None:
    small_model().save(tmp_path / "m")
    (tmp_path / "m" / MODEL_FILE).write_bytes(b"garbage")
    with pytest.raises(ModelError, match="cannot be loaded"):
        IntentClassifier.load(tmp_path / "m")


def test_a_model_from_another_sklearn_major_version_is_refused(tmp_path: Path) -> None:
    small_model().save(tmp_path / "m")
    path = tmp_path / "m" / MANIFEST_FILE
    data = orjson.loads(path.read_bytes())
    data["sklearn_version"] = "0.24.2"
    path.write_bytes(orjson.dumps(data))
    with pytest.raises(ModelError, match=r"scikit-learn 0\.24\.2.*retrain"):
        IntentClassifier.load(tmp_path / "m")


def test_another_minor_version_is_accepted() -> None:
    major = sklearn.__version__.split(".")[0]
    check_compatible(replace(small_model().manifest, sklearn_version=f"{major}.0.0"), "m")


def test_another_model_format_is_refused() -> None:
    with pytest.raises(ModelError, match="format"):
        check_compatible(replace(small_model().manifest, format=99), "m")


def test_manifest_json_round_trips() -> None:
    m = small_model().manifest
    assert Manifest.from_json(m.to_json(), "x") == m


def test_training_needs_two_intents() -> None:
    with pytest.raises(ModelError, match="at least 2"):
        train([("a", "x"), ("b", "x"), ("c", OOS)], {"x": True}, target_false_containment=0.05)


def test_out_of_scope_rows_become_a_class_of_their_own() -> None:
    examples = [*small_kb().examples(),
                *[(t, OOS) for t in ("今天天气怎么样", "讲个笑话", "what is the weather",
                                     "tell me a joke", "who won the football", "股票会涨吗",
                                     "recommend a movie", "推荐一部电影")]]
    model = train(examples, {"logistics": True}, target_false_containment=0.05)
    assert OOS not in model.intents
    assert model.predict_batch(["今天天气怎么样啊"])[0].intent == OOS


def test_an_intent_with_one_example_still_trains_with_the_logistic_model_alone() -> None:
    model = build_model({"a": 1, "b": 5})
    assert [name for name, _ in model.named_steps["vote"].estimators] == ["logistic"]
    examples = [("where is my parcel", "a"), *[(f"refund number {i}", "b") for i in range(5)]]
    trained = train(examples, {"a": True, "b": False}, target_false_containment=0.05)
    assert trained.predict_batch(["refund"])[0].intent == "b"


NEAR_MISSES = [f"{brand} {q}" for brand in ("jd", "pinduoduo", "amazon", "ebay", "meituan")
               for q in ("where is my parcel", "parcel not arrived", "refund me please",
                         "my coupon does not work", "快递到哪了")]


def gated_model(near_misses: list[str]) -> IntentClassifier:
    examples = [*small_kb().examples(), *[(t, OOS) for t in near_misses]]
    return train(examples, {"logistics": True}, target_false_containment=0.05, threshold=0.3)


def test_enough_out_of_scope_examples_train_a_scope_gate_that_lowers_near_misses() -> None:
    gated = gated_model(NEAR_MISSES)
    assert gated.gate is not None
    texts = [features_text(t) for t in ("temu parcel not arrived", "my parcel has not arrived")]
    _, with_gate = confidences(gated.model, texts, gated.gate, neighbours=gated.neighbours)
    _, without = confidences(gated.model, texts, neighbours=gated.neighbours)
    assert with_gate[0] < without[0]  # a foreign shop's parcel: in scope less likely
    assert with_gate.tolist() == [p.confidence for p in gated.predict_batch(
        ["temu parcel not arrived", "my parcel has not arrived"])]


def test_few_out_of_scope_examples_train_no_scope_gate() -> None:
    assert gated_model(NEAR_MISSES[:MIN_GATE_EXAMPLES - 1]).gate is None
    assert small_model().gate is None


def test_the_scope_gate_is_saved_and_loaded_with_the_model(tmp_path: Path) -> None:
    gated = gated_model(NEAR_MISSES)
    gated.save(tmp_path / "m")
    assert (tmp_path / "m" / GATE_FILE).exists()
    loaded = IntentClassifier.load(tmp_path / "m")
    texts = ["jd 快递到哪了", "refund please"]
    assert loaded.predict_batch(texts) == gated.predict_batch(texts)
    small_model().save(tmp_path / "plain")
    assert not (tmp_path / "plain" / GATE_FILE).exists()
    assert IntentClassifier.load(tmp_path / "plain").gate is None


@pytest.mark.parametrize("near_misses", [[], NEAR_MISSES])
def test_the_scorer_gives_scikit_learns_own_numbers(near_misses: list[str]) -> None:
    model = gated_model(near_misses) if near_misses else small_model()
    scorer = Scorer.of(model.model, model.gate)
    assert scorer is not None
    texts = [features_text(t) for t in ("快递到哪里了", "refund please", "jd 快递", "", "?")]
    x = scorer.features(texts)
    assert np.array_equal(scorer.probabilities(x), model.model.predict_proba(texts))
    if model.gate is not None:
        features = model.model.named_steps["features"].transform(texts)
        assert np.allclose(scorer.out_of_scope(x), model.gate.predict_proba(features)[:, 1],
                           rtol=0, atol=1e-12)


def test_the_scorer_covers_a_logistic_regression_voting_alone() -> None:
    model = build_model({"a": 1, "b": 5, "c": 5})
    texts = ["where is my parcel", *[f"refund number {i}" for i in range(5)],
             *[f"coupon code {i}" for i in range(5)]]
    model.fit(texts, ["a"] + ["b"] * 5 + ["c"] * 5)
    scorer = Scorer.of(model)
    assert scorer is not None
    x = scorer.features(["refund", "coupon"])
    assert np.array_equal(scorer.probabilities(x), model.predict_proba(["refund", "coupon"]))
    assert Scorer.of(object()) is None


def test_the_confidence_falls_with_the_distance_to_the_nearest_example() -> None:
    model = small_model()
    assert model.neighbours is not None
    texts = [features_text(t) for t in ("快递到哪里了", "快递到哪里了 顺便问下明天天气")]
    x = Scorer.of(model.model).features(texts)
    best = np.array([model.model.classes_.tolist().index("logistics")] * 2)
    near, far = model.neighbours.similarity(x, best)
    assert near > far
    assert 0.0 <= far <= near <= 1.0


def test_the_trainer_records_the_neighbours_power_it_chose() -> None:
    m = small_model().manifest
    assert m.neighbour_power in NEIGHBOUR_POWERS
    assert m.validation["neighbour_power"] == m.neighbour_power
    assert m.coverage_power in COVERAGE_POWERS
    assert m.validation["coverage_power"] == m.coverage_power
    assert set(m.validation["powers"]) == {f"{p} {c}" for p in NEIGHBOUR_POWERS
                                           for c in COVERAGE_POWERS}


def test_a_languages_own_threshold_is_mapped_onto_the_models() -> None:

    assert scaled(0.3, 0.4, 0.3) == pytest.approx(0.4)  # at its own threshold: at the model's
    assert scaled(0.2, 0.4, 0.3) < 0.4 <= scaled(0.31, 0.4, 0.3)
    assert scaled(0.9, 0.4, 0.2) == 1.0


def test_predictions_apply_each_languages_threshold(tmp_path: Path) -> None:
    model = small_model()
    m = replace(model.manifest, threshold=0.4, language_thresholds={"zh": 0.2, "en": 0.8})
    own = IntentClassifier(model.model, m, model.gate, model.neighbours)
    one_scale = IntentClassifier(model.model, replace(m, language_thresholds={}), model.gate,
                                 model.neighbours)
    plain = one_scale.predict_batch(["快递到哪里了", "refund please"])
    zh, en = own.predict_batch(["快递到哪里了", "refund please"])
    assert zh.confidence == pytest.approx(min(1.0, plain[0].confidence * 2))
    assert en.confidence == pytest.approx(plain[1].confidence / 2)
