"""The evaluation maths of the bot, pure: containment, false containment, accuracy, out-of-scope
recall, per-intent precision and recall, a threshold sweep, and the choice of a threshold.

Definitions (docs/BOT.md), for labelled questions each handled as a first message:

* closed: the bot would answer and close it: no rule escalates it, the predicted intent is
  containable, and the confidence reaches the threshold;
* containment = closed / all questions;
* false containment = closed wrongly (another intent, or an out-of-scope question) / closed:
  the share of the bot's closures that are wrong (0 when it closes nothing);
* correct containment = closed with the right intent / in-scope questions;
* accuracy = top intent right / in-scope questions (no threshold);
* out-of-scope recall = out-of-scope questions below the threshold (or predicted out of scope)
  / out-of-scope questions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from router.events import Language

OOS = "oos"  # the label of an out-of-scope question in labelled data
SWEEP_GRID = tuple(round(0.05 * i, 2) for i in range(2, 20))  # 0.10 .. 0.95 for the table
PICK_GRID = tuple(round(0.01 * i, 2) for i in range(0, 100))  # 0.00 .. 0.99 for the choice


@dataclass(frozen=True, slots=True)
class Prediction:
    """The classifier's answer for one text."""

    intent: str  # the top intent (OOS if the model has that class and chose it)
    confidence: float  # its probability, 0..1


@dataclass(frozen=True, slots=True)
class Outcome:
    """One labelled question as the bot handled it."""

    label: str  # the true intent, or OOS
    predicted: str  # the classifier's top intent (may be OOS if the model has that class)
    confidence: float
    containable: bool  # the predicted intent may be closed by the bot
    ruled: bool = False  # a rule escalated it (asks for a person, anger): never closed
    language: Language = Language.ZH

    def closed(self, threshold: float) -> bool:
        return (not self.ruled and self.containable and self.predicted != OOS
                and self.confidence >= threshold)

    def understood(self, threshold: float) -> bool:
        return self.predicted != OOS and self.confidence >= threshold


@dataclass(frozen=True, slots=True)
class Scores:
    threshold: float
    n: int
    in_scope: int
    out_of_scope: int
    closed: int
    closed_wrongly: int
    accuracy: float
    containment: float
    false_containment: float
    false_containment_of_all: float  # closed wrongly / all questions
    correct_containment: float
    oos_recall: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def score(outcomes: Sequence[Outcome], threshold: float,
          weights: Sequence[float] | None = None) -> Scores:
    """The figures at ``threshold``. ``weights`` (per outcome) count a wrong closure that many
    times in the false containment of all questions (the trainer's correction for validation
    models that knew fewer intents); the other figures are unweighted."""
    n = len(outcomes)
    in_scope = [o for o in outcomes if o.label != OOS]
    oos = n - len(in_scope)
    closed = [o for o in outcomes if o.closed(threshold)]
    wrong = sum(o.predicted != o.label for o in closed)
    right_in_scope = len(closed) - wrong
    weighted_wrong = wrong if weights is None else sum(
        w for o, w in zip(outcomes, weights, strict=True)
        if o.closed(threshold) and o.predicted != o.label)
    return Scores(
        threshold=threshold, n=n, in_scope=len(in_scope), out_of_scope=oos,
        closed=len(closed), closed_wrongly=wrong,
        accuracy=_ratio(sum(o.predicted == o.label for o in in_scope), len(in_scope)),
        containment=_ratio(len(closed), n),
        false_containment=_ratio(wrong, len(closed)),
        false_containment_of_all=weighted_wrong / n if n else 0.0,
        correct_containment=_ratio(right_in_scope, len(in_scope)),
        oos_recall=_ratio(sum(not o.understood(threshold) for o in outcomes if o.label == OOS),
                          oos),
    )


def sweep(outcomes: Sequence[Outcome], thresholds: Iterable[float] = SWEEP_GRID
          ) -> list[Scores]:
    return [score(outcomes, t) for t in sorted(set(thresholds))]


def pick_threshold(outcomes: Sequence[Outcome], target_false_containment: float,
                   grid: Sequence[float] = PICK_GRID,
                   weights: Sequence[float] | None = None) -> tuple[float, bool]:
    """The lowest threshold whose false containment of all questions is within the target
    (the most containment the target allows), and whether the target was met at all. If it
    never is, the threshold with the lowest false containment (the lowest of equals)."""
    scores = [score(outcomes, t, weights) for t in sorted(set(grid))]
    for s in scores:
        if s.false_containment_of_all <= target_false_containment:
            return s.threshold, True
    best = min(scores, key=lambda s: (s.false_containment_of_all, s.threshold))
    return best.threshold, False


@dataclass(frozen=True, slots=True)
class IntentScores:
    precision: float
    recall: float
    support: int  # labelled questions of this intent
    predicted: int  # questions the bot took for this intent (at the threshold)


def per_intent(outcomes: Sequence[Outcome], threshold: float) -> dict[str, IntentScores]:
    """Precision and recall per label, where a question below the threshold counts as OOS."""
    def taken(o: Outcome) -> str:
        return o.predicted if o.understood(threshold) else OOS

    labels = sorted({o.label for o in outcomes} | {taken(o) for o in outcomes})
    out: dict[str, IntentScores] = {}
    for label in labels:
        support = sum(o.label == label for o in outcomes)
        predicted = sum(taken(o) == label for o in outcomes)
        hits = sum(o.label == label and taken(o) == label for o in outcomes)
        out[label] = IntentScores(_ratio(hits, predicted), _ratio(hits, support), support,
                                  predicted)
    return out


def best_at(outcomes: Sequence[Outcome], max_false_containment: float,
            grid: Sequence[float] = PICK_GRID) -> Scores | None:
    """The sweep point with the most correct containment whose false containment of all
    questions is within the bound (an oracle over these outcomes: for reading a curve, not
    for choosing)."""
    ok = [s for s in sweep(outcomes, grid) if s.closed and
          s.false_containment_of_all <= max_false_containment]
    return max(ok, key=lambda s: (s.correct_containment, -s.threshold)) if ok else None


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else 0.0
