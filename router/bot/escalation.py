"""The learned hand-off detector: does a message ask for a person (directly or not, or say that
the bot's answer missed the point), or complain, rage or threaten (authorities, a bad review,
the media, a lawyer, a chargeback)? Trained on the knowledge base's `handoffs` examples
against the questions the bot may answer; the phrase rules stay as a floor (router.bot.rules
applies both), and a hand-off wins over any intent (router.bot.policy).

Scoring one message is pure Python over the fitted TF-IDF vocabulary and the logistic
regression's weights (no scikit-learn call, ~20 us), because the bot stage checks each message
on its own.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from router.bot.text import features_text

NONE = "none"  # the class of messages the bot may answer
KINDS = ("human_request", "anger")  # the knowledge base's `handoffs` sections (Rule values)
CHAR_NGRAMS = (1, 4)
WORD_NGRAMS = (1, 2)
WORD_TOKENS = r"[a-z0-9]+(?:'[a-z]+)?"
C = 10.0
THRESHOLD = 0.5  # 1 - P(none) at which a message is handed off
VALIDATION_FOLDS = 4


class EscalationDetector:
    """A fitted detector: ``kind(text)`` is a hand-off kind (``KINDS``) or None."""

    def __init__(self, vectorizers: Sequence[Any], coef: Any, intercept: Any,
                 classes: Sequence[str], threshold: float = THRESHOLD,
                 validation: Mapping[str, Any] | None = None) -> None:
        self.vectorizers = list(vectorizers)
        self.coef = np.asarray(coef, dtype=float)
        self.intercept = np.asarray(intercept, dtype=float)
        self.classes = tuple(classes)
        self.threshold = threshold
        self.validation = dict(validation or {})
        self._none = self.classes.index(NONE)
        self._prepare()

    def _prepare(self) -> None:
        parts: list[tuple[Callable[[str], list[str]], dict[str, int], Any, int]] = []
        offset = 0
        for v in self.vectorizers:
            parts.append((v.build_analyzer(), v.vocabulary_, v.idf_, offset))
            offset += len(v.vocabulary_)
        self._parts = parts

    def __getstate__(self) -> dict[str, Any]:
        return {"vectorizers": self.vectorizers, "coef": self.coef,
                "intercept": self.intercept, "classes": self.classes,
                "threshold": self.threshold, "validation": self.validation}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["vectorizers"], state["coef"], state["intercept"],  # type: ignore[misc]
                      state["classes"], state["threshold"], state["validation"])

    @classmethod
    def fit(cls, handoffs: Sequence[tuple[str, str]], others: Sequence[str],
            seed: int = 0) -> EscalationDetector:
        """``handoffs``: (text, kind) with kind in ``KINDS``; ``others``: messages the bot may
        answer (the containable intents' examples and out-of-scope questions). The validation
        figures (``VALIDATION_FOLDS`` folds) go into the manifest."""
        texts = [features_text(t) for t, _ in handoffs] + [features_text(t) for t in others]
        labels = [k for _, k in handoffs] + [NONE] * len(others)
        detector = cls._fit(texts, labels)
        return cls(detector.vectorizers, detector.coef, detector.intercept, detector.classes,
                   validation=_validate(texts, labels, seed))

    @classmethod
    def _fit(cls, texts: Sequence[str], labels: Sequence[str]) -> EscalationDetector:
        vectorizers = [
            TfidfVectorizer(analyzer="char_wb", ngram_range=CHAR_NGRAMS, sublinear_tf=True,
                            lowercase=False),
            TfidfVectorizer(analyzer="word", ngram_range=WORD_NGRAMS, sublinear_tf=True,
                            lowercase=False, token_pattern=WORD_TOKENS),
        ]
        from scipy import sparse

        x = sparse.hstack([v.fit_transform(texts) for v in vectorizers]).tocsr()
        model = LogisticRegression(C=C, class_weight="balanced", max_iter=3000)
        model.fit(x, labels)
        classes = [str(c) for c in model.classes_]
        coef, intercept = model.coef_, model.intercept_
        if len(classes) == 2:  # binary: one row of weights for classes[1]
            coef = np.vstack([np.zeros_like(coef[0]), coef[0]])
            intercept = np.array([0.0, intercept[0]])
        return cls(vectorizers, coef, intercept, classes)

    def probabilities(self, text: str) -> dict[str, float]:
        """P(class) for one message (classes: ``none`` and the kinds it was trained on)."""
        normalised = features_text(text)
        logits = self.intercept.copy()
        for analyzer, vocabulary, idf, offset in self._parts:
            counts = Counter(analyzer(normalised))
            columns, values = [], []
            for gram, n in counts.items():
                j = vocabulary.get(gram)
                if j is not None:
                    columns.append(offset + j)
                    values.append((1.0 + math.log(n)) * idf[j])
            if values:
                v = np.asarray(values)
                logits += self.coef[:, columns] @ (v / math.sqrt(float(v @ v)))
        exp = np.exp(logits - logits.max())
        p = exp / exp.sum()
        return dict(zip(self.classes, p.tolist(), strict=True))

    def kind(self, text: str) -> str | None:
        """The hand-off kind of a message, or None when the bot may answer it."""
        p = self.probabilities(text)
        if 1.0 - p[NONE] < self.threshold:
            return None
        return max((k for k in self.classes if k != NONE), key=lambda k: p[k])


def _validate(texts: Sequence[str], labels: Sequence[str], seed: int) -> dict[str, Any]:
    """Hand-off examples caught and other messages handed off, on folds of the training data."""
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    caught = missed = false = kept = 0
    for k in range(VALIDATION_FOLDS):
        held = set(order[k::VALIDATION_FOLDS])
        fit = [i for i in order if i not in held]
        if len({labels[i] for i in fit}) < 2:
            continue
        detector = EscalationDetector._fit([texts[i] for i in fit], [labels[i] for i in fit])
        for i in held:
            escalated = detector.kind(texts[i]) is not None
            if labels[i] == NONE:
                false += escalated
                kept += not escalated
            else:
                caught += escalated
                missed += not escalated
    return {"handoff_recall": round(caught / max(1, caught + missed), 4),
            "false_handoffs": round(false / max(1, false + kept), 4),
            "handoffs": caught + missed, "others": false + kept}
