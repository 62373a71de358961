"""A fitted scikit-learn ``TfidfVectorizer``'s ``transform``, the same numbers in less time.

The classifier's hot path spends most of a batch turning texts into TF-IDF rows. scikit-learn
analyses each text into a list of n-grams, then looks each one up and counts it in a dict per
text, in Python. ``FastTfidf`` does the same work with fewer Python steps per n-gram: the
n-grams of a word (``char_wb``) or a text (``word``) come from list comprehensions, a text's
n-grams are counted by ``collections.Counter`` (in C) before the vocabulary is consulted, so
each distinct n-gram is looked up once, and the whole batch's counts become one sparse matrix
in a few numpy calls. The result is bit for bit scikit-learn's (the same counts, in the same
column order within a row, through the same sublinear, idf and l2 steps; a test checks it on
every text of the test sets). ``of`` returns None for a vectorizer it does not reproduce
(another analyzer, lower-casing, stop words, a custom tokenizer...): callers then use the
vectorizer's own ``transform``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from itertools import chain, repeat
from operator import add
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.utils.sparsefuncs_fast import inplace_csr_row_normalize_l2

_WHITE_SPACES = re.compile(r"\s\s+")  # scikit-learn's own, applied before char_wb n-grams


class FastTfidf:
    """``transform`` of a fitted ``TfidfVectorizer`` (char_wb or word analyzer)."""

    def __init__(self, vocabulary: Mapping[str, int], idf: Any, sublinear: bool,
                 grams: Grams) -> None:
        self._vocabulary = dict(vocabulary)
        self._idf = np.asarray(idf, dtype=np.float64)
        self._sublinear = sublinear
        self._grams = grams
        self._width = len(self._vocabulary)

    @classmethod
    def of(cls, vectorizer: Any) -> FastTfidf | None:
        """None unless ``vectorizer`` is a fitted ``TfidfVectorizer`` of a shape this class
        reproduces exactly."""
        try:
            plain = (type(vectorizer).__name__ == "TfidfVectorizer"
                     and vectorizer.input == "content" and not vectorizer.lowercase
                     and vectorizer.strip_accents is None and vectorizer.preprocessor is None
                     and vectorizer.tokenizer is None and vectorizer.stop_words is None
                     and not vectorizer.binary and vectorizer.norm == "l2"
                     and vectorizer.use_idf and vectorizer.dtype in (np.float64, float)
                     and not callable(vectorizer.analyzer))
            if not plain:
                return None
            low, high = (int(n) for n in vectorizer.ngram_range)
            vocabulary, idf = vectorizer.vocabulary_, vectorizer.idf_
        except AttributeError:  # not fitted, or not a vectorizer
            return None
        if not 1 <= low <= high:
            return None
        if vectorizer.analyzer == "char_wb":
            grams = _char_wb(low, high)
        elif vectorizer.analyzer == "word":
            grams = _words(re.compile(vectorizer.token_pattern), low, high)
        else:
            return None
        return cls(vocabulary, idf, bool(vectorizer.sublinear_tf), grams)

    def transform(self, texts: Sequence[str]) -> Any:
        """The TF-IDF rows of ``texts`` (CSR, float64, sorted indices, rows of unit length)."""
        grams, rows = self._grams(texts)
        columns = np.fromiter(map(self._vocabulary.get, grams, repeat(-1)), dtype=np.int64,
                              count=len(grams))
        known = columns >= 0
        # One key per (row, column): sorted and counted at once, they are the CSR's rows in
        # order with sorted columns, and the counts are the n-grams' term frequencies.
        keys, counts = np.unique(rows[known] * self._width + columns[known], return_counts=True)
        indptr = np.searchsorted(keys, np.arange(len(texts) + 1, dtype=np.int64) * self._width)
        x = sparse.csr_matrix((counts.astype(np.float64), (keys % self._width).astype(np.int32),
                               indptr.astype(np.int32)), shape=(len(texts), self._width))
        if self._sublinear:
            np.log(x.data, x.data)
            x.data += 1.0
        x.data *= self._idf[x.indices]
        # What sklearn.preprocessing.normalize(x, norm="l2") does for a CSR matrix of float64,
        # without its argument validation, which cost more than the rest of a small batch.
        inplace_csr_row_normalize_l2(x)
        return x


Grams = Callable[[Sequence[str]], tuple[list[str], Any]]  # a batch's n-grams and their rows


def _char_wb(low: int, high: int) -> Grams:
    """scikit-learn's ``_char_wb_ngrams`` for a whole batch: each word padded with a space on
    either side, its n-grams for n from ``low`` to ``high``, where a padded word no longer than
    n counts once, as a whole, and ends the word's n-grams.

    That is every substring of length n of the padded words written one after the other (one
    text after the other): " where  is " holds " where ", " is " and, across a boundary,
    substrings with two spaces in a row, which no word's n-gram has, so no vocabulary holds
    them and the lookup drops them. A padded word shorter than n appears in no substring of
    length n but a boundary-crossing one, and one exactly n long appears once: scikit-learn's
    rule. The substrings of each length come from the previous length's, in C (map)."""

    def grams(texts: Sequence[str]) -> tuple[list[str], Any]:
        padded = [f" {'  '.join(words)} " if words else ""
                  for words in (_WHITE_SPACES.sub(" ", text).split() for text in texts)]
        joined = "".join(padded)
        row_of = np.repeat(np.arange(len(texts), dtype=np.int64),
                           np.fromiter(map(len, padded), dtype=np.int64, count=len(padded)))
        out: list[str] = []
        rows = []
        current: Any = joined
        for n in range(1, high + 1):
            if n > 1:
                current = list(map(add, current, joined[n - 1:]))  # zip stops at the shorter
            if n >= low:
                out.extend(current)
                rows.append(row_of[:max(0, len(joined) - n + 1)])
        return out, np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)

    return grams


def _words(pattern: re.Pattern[str], low: int, high: int) -> Grams:
    """scikit-learn's word analyzer: the token pattern's matches, then their n-grams for n from
    ``low`` to ``high`` joined by single spaces."""

    def text_grams(text: str) -> list[str]:
        tokens: list[str] = pattern.findall(text)
        if high == 1:
            return tokens
        out = list(tokens) if low == 1 else []
        count = len(tokens)
        for n in range(max(low, 2), min(high + 1, count + 1)):
            out.extend(" ".join(tokens[i:i + n]) for i in range(count - n + 1))
        return out

    def grams(texts: Sequence[str]) -> tuple[list[str], Any]:
        per_text = [text_grams(text) for text in texts]
        lengths = np.fromiter(map(len, per_text), dtype=np.int64, count=len(per_text))
        return (list(chain.from_iterable(per_text)),
                np.repeat(np.arange(len(texts), dtype=np.int64), lengths))

    return grams
