"""Near-duplicate search for the test sets: character-bigram Jaccard similarity of normalised
texts (case, width, spacing, Traditional/Simplified and digits aside), as sparse products."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.feature_extraction.text import CountVectorizer

from router.bot.text import features_text

# Above this share of shared character pairs, a test question is a reworded training example.
MAX_JACCARD = 0.8


def _key(text: str) -> str:
    key = features_text(text).replace(" ", "")
    return key if len(key) > 1 else f"{key}{key}"  # one character: one "pair"


def max_similarity(questions: Sequence[str], examples: Sequence[str]) -> list[float]:
    """For each question, the Jaccard similarity of its character bigrams (unigrams for a
    one-character text) with the most similar example."""
    vectorizer = CountVectorizer(analyzer="char", ngram_range=(2, 2), binary=True,
                                 lowercase=False)
    vectorizer.fit([_key(t) for t in [*questions, *examples]])
    q = vectorizer.transform([_key(t) for t in questions])
    e = vectorizer.transform([_key(t) for t in examples])
    shared = (q @ e.T).tocsr()
    q_sizes = np.asarray(q.sum(axis=1)).ravel()
    e_sizes = np.asarray(e.sum(axis=1)).ravel()
    out = []
    for i in range(q.shape[0]):
        row = shared.getrow(i)
        if row.nnz == 0:
            out.append(0.0)
            continue
        union = q_sizes[i] + e_sizes[row.indices] - row.data
        out.append(float((row.data / union).max()))
    return out
