"""router.bot.tfidf and the classifier's vectorised neighbours: scikit-learn's numbers, bit for
bit, on the test sets' questions and on awkward texts."""

from __future__ import annotations

import csv
import functools

import numpy as np
import pytest
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize

from router.bot.classifier import WORD_TOKENS, Neighbours, Scorer
from router.bot.text import features_text
from router.bot.tfidf import FastTfidf

from ._bot import DATA, small_kb, small_model

AWKWARD = ["", " ", "a", "I", "0", "ab", "abc", "a b c", "退", "退款", "  多  空格  ", "tab\there",
           "new\nline", "nbsp\u00a0word", "ideographic\u3000space", "x" * 300, "中" * 200,
           "mixed 中文 and english 退款 refund", "don't won't it's", "a  b", "emoji 😀 ok",
           "full-width ＡＢＣ１２３", "ÀÉ accents"]


@functools.cache
def questions() -> list[str]:
    texts = [t for t, _ in small_kb().examples()]
    for name in ("bot_blind_v4.csv", "bot_test_v3.csv", "bot_test_v2.csv",
                 "bot_must_escalate.csv", "bot_must_escalate_blind.csv"):
        with (DATA / name).open(encoding="utf-8") as f:
            texts += [row["text"] for row in csv.DictReader(f)]
    return texts


def same(a: object, b: object) -> bool:
    x, y = sparse.csr_matrix(a), sparse.csr_matrix(b)
    x.sort_indices()
    y.sort_indices()
    return (x.shape == y.shape and np.array_equal(x.indptr, y.indptr)
            and np.array_equal(x.indices, y.indices) and np.array_equal(x.data, y.data))


@pytest.mark.parametrize("settings", [
    {"analyzer": "char_wb", "ngram_range": (1, 4), "min_df": 2, "sublinear_tf": True},
    {"analyzer": "char_wb", "ngram_range": (2, 5), "sublinear_tf": False},
    {"analyzer": "char_wb", "ngram_range": (3, 3), "min_df": 1, "sublinear_tf": True},
    {"analyzer": "word", "ngram_range": (1, 2), "min_df": 2, "sublinear_tf": True,
     "token_pattern": WORD_TOKENS},
    {"analyzer": "word", "ngram_range": (1, 1), "sublinear_tf": True},
    {"analyzer": "word", "ngram_range": (2, 3), "sublinear_tf": False},
])
@pytest.mark.parametrize("normalised", [True, False])
def test_fast_tfidf_gives_scikit_learns_numbers(settings: dict[str, object],
                                               normalised: bool) -> None:
    texts = [features_text(t) if normalised else t for t in questions() + AWKWARD]
    vectorizer = TfidfVectorizer(lowercase=False, **settings).fit(  # type: ignore[arg-type]
        [features_text(t) for t, _ in small_kb().examples()])
    fast = FastTfidf.of(vectorizer)
    assert fast is not None
    assert same(fast.transform(texts), vectorizer.transform(texts))
    for text in AWKWARD:  # batches of one, each edge alone
        assert same(fast.transform([text]), vectorizer.transform([text]))
    assert fast.transform([]).shape == (0, len(vectorizer.vocabulary_))


@pytest.mark.parametrize("settings", [
    {"analyzer": "char", "ngram_range": (1, 3), "lowercase": False},
    {"analyzer": "char_wb", "ngram_range": (1, 3)},  # lower-cases
    {"analyzer": "word", "lowercase": False, "stop_words": "english"},
    {"analyzer": "char_wb", "lowercase": False, "binary": True},
])
def test_fast_tfidf_declines_what_it_does_not_reproduce(settings: dict[str, object]) -> None:
    vectorizer = TfidfVectorizer(**settings).fit(  # type: ignore[arg-type]
        ["where is my parcel", "refund please"])
    assert FastTfidf.of(vectorizer) is None
    assert FastTfidf.of(TfidfVectorizer(lowercase=False)) is None  # not fitted
    assert FastTfidf.of(object()) is None


def test_the_neighbours_give_the_row_by_row_cosines() -> None:
    model = small_model()
    scorer, neighbours = Scorer.of(model.model), model.neighbours
    assert scorer is not None
    assert neighbours is not None
    texts = [features_text(t) for t in questions() + AWKWARD]
    x = scorer.features(texts)
    best = scorer.probabilities(x).argmax(axis=1)
    best[::7] = len(model.model.classes_) + 3  # a class without examples: 0
    unit = normalize(sparse.csr_matrix(x))
    expected = np.zeros(len(texts))
    for i in range(len(texts)):
        examples = neighbours._rows.get(int(best[i]))
        if examples is not None:
            expected[i] = (unit[i] @ examples.T).toarray().max()
    assert np.array_equal(neighbours.similarity(x, best), np.clip(expected, 0.0, 1.0))


def test_neighbours_pickle_without_their_cache() -> None:
    neighbours = small_model().neighbours
    assert isinstance(neighbours, Neighbours)
    neighbours.similarity(Scorer.of(small_model().model).features(["refund"]),  # type: ignore[union-attr]
                          np.array([0]))
    assert set(neighbours.__getstate__()) == {"_rows"}
