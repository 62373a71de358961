"""The learned hand-off detector: does a message ask for a person (directly or not, or say that
the bot's answer missed the point), or complain, rage or threaten (authorities, a bad review,
the media, a lawyer, a chargeback)? Trained on the knowledge base's `handoffs` examples
against its other examples (router.bot.trainer.not_handoffs); the phrase rules stay as a
floor (router.bot.rules applies both), and a hand-off wins over any intent
(router.bot.policy).

Scoring one message is pure Python over the fitted TF-IDF vocabulary and the logistic
regression's weights (no scikit-learn call), because the bot stage checks each message
on its own.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from router.bot.text import features_text
from router.bot.tfidf import FastTfidf

NONE = "none"  # the class of messages the bot may answer
KINDS = ("human_request", "anger")  # the knowledge base's `handoffs` sections (Rule values)
CHAR_NGRAMS = (1, 4)
WORD_NGRAMS = (1, 2)
WORD_TOKENS = r"[a-z0-9]+(?:'[a-z]+)?"
C = 10.0
THRESHOLD = 0.5  # 1 - P(none) at which a message is handed off, unless validation picks one
VALIDATION_FOLDS = 4
# The threshold is the lowest at which at most this share of the validation folds' other
# messages (questions the bot may answer) would be handed off.
MAX_FALSE_HANDOFFS = 0.02
GRID = tuple(round(0.05 * i, 2) for i in range(4, 15))  # 0.20 .. 0.70
# A message is scored whole and clause by clause ("are you kidding me?? where is my money":
# the first clause alone is angry; the question around it would dilute it).
_CLAUSES = re.compile(r"[,.!?;:，。！？；：、\n]+")
MIN_CLAUSE_CHARS = 2


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
        # The batch path (``kinds``): each vectorizer's transform (FastTfidf where it
        # reproduces it), and the weights as one (features x classes) matrix.
        self._transforms = [getattr(FastTfidf.of(v), "transform", v.transform)
                            for v in self.vectorizers]
        self._weights = np.ascontiguousarray(self.coef.T)

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
        """``handoffs``: (text, kind) with kind in ``KINDS``; ``others``: messages that are not
        hand-offs (the intents' and out-of-scope examples). The threshold and its validation
        figures come from ``VALIDATION_FOLDS`` folds."""
        texts = [features_text(t) for t, _ in handoffs] + [features_text(t) for t in others]
        labels = [k for _, k in handoffs] + [NONE] * len(others)
        detector = cls._fit(texts, labels)
        threshold, validation = _validate(texts, labels, seed)
        return cls(detector.vectorizers, detector.coef, detector.intercept, detector.classes,
                   threshold, validation)

    @classmethod
    def _fit(cls, texts: Sequence[str], labels: Sequence[str]) -> EscalationDetector:
        vectorizers, blocks = [], []
        for v in (TfidfVectorizer(analyzer="char_wb", ngram_range=CHAR_NGRAMS,
                                  sublinear_tf=True, lowercase=False),
                  TfidfVectorizer(analyzer="word", ngram_range=WORD_NGRAMS, sublinear_tf=True,
                                  lowercase=False, token_pattern=WORD_TOKENS)):
            try:
                blocks.append(v.fit_transform(texts))
            except ValueError:  # no Latin words at all: characters alone
                continue
            vectorizers.append(v)
        x = sparse.hstack(blocks).tocsr()
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

    def scores(self, text: str) -> dict[str, float]:
        """P(class), for the class of the part of the message (whole, or one clause) that is
        least likely a question the bot may answer."""
        best = self.probabilities(text)
        clauses = [c for c in _CLAUSES.split(text) if len(c.strip()) >= MIN_CLAUSE_CHARS]
        if len(clauses) > 1:
            for clause in clauses:
                p = self.probabilities(clause)
                if p[NONE] < best[NONE]:
                    best = p
        return best

    def kind(self, text: str) -> str | None:
        """The hand-off kind of a message, or None when the bot may answer it."""
        p = self.scores(text)
        if 1.0 - p[NONE] < self.threshold:
            return None
        return max((k for k in self.classes if k != NONE), key=lambda k: p[k])

    def kinds(self, texts: Sequence[str]) -> list[str | None]:
        """``kind`` of each message, for a batch at once: every message and its clauses are
        scored in one sparse product (the bot stage checks a whole batch of messages; one
        message at a time, the fixed cost of the numpy calls per message and clause was most of
        the detector's time). The same features and weights as ``probabilities``; only the
        order of the sums differs (last-bit differences in the probabilities)."""
        if not texts:
            return []
        units: list[str] = []  # per message: the whole, then its clauses if more than one
        spans: list[tuple[int, int]] = []
        for text in texts:
            start = len(units)
            units.append(text)
            clauses = [c for c in _CLAUSES.split(text) if len(c.strip()) >= MIN_CLAUSE_CHARS]
            if len(clauses) > 1:
                units.extend(clauses)
            spans.append((start, len(units)))
        normalised = [features_text(u) for u in units]
        x = sparse.hstack([transform(normalised) for transform in self._transforms]).tocsr()
        logits = np.asarray(x @ self._weights) + self.intercept
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        p = exp / exp.sum(axis=1, keepdims=True)
        none = p[:, self._none]
        others = [i for i, c in enumerate(self.classes) if c != NONE]
        out: list[str | None] = []
        for start, end in spans:
            # The part least likely a question the bot may answer (the first such, as scores).
            row = start + int(np.argmin(none[start:end]))
            if 1.0 - none[row] < self.threshold:
                out.append(None)
                continue
            # As kind: the most likely kind, the first of the classes' order on a tie.
            best = max(others, key=lambda i: p[row, i])
            out.append(self.classes[best])
        return out


def _validate(texts: Sequence[str], labels: Sequence[str], seed: int
              ) -> tuple[float, dict[str, Any]]:
    """The threshold and its figures on ``VALIDATION_FOLDS`` folds of the training data: the
    lowest threshold of ``GRID`` at which at most ``MAX_FALSE_HANDOFFS`` of the other messages
    are handed off (the highest of the grid if none), with the hand-off examples it catches."""
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    handoff: list[float] = []  # 1 - P(none) of held-out hand-off examples
    other: list[float] = []
    for k in range(VALIDATION_FOLDS):
        held = set(order[k::VALIDATION_FOLDS])
        fit = [i for i in order if i not in held]
        if len({labels[i] for i in fit}) < 2:
            continue
        detector = EscalationDetector._fit([texts[i] for i in fit], [labels[i] for i in fit])
        for i in held:
            (other if labels[i] == NONE else handoff).append(1.0 - detector.scores(texts[i])[NONE])
    h, o = np.asarray(handoff), np.asarray(other)
    threshold = next((t for t in GRID if o.size and float((o >= t).mean()) <= MAX_FALSE_HANDOFFS),
                     GRID[-1])
    return threshold, {
        "threshold": threshold,
        "handoff_recall": round(float((h >= threshold).mean()) if h.size else 0.0, 4),
        "false_handoffs": round(float((o >= threshold).mean()) if o.size else 0.0, 4),
        "handoffs": int(h.size), "others": int(o.size)}
