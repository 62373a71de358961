"""BANKING77 through `peakroute bot train` and `peakroute bot eval`, with out-of-scope questions,
against a plain baseline trained and thresholded on the same split.

Data: BANKING77 (CC BY 4.0), I. Casanueva, T. Temcinas, D. Gerz, M. Henderson, I. Vulic,
"Efficient Intent Detection with Dual Sentence Encoders", NLP4ConvAI workshop, ACL 2020
(arXiv:2003.04807). Used by path (``../shared/data/banking77/`` by default); the prepared CSVs
go to --out, never into the repository.

Protocol: every fourth intent of categories.json (indices 3, 7, 11, ...; 19 of 77) is dropped
from training, and its test questions are labelled ``oos``. peakroute chooses its threshold
for the target (false containment of all questions) on validation splits carved from the
training data (router.bot.classifier.choose_threshold); the test split is only scored.

The plain baseline (issue 17): TF-IDF character 2-5 and word 1-2 n-grams and a
LogisticRegression as scikit-learn ships them, fitted on the same training split, on the raw
text (none of our normalisation, gate, neighbours or word coverage), one threshold on its top
probability. It is read at the best point of its test curve (every distinct confidence tried
as the threshold, an oracle in its favour) with false containment of all questions within the
target. Its top probability is the plain reading; the geometric mean of the top probability
and its margin (our confidence's form, without any of our factors) is read too, and ours is
compared with the better of the two. Ours is also read at its best point in hindsight.

With --mine, the held-out intents' test questions go to `peakroute bot mine` as questions the
bot did not close, and the clusters are scored against their true intents (purity, adjusted
Rand index).

    python -m load_tests.banking77 [--data DIR] [--out DIR] [--target 0.02] [--json] [--mine]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score
from sklearn.pipeline import FeatureUnion, Pipeline

from router.bot.classifier import top_and_confidence
from router.bot.commands import eval_command, train_command
from router.bot.mining import mine, purity
from router.bot.scoring import OOS, Outcome, Scores, best_at
from router.bot.trainer import EvalReport, outcomes, read_labelled
from router.settings import Settings

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "banking77"
DEFAULT_OUT = REPO / ".peakroute" / "banking77"
OOS_EVERY = 4  # every fourth intent of categories.json is out of scope
TARGET = 0.02
GAIN_POINTS = 3.0  # ours at its own threshold over the baseline's best point (issue 17)
CITATION = ("BANKING77 (CC BY 4.0): Casanueva et al., Efficient Intent Detection with Dual "
            "Sentence Encoders, NLP4ConvAI @ ACL 2020, arXiv:2003.04807")


def prepare(data: Path, out: Path) -> tuple[Path, Path, list[str]]:
    """Write train.csv (in-scope intents only) and test.csv (dropped intents as oos) with
    columns text,intent,language; return their paths and the out-of-scope intents."""
    categories = json.loads((data / "categories.json").read_text())
    dropped = [c for i, c in enumerate(categories) if i % OOS_EVERY == OOS_EVERY - 1]
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for split in ("train", "test"):
        target = out / f"{split}.csv"
        with (data / f"{split}.csv").open(newline="", encoding="utf-8") as src, \
                target.open("w", newline="", encoding="utf-8") as dst:
            writer = csv.writer(dst)
            writer.writerow(["text", "intent", "language"])
            for row in csv.DictReader(src):
                intent = row["category"]
                if intent in dropped:
                    if split == "train":
                        continue
                    intent = OOS
                writer.writerow([row["text"], intent, "en"])
        paths.append(target)
    return paths[0], paths[1], dropped


def baseline_model() -> Any:
    """The plain baseline: TF-IDF character 2-5 and word 1-2 n-grams, LogisticRegression as
    scikit-learn ships them (nothing of ours)."""
    return Pipeline([
        ("features", FeatureUnion([
            ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5))),
            ("words", TfidfVectorizer(analyzer="word", ngram_range=(1, 2))),
        ])),
        ("logistic", LogisticRegression(max_iter=2000)),
    ])


def baseline_outcomes(train_csv: Path, test_csv: Path) -> dict[str, list[Outcome]]:
    """The plain baseline fitted on the training split and run on the test split: its
    outcomes with the top probability as confidence (``top``) and with the geometric mean of
    the top probability and its margin (``margin``). Every intent of the split may be closed."""
    train_rows, test_rows = read_labelled(train_csv), read_labelled(test_csv)
    model = baseline_model().fit([r.text for r in train_rows], [r.intent for r in train_rows])
    probabilities = model.predict_proba([r.text for r in test_rows])
    classes = [str(c) for c in model.classes_]
    best, margin = top_and_confidence(probabilities)
    top = probabilities.max(axis=1)
    return {name: [Outcome(r.intent, classes[b], float(c), True, language=r.language)
                   for r, b, c in zip(test_rows, best.tolist(), confidence.tolist(),
                                      strict=True)]
            for name, confidence in (("top", top), ("margin", margin))}


def best_point(results: list[Outcome], target: float) -> dict[str, Any] | None:
    """The best point of a test curve: every distinct confidence tried as the threshold (an
    oracle), the most correct containment with false containment of all questions within the
    target (of equals, the highest threshold)."""
    confidence = np.array([o.confidence for o in results])
    closable = np.array([o.containable and not o.ruled and o.predicted != OOS for o in results])
    right = np.array([o.predicted == o.label for o in results]) & closable
    wrong = closable & ~right
    in_scope = sum(o.label != OOS for o in results)
    order = np.argsort(-confidence, kind="stable")
    c = confidence[order]
    right_sum, wrong_sum = np.cumsum(right[order]), np.cumsum(wrong[order])
    last = np.flatnonzero(np.append(c[1:] != c[:-1], True))  # each threshold's last question
    ok = [(int(right_sum[i]), -float(c[i]), int(wrong_sum[i])) for i in last
          if wrong_sum[i] / len(results) <= target and right_sum[i] + wrong_sum[i] > 0]
    if not ok or not in_scope:
        return None
    hits, minus_threshold, misses = max(ok)
    return {"threshold": round(-minus_threshold, 4),
            "correct_containment": round(hits / in_scope, 4),
            "false_containment_of_all": round(misses / len(results), 4)}


def figures(report: EvalReport) -> dict[str, Any]:
    o = report.overall
    return {"threshold": o.threshold, "accuracy": round(o.accuracy, 4),
            "containment": round(o.containment, 4),
            "false_containment": round(o.false_containment, 4),
            "false_containment_of_all": round(o.false_containment_of_all, 4),
            "correct_containment": round(o.correct_containment, 4),
            "oos_recall": round(o.oos_recall, 4)}


def curve_point(s: Scores | None) -> dict[str, Any] | None:
    if s is None:
        return None
    return {"threshold": s.threshold, "correct_containment": round(s.correct_containment, 4),
            "false_containment_of_all": round(s.false_containment_of_all, 4)}


def mine_held_out(data: Path, dropped: list[str]) -> dict[str, Any]:
    """`peakroute bot mine` on the held-out intents' test questions (as if the bot had escalated
    them as not understood): its clusters against their true intents."""
    with (data / "test.csv").open(newline="", encoding="utf-8") as f:
        rows = [(r["text"], r["category"]) for r in csv.DictReader(f) if r["category"] in dropped]
    started = time.perf_counter()
    mined = mine([t for t, _ in rows])
    truth = [c for _, c in rows]
    return {"questions": len(rows), "true_intents": len(set(truth)),
            "clusters": len(mined.clusters), "unclustered": mined.unclustered,
            "purity": round(purity(mined.assignments, truth), 4),
            "adjusted_rand_index": round(adjusted_rand_score(truth, mined.assignments), 4),
            "seconds": round(time.perf_counter() - started, 1)}


def run(data: Path, out: Path, target: float, with_mine: bool = False) -> dict[str, Any]:
    settings = Settings.from_env()
    train_csv, test_csv, dropped = prepare(data, out)
    result: dict[str, Any] = {"data": CITATION, "oos_intents": len(dropped), "target": target}

    started = time.perf_counter()
    print("== peakroute bot train (ours) ==", flush=True)
    ours = train_command(train_csv, out / "model", None, settings, target)
    result["ours_train_s"] = round(time.perf_counter() - started, 1)
    print("\n== peakroute bot eval (ours, test split) ==", flush=True)
    ours_report = eval_command(test_csv, settings, model=out / "model")

    started = time.perf_counter()
    print("\n== plain baseline: TF-IDF char 2-5 + word 1-2 n-grams, LogisticRegression ==",
          flush=True)
    plain = baseline_outcomes(train_csv, test_csv)
    result["baseline_train_s"] = round(time.perf_counter() - started, 1)

    rows = read_labelled(test_csv)
    result["ours"] = figures(ours_report) | {"validation": dict(ours.manifest.validation)}
    # The best points of the test curves (an oracle: never used to set a threshold).
    result["ours_best_in_hindsight"] = curve_point(best_at(outcomes(ours, rows, None), target))
    readings = {name: best_point(results, target)
                for name, results in plain.items()}
    result["baseline_best_by_reading"] = readings
    found = [r for r in readings.values() if r is not None]
    result["baseline_best"] = (max(found, key=lambda r: r["correct_containment"])
                               if found else None)
    if with_mine:
        print("\n== peakroute bot mine (held-out intents' test questions) ==", flush=True)
        result["mine"] = mine_held_out(data, dropped)
    if result["baseline_best"] is not None:
        result["gain_points"] = round(100 * (ours_report.overall.correct_containment
                                             - result["baseline_best"]["correct_containment"]),
                                      1)
    return result


def render(r: dict[str, Any]) -> str:
    def line(name: str, f: dict[str, Any]) -> str:
        return (f"  {name:9} threshold {f['threshold']:.2f}: closes correctly "
                f"{f['correct_containment']:.1%} of in-scope questions, false containment "
                f"of all {f['false_containment_of_all']:.1%}, accuracy {f['accuracy']:.1%}, "
                f"oos recall {f['oos_recall']:.1%}")

    out = [f"\nBANKING77, {r['oos_intents']} of 77 intents out of scope; false containment "
           f"of all questions <= {r['target']:.0%}:",
           line("ours", r["ours"]) + " (threshold chosen on validation)"]
    ours, base = r["ours_best_in_hindsight"], r["baseline_best"]
    if base:
        for name, point in r["baseline_best_by_reading"].items():
            if point is not None:
                out.append(f"  baseline  ({name} reading) best point of its test curve (oracle): "
                           f"threshold {point['threshold']:.4f}, closes correctly "
                           f"{point['correct_containment']:.1%}, false containment of all "
                           f"{point['false_containment_of_all']:.1%}")
        out.append(f"  ours is {r['gain_points']:+.1f} points above the better reading")
    if ours:
        out.append(f"  ours      best in hindsight: threshold {ours['threshold']:.2f}, "
                   f"{ours['correct_containment']:.1%} at "
                   f"{ours['false_containment_of_all']:.1%}")
    if "mine" in r:
        m = r["mine"]
        out.append(f"  bot mine on the {m['questions']} questions of the {m['true_intents']} "
                   f"held-out intents: {m['clusters']} clusters, purity {m['purity']:.2f}, "
                   f"adjusted Rand index {m['adjusted_rand_index']:.2f}")
    out.append(f"  data: {r['data']}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load_tests.banking77",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help=f"the dataset directory (default {DEFAULT_DATA})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="where the prepared CSVs and both models go")
    parser.add_argument("--target", type=float, default=TARGET,
                        help="false containment target for choosing thresholds")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON last")
    parser.add_argument("--mine", action="store_true",
                        help="also cluster the held-out intents' test questions with `bot "
                        "mine` and score the clusters (purity, adjusted Rand index)")
    args = parser.parse_args(argv)
    if not (args.data / "categories.json").exists():
        print(f"no BANKING77 at {args.data}: pass --data DIR", file=sys.stderr)
        return 2
    result = run(args.data, args.out, args.target, args.mine)
    print(render(result))
    if args.json:
        print(orjson.dumps(result).decode())
    ours = result["ours"]
    better = result.get("gain_points", 0.0) >= GAIN_POINTS
    return 0 if better and ours["false_containment_of_all"] <= args.target else 1


if __name__ == "__main__":
    sys.exit(main())
