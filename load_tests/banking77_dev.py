"""The BANKING77 protocol on development splits of its training split only, to judge a change
to the trainer (threshold rule, model) without reading the benchmark's test split.

Each split: a random quarter of the training split's intents is unseen (dropped from training,
their questions labelled ``oos`` in the split's test), and a fifth of every intent's questions
is the split's test. For each split and each trainer seed, `peakroute`'s trainer
(router.bot.classifier.train) chooses its threshold on the remaining questions; the split's
test then gives ours at that threshold, ours at the best point of its curve in hindsight, and
the plain baseline's best points (load_tests.banking77). One JSON line per split and seed.

    python -m load_tests.banking77_dev [--data DIR] [--splits 4] [--seeds 1] [--target 0.02]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

from load_tests.banking77 import DEFAULT_DATA, OOS_EVERY, baseline_model, best_point, prepare
from router.bot.classifier import top_and_confidence, train
from router.bot.scoring import OOS, Outcome, score
from router.bot.trainer import Labelled, outcomes, read_labelled

TEST_SHARE = 0.2  # of each intent's questions, the split's test


def dev_split(rows: list[Labelled], seed: int) -> tuple[list[Labelled], list[Labelled]]:
    """Training and test rows of one development split (every ``OOS_EVERY``th intent of a
    shuffled order unseen, as the benchmark drops every fourth of categories.json)."""
    rng = random.Random(1000 + seed)
    intents = sorted({r.intent for r in rows})
    rng.shuffle(intents)
    unseen = set(intents[::OOS_EVERY])
    by_intent: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        by_intent[r.intent].append(i)
    test: set[int] = set()
    for intent in sorted(by_intent):
        idx = by_intent[intent][:]
        rng.shuffle(idx)
        test.update(idx[:round(len(idx) * TEST_SHARE)])
    fit = [r for i, r in enumerate(rows) if i not in test and r.intent not in unseen]
    held = [Labelled(rows[i].text, OOS if rows[i].intent in unseen else rows[i].intent,
                     rows[i].language) for i in sorted(test)]
    return fit, held


def baseline_best(fit: list[Labelled], test: list[Labelled], target: float
                  ) -> dict[str, Any] | None:
    model = baseline_model().fit([r.text for r in fit], [r.intent for r in fit])
    probabilities = model.predict_proba([r.text for r in test])
    classes = [str(c) for c in model.classes_]
    best, margin = top_and_confidence(probabilities)
    readings = []
    for confidence in (probabilities.max(axis=1), margin):
        results = [Outcome(r.intent, classes[b], float(c), True, language=r.language)
                   for r, b, c in zip(test, best.tolist(), confidence.tolist(), strict=True)]
        readings.append(best_point(results, target))
    found = [r for r in readings if r is not None]
    return max(found, key=lambda r: r["correct_containment"]) if found else None


def run_split(rows: list[Labelled], split: int, seed: int, target: float) -> dict[str, Any]:
    fit, test = dev_split(rows, split)
    started = time.perf_counter()
    model = train([(r.text, r.intent) for r in fit], {r.intent: True for r in fit},
                  target_false_containment=target, seed=seed)
    seconds = time.perf_counter() - started
    ours = outcomes(model, test, None)
    at = score(ours, model.threshold)
    base = baseline_best(fit, test, target)
    hindsight = best_point(ours, target)
    result: dict[str, Any] = {
        "split": split, "seed": seed, "questions": len(test),
        "threshold": model.threshold,
        "neighbour_power": model.manifest.neighbour_power,
        "coverage_power": model.manifest.coverage_power,
        "correct_containment": round(at.correct_containment, 4),
        "false_containment_of_all": round(at.false_containment_of_all, 4),
        "within_target": at.false_containment_of_all <= target,
        "ours_best_in_hindsight": hindsight, "baseline_best": base,
        "train_s": round(seconds, 1)}
    if base is not None:
        result["gain_points"] = round(100 * (at.correct_containment
                                             - base["correct_containment"]), 1)
    return result


def dev_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """The options of a tool over development splits (this one, banking77_parts)."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0] if doc else None)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--splits", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=1, help="trainer seeds per split")
    parser.add_argument("--target", type=float, default=0.02)
    return parser


def training_rows(data: Path, out: Path) -> list[Labelled] | None:
    """BANKING77's training split as labelled rows (None, said on stderr, when it is not at
    data). Its test split is prepared beside it and never read here."""
    if not (data / "categories.json").exists():
        print(f"no BANKING77 at {data}: pass --data DIR", file=sys.stderr)
        return None
    train_csv, _, _ = prepare(data, out)
    return read_labelled(train_csv)


def main(argv: list[str] | None = None) -> int:
    parser = dev_parser("python -m load_tests.banking77_dev", __doc__)
    parser.add_argument("--out", type=Path, default=Path("/tmp/peakroute-banking77-dev"),
                        help="where the prepared CSVs go")
    args = parser.parse_args(argv)
    rows = training_rows(args.data, args.out)
    if rows is None:
        return 2
    for split in range(args.splits):
        for seed in range(args.seeds):
            print(orjson.dumps(run_split(rows, split, seed, args.target)).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
