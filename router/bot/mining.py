"""The AI trainer's loop: cluster the questions the bot did not close into candidate intents,
with counts, representative examples and the words that set each apart, ready to paste into
the knowledge base (YAML) or read by a script (JSON). Pure: the questions come from a CSV or
from the routing.requests topic (router.bot.mine_source).

Method: the questions normalised as the classifier sees them (router.bot.text), TF-IDF over
character 1-3-grams and words, reduced to ``COMPONENTS`` dimensions (latent semantic
analysis) and scaled to unit length, then k-means for each k of a range; the k with the best
silhouette wins. Identical questions (after normalisation) count once per occurrence but are
placed once. Clusters smaller than ``min_size`` are left out as "unclustered".
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import yaml
from scipy import sparse
from sklearn.cluster import KMeans
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import normalize as l2_rows

from router.bot.text import detect_language, features_text

COMPONENTS = 100  # LSA dimensions (fewer when there are fewer questions)
MAX_CLUSTERS = 60
MIN_SIZE = 3  # a cluster with fewer questions is not worth an intent yet
EXAMPLES = 8  # representative examples per cluster
TERMS = 6  # distinguishing terms per cluster
SILHOUETTE_SAMPLE = 3000
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
_STOP_WORDS = ("a an the i me my we our you your it its is are was were be been am do does did "
               "to of in on at for from with and or but not no so if this that there what how "
               "when where why which who can could would should will please hi hello just have "
               "has had get got any")
_STOP = frozenset(_STOP_WORDS.split())


@dataclass(frozen=True, slots=True)
class Cluster:
    """A candidate intent."""

    name: str  # a suggested intent id (candidate_NN_terms)
    count: int  # questions in it (repeats included)
    terms: tuple[str, ...]  # what sets it apart
    examples: tuple[str, ...]  # the most central questions, distinct
    languages: dict[str, int]  # questions per language


@dataclass(frozen=True, slots=True)
class Mined:
    questions: int
    clusters: tuple[Cluster, ...]  # largest first
    unclustered: int  # questions in clusters smaller than min_size
    assignments: tuple[int, ...]  # per input question: its cluster's index, -1 = unclustered


def mine(texts: Sequence[str], *, min_size: int = MIN_SIZE, max_clusters: int = MAX_CLUSTERS,
         k: int | None = None, seed: int = 0) -> Mined:
    """Cluster ``texts``; ``k`` fixes the number of clusters (else chosen by silhouette)."""
    normalised = [features_text(t) for t in texts]
    distinct = sorted(set(normalised))
    if len(distinct) < 2:
        groups = [0] * len(distinct)
        return _result(texts, normalised, distinct, np.array(groups), None, min_size)
    x = _vectors(distinct, seed)
    labels = _kmeans(x, distinct, k, max_clusters, seed)
    return _result(texts, normalised, distinct, labels, x, min_size)


def _vectors(distinct: Sequence[str], seed: int) -> Any:
    vectorizers = [
        TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), sublinear_tf=True,
                        lowercase=False),
        TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True,
                        lowercase=False, token_pattern=r"[a-z0-9]+(?:'[a-z]+)?"),
    ]
    blocks = []
    for v in vectorizers:
        try:
            blocks.append(v.fit_transform(distinct))
        except ValueError:  # no words at all (Chinese only): characters suffice
            continue
    tfidf = sparse.hstack(blocks).tocsr()
    components = min(COMPONENTS, tfidf.shape[0] - 1, tfidf.shape[1] - 1)
    if components < 2:
        return l2_rows(tfidf.toarray())
    reduced = TruncatedSVD(n_components=components, random_state=seed).fit_transform(tfidf)
    return l2_rows(reduced)


def _kmeans(x: Any, distinct: Sequence[str], k: int | None, max_clusters: int,
            seed: int) -> Any:
    n = len(distinct)
    if k is not None:
        return KMeans(n_clusters=max(1, min(k, n)), n_init=4, random_state=seed).fit_predict(x)
    best: tuple[float, Any] | None = None
    top = min(max_clusters, n - 1, max(2, int(2 * np.sqrt(n))))
    for candidate in range(2, top + 1):
        labels = KMeans(n_clusters=candidate, n_init=2, random_state=seed).fit_predict(x)
        if len(set(labels.tolist())) < 2:
            continue
        quality = silhouette_score(x, labels, metric="cosine",
                                   sample_size=min(n, SILHOUETTE_SAMPLE), random_state=seed)
        if best is None or quality > best[0]:
            best = (float(quality), labels)
    return best[1] if best is not None else np.zeros(n, dtype=int)


def _result(texts: Sequence[str], normalised: Sequence[str], distinct: Sequence[str],
            labels: Any, x: Any, min_size: int) -> Mined:
    place = {text: i for i, text in enumerate(distinct)}
    per_question = [int(labels[place[t]]) for t in normalised]
    sizes = Counter(per_question)
    kept = [c for c, size in sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))
            if size >= min_size]
    index = {c: i for i, c in enumerate(kept)}
    originals: dict[str, str] = {}
    for text, norm in zip(texts, normalised, strict=True):
        originals.setdefault(norm, text.strip())
    background = _term_counts(distinct)
    clusters = []
    for i, c in enumerate(kept):
        members = [j for j in range(len(distinct)) if labels[j] == c]
        if x is not None:
            centre = x[members].mean(axis=0)
            members.sort(key=lambda j: -float(x[j] @ centre))
        terms = _distinguishing([distinct[j] for j in members], background)
        languages = Counter(detect_language(t).value
                            for t, q in zip(texts, per_question, strict=True) if q == c)
        clusters.append(Cluster(
            name=f"candidate_{i + 1:02d}" + "".join(f"_{t}" for t in terms[:2]
                                                    if re.fullmatch(r"[a-z0-9]+", t)),
            count=sizes[c], terms=tuple(terms),
            examples=tuple(originals[distinct[j]] for j in members[:EXAMPLES]),
            languages=dict(languages)))
    return Mined(questions=len(texts), clusters=tuple(clusters),
                 unclustered=sum(size for c, size in sizes.items() if c not in index),
                 assignments=tuple(index.get(q, -1) for q in per_question))


def _terms(text: str) -> set[str]:
    """Latin words (not stop words) and Chinese character pairs."""
    words = {w for w in _WORD.findall(text) if w not in _STOP and len(w) > 1}
    chinese = "".join(ch if _CJK.match(ch) else " " for ch in text).split()
    pairs = {run[i:i + 2] for run in chinese for i in range(len(run) - 1)}
    return words | pairs


def _term_counts(texts: Sequence[str]) -> tuple[Counter[str], int]:
    counts: Counter[str] = Counter()
    for t in texts:
        counts.update(_terms(t))
    return counts, len(texts)


def _distinguishing(members: Sequence[str], background: tuple[Counter[str], int]
                    ) -> list[str]:
    """Terms frequent in the cluster and rarer elsewhere (share in cluster x log lift)."""
    inside: Counter[str] = Counter()
    for t in members:
        inside.update(_terms(t))
    total, n = background
    scored = []
    for term, count in inside.items():
        if count < 2 and len(members) > 2:
            continue
        share = count / len(members)
        lift = share / (total[term] / n)
        scored.append((share * np.log1p(lift), term))
    scored.sort(reverse=True)
    return [term for _, term in scored[:TERMS]]


def to_yaml(mined: Mined) -> str:
    """The candidates as knowledge-base intents to paste under `intents:` and complete (queue,
    answers, whether the bot may close them, examples in every language)."""
    lines = [f"# {mined.questions} questions the bot did not close: {len(mined.clusters)} "
             f"candidate intents, {mined.unclustered} questions unclustered.",
             "# Paste under `intents:`, rename, write the answers and check the examples "
             "(docs/BOT.md).", "intents:"]
    for c in mined.clusters:
        by_language: dict[str, list[str]] = {}
        for text in c.examples:
            by_language.setdefault(detect_language(text).value, []).append(text)
        body = {c.name: {
            "containable": False, "queue": "general",
            "answer": {lang: "TODO: the answer" for lang in sorted(by_language)},
            "examples": by_language,
        }}
        lines.append(f"  # {c.count} questions; terms: {', '.join(c.terms)}")
        dumped = yaml.safe_dump(body, allow_unicode=True, sort_keys=False, width=1000)
        lines.extend("  " + line for line in dumped.splitlines())
    return "\n".join(lines) + "\n"


def as_json(mined: Mined) -> dict[str, Any]:
    return {"questions": mined.questions, "unclustered": mined.unclustered,
            "clusters": [{"name": c.name, "count": c.count, "terms": list(c.terms),
                          "examples": list(c.examples), "languages": c.languages}
                         for c in mined.clusters]}


def purity(assignments: Sequence[int], truth: Sequence[str]) -> float:
    """Share of questions whose cluster's most common true label is theirs (unclustered
    questions count as one cluster)."""
    by_cluster: dict[int, Counter[str]] = {}
    for a, t in zip(assignments, truth, strict=True):
        by_cluster.setdefault(a, Counter())[t] += 1
    right = sum(c.most_common(1)[0][1] for c in by_cluster.values())
    return right / len(truth) if truth else 0.0
