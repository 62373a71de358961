"""The trainer's validation and a development split's test, kept as per-question parts, so that a
confidence formula or a threshold rule can be compared on development splits without refitting.

For each development split (load_tests.banking77_dev, never the benchmark's test split) and
trainer seed, the trainer's rotation models (router.bot.classifier.validation_splits) and the
final model are fitted once; every validated and every test question keeps the vote's
probabilities, the cosine to the nearest example of its top intent (``closeness``), the word
coverage, the SVM folds' per-intent sigmoids before the calibration divides them by their sum
(``claim``), the 10 nearest training examples (cosine and intent) and, for validated questions,
the weight the trainer gives an unseen question's wrong closure. Parts are cached as pickles
under --cache. ``run`` applies the trainer's rule (the lowest threshold on its 0.01 grid within
the target, the option that closes the most right) to any family of confidence options, and
reads the split's test at the choice and at the best point of its curve (docs/BOT.md, issue
17's fifth round). With today's options it reproduces the trainer's own choices.

    python -m load_tests.banking77_parts [--splits 4] [--seeds 1] [--cache DIR]
"""

from __future__ import annotations

import pickle
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from scipy.special import expit
from sklearn.preprocessing import normalize

from load_tests.banking77_dev import baseline_best, dev_parser, dev_split, training_rows
from router.bot import classifier as C
from router.bot.scoring import OOS, PICK_GRID
from router.bot.text import features_text

NEAREST = 10
Parts = dict[str, Any]
Option = Callable[[Parts], tuple[Any, Any]]  # parts -> (top class index, confidence)


def parts_of(model: Any, fit_texts: Sequence[str], fit_labels: Sequence[str],
             texts: Sequence[str]) -> Parts:
    """The per-question parts of ``texts`` under a fitted ``build_model`` pipeline."""
    gate, neighbours = C.fit_parts(model, fit_texts, fit_labels)
    scorer = C.Scorer.of(model, gate)
    if scorer is None or neighbours is None:
        raise SystemExit("the model is not a build_model pipeline")
    classes = [str(c) for c in model.classes_]
    x, xf = scorer.features(texts), scorer.features(fit_texts)
    p = scorer.probabilities(x)
    best = p.argmax(axis=1)
    vote = model.named_steps["vote"]
    svm = dict(zip([n for n, _ in vote.estimators], vote.estimators_, strict=True)).get("svm")
    claim = np.ones_like(p)
    if svm is not None:
        claim = np.zeros_like(p)
        for fold in svm.calibrated_classifiers_:
            a = np.array([c.a_ for c in fold.calibrators])
            b = np.array([c.b_ for c in fold.calibrators])
            columns = np.searchsorted(fold.classes, fold.estimator.classes_)
            decision = x @ fold.estimator.coef_.T + fold.estimator.intercept_
            claim[:, columns] += expit(-(a * decision + b))
        claim /= len(svm.calibrated_classifiers_)
    similarity = (normalize(x) @ normalize(xf).T).toarray()
    nearest = np.argsort(-similarity, axis=1)[:, :NEAREST]
    label_index = np.array([classes.index(label) for label in fit_labels])
    return {"classes": classes, "p": p, "best": best, "claim": claim,
            "closeness": neighbours.similarity(x, best),
            "coverage": C.word_coverage(texts, C._word_vocabulary(model) or {}),
            "nearest_cosine": np.take_along_axis(similarity, nearest, axis=1),
            "nearest_intent": label_index[nearest]}


def collect(rows: Sequence[Any], split: int, seed: int, cache: Path) -> Parts:
    """The rotations' parts (``val``, a list) and the split's test parts (``test``)."""
    path = cache / f"split{split}-seed{seed}.pkl"
    if path.exists():
        loaded: Parts = pickle.loads(path.read_bytes())
        return loaded
    fit, test = dev_split(list(rows), split)
    texts = [features_text(r.text) for r in fit]
    labels = [r.intent for r in fit]
    intents = len(set(labels))
    started = time.perf_counter()
    val = []
    for fit_idx, held_out, unseen in C.validation_splits(labels, seed)[0]:
        fit_texts, fit_labels = [texts[i] for i in fit_idx], [labels[i] for i in fit_idx]
        model = C.build_model(C._sizes(fit_labels)).fit(fit_texts, fit_labels)
        parts = parts_of(model, fit_texts, fit_labels, [texts[i] for i in held_out])
        parts["truth"] = [OOS if labels[i] in unseen else labels[i] for i in held_out]
        known = len(set(fit_labels))
        parts["weight"] = np.array([intents / known if t == OOS else 1.0
                                    for t in parts["truth"]])
        val.append(parts)
    model = C.build_model(C._sizes(labels)).fit(texts, labels)
    final = parts_of(model, texts, labels, [features_text(r.text) for r in test])
    final["truth"] = [r.intent for r in test]
    base = baseline_best(fit, test, 0.02)
    out = {"val": val, "test": final, "baseline": base,
           "seconds": round(time.perf_counter() - started, 1)}
    cache.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(out))
    return out


def top_and_margin(p: Any) -> Any:
    """Our confidence's form: sqrt(top probability x its margin over the runner-up)."""
    return C.top_and_confidence(p)[1]


def today() -> dict[str, Option]:
    """The trainer's options as shipped: neighbours' and word coverage's powers."""
    def option(power: float, cover: float) -> Option:
        def confidence(d: Parts) -> tuple[Any, Any]:
            return d["best"], (top_and_margin(d["p"]) * d["closeness"] ** power
                               * d["coverage"] ** cover)
        return confidence
    return {f"{n} {c}": option(n, c) for n in C.NEIGHBOUR_POWERS for c in C.COVERAGE_POWERS}


def _right(d: Parts, best: Any) -> tuple[Any, Any]:
    truth = np.array(d["truth"])
    return np.array(d["classes"])[best] == truth, truth != OOS


def hindsight(confidence: Any, right: Any, in_scope: Any, target: float) -> float:
    """The best correct containment of the exact curve within the target."""
    order = np.argsort(-confidence, kind="stable")
    c = confidence[order]
    hits, misses = np.cumsum(right[order]), np.cumsum(~right[order])
    last = np.flatnonzero(np.append(c[1:] != c[:-1], True))
    ok = [int(hits[i]) for i in last if misses[i] / len(c) <= target]
    return float(max(ok) / in_scope.sum()) if ok else 0.0


def choose(options: Mapping[str, Option], val: Sequence[Parts], target: float
           ) -> tuple[str, float, bool]:
    """The trainer's rule over pooled rotations: per option the lowest grid threshold whose
    weighted false containment of all is within the target; the option closing most right."""
    grid = np.array(PICK_GRID)
    choices = []
    for name, option in options.items():
        confidence, right, weight, in_scope = [], [], [], []
        for d in val:
            best, c = option(d)
            r, s = _right(d, best)
            confidence.append(c)
            right.append(r)
            weight.append(d["weight"])
            in_scope.append(s)
        conf, ok, w = np.concatenate(confidence), np.concatenate(right), np.concatenate(weight)
        closed = conf[None, :] >= grid[:, None]
        false_all = (closed & ~ok[None, :]) @ w / len(conf)
        hits = (closed & ok[None, :]).sum(axis=1) / np.concatenate(in_scope).sum()
        within = np.flatnonzero(false_all <= target)
        i = int(within[0]) if within.size else int(np.argmin(false_all))
        choices.append((bool(within.size), float(hits[i]), name, float(grid[i])))
    met, _, name, threshold = max(choices, key=lambda c: (c[0], c[1]))
    return name, threshold, met


def run(parts: Parts, options: Mapping[str, Option], target: float) -> dict[str, Any]:
    """The split's test at the rule's choice and in hindsight, in points over the baseline."""
    name, threshold, met = choose(options, parts["val"], target)
    test = parts["test"]
    best, confidence = options[name](test)
    right, in_scope = _right(test, best)
    closed = confidence >= threshold
    correct = float((closed & right).sum() / in_scope.sum())
    false_all = float((closed & ~right).sum() / len(confidence))
    base = parts["baseline"]["correct_containment"]
    return {"option": name, "threshold": threshold, "target_met": met,
            "correct_containment": round(correct, 4),
            "false_containment_of_all": round(false_all, 4),
            "gain_points": round(100 * (correct - base), 1),
            "hindsight_gain_points": round(
                100 * (hindsight(confidence, right, in_scope, target) - base), 1),
            "baseline": parts["baseline"]}


def main(argv: list[str] | None = None) -> int:
    parser = dev_parser("python -m load_tests.banking77_parts", __doc__)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/peakroute-banking77-parts"))
    args = parser.parse_args(argv)
    rows = training_rows(args.data, args.cache / "data")
    if rows is None:
        return 2
    for split in range(args.splits):
        for seed in range(args.seeds):
            result = run(collect(rows, split, seed, args.cache), today(), args.target)
            print(orjson.dumps({"split": split, "seed": seed} | result).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
