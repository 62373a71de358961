"""The AI trainer's tools as functions: read labelled chat logs, train a model (from the logs,
the knowledge base, or both), evaluate it (containment, false containment, accuracy,
out-of-scope recall, per intent, a threshold sweep), and ask it one question. Each returns
data; ``render_*`` turns it into the text the `peakroute bot` commands print.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from router.bot.classifier import IntentClassifier, ModelFactory, build_model, train
from router.bot.errors import LabelledDataError
from router.bot.kb import Escalation, KnowledgeBase
from router.bot.policy import Context, PolicyConfig, decide
from router.bot.rules import Rules
from router.bot.scoring import (
    OOS,
    SWEEP_GRID,
    IntentScores,
    Outcome,
    Prediction,
    Scores,
    per_intent,
    score,
    sweep,
)
from router.bot.text import detect_language
from router.events import Language, Tier

REQUIRED_COLUMNS = ("text", "intent")


@dataclass(frozen=True, slots=True)
class Labelled:
    """One row of a labelled CSV: a customer question and its intent (OOS: out of scope)."""

    text: str
    intent: str
    language: Language


def read_labelled(path: Path) -> list[Labelled]:
    """Rows of a CSV with columns ``text,intent`` (and optionally ``language``: zh or en,
    else guessed from the text). An empty intent or ``oos`` means out of scope."""
    _, rows = read_csv(path, REQUIRED_COLUMNS, "text,intent")
    if not rows:
        raise LabelledDataError(f"{path}: no rows after the header")
    return [_row(path, line, row) for line, row in rows]


def read_csv(path: Path, required: Sequence[str], example: str
             ) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    """A UTF-8 CSV's columns and its rows with their line numbers; every way it cannot be read
    is a LabelledDataError naming the file and the fix."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = list(reader.fieldnames or [])
            missing = [c for c in required if c not in columns]
            if missing:
                raise LabelledDataError(
                    f"{path}: line 1: no column {', '.join(missing)}; the first line must name "
                    f"the columns, e.g. `{example}`")
            rows = [(reader.line_num, row) for row in reader]
    except FileNotFoundError:
        raise LabelledDataError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise LabelledDataError(f"{path}: not UTF-8; save the CSV as UTF-8") from None
    except csv.Error as exc:
        raise LabelledDataError(f"{path}: not a valid CSV ({exc})") from None
    return columns, rows


def _row(path: Path, line: int, row: dict[str, Any]) -> Labelled:
    text = (row.get("text") or "").strip()
    if not text:
        raise LabelledDataError(f"{path}: line {line}: empty text; remove the row or fill it in")
    intent = (row.get("intent") or "").strip() or OOS
    raw_language = (row.get("language") or "").strip()
    if raw_language and raw_language not in Language._value2member_map_:
        raise LabelledDataError(f"{path}: line {line}: language {raw_language!r}; use "
                                f"{', '.join(lang.value for lang in Language)} or leave it empty")
    language = Language(raw_language) if raw_language else detect_language(text)
    return Labelled(text, intent, language)


def training_data(kb: KnowledgeBase | None, rows: Sequence[Labelled]
                  ) -> tuple[list[tuple[str, str]], dict[str, bool]]:
    """The knowledge base's examples plus the labelled rows, and which intents are
    containable: the knowledge base says so for its intents; an intent only in the rows is."""
    examples = kb.examples() if kb is not None else []
    examples += [(r.text, r.intent) for r in rows]
    known = kb.intents if kb is not None else {}
    containable = {label: known[label].containable if label in known else True
                   for _, label in examples if label != OOS}
    return examples, containable


def train_model(kb: KnowledgeBase | None, rows: Sequence[Labelled],
                target_false_containment: float, *, seed: int = 0,
                factory: ModelFactory = build_model) -> IntentClassifier:
    """Train on the knowledge base's examples and/or labelled rows. From a knowledge base
    alone, its `threshold` (if it sets one) is the model's; otherwise the threshold is chosen
    on validation splits for the false-containment target."""
    examples, containable = training_data(kb, rows)
    given = kb.threshold if kb is not None and not rows else None
    power = kb.neighbour_power if kb is not None and given is not None else None
    coverage = kb.coverage_power if kb is not None and given is not None else None
    own = kb.language_thresholds if kb is not None and given is not None else None
    return train(examples, containable, target_false_containment=target_false_containment,
                 kb_digest=kb.digest if kb is not None else "",
                 kb_source=kb.source if kb is not None else "", seed=seed, factory=factory,
                 threshold=given, neighbour_power=power, coverage_power=coverage,
                 language_thresholds=own,
                 handoffs=kb.handoff_examples() if kb is not None else (),
                 not_handoffs=not_handoffs(kb, examples) if kb is not None else None)


def not_handoffs(kb: KnowledgeBase, examples: Sequence[tuple[str, str]]) -> list[str]:
    """What the hand-off detector learns to leave to the classifier: every example except
    those of intents that go to the anger route's queue anyway (complaints: a complaint about
    a courier is both), out-of-scope ones included."""
    complaints = kb.routes[Escalation.ANGER].queue
    return [text for text, label in examples
            if label == OOS or label not in kb.intents or kb.intents[label].queue != complaints]


def outcomes(classifier: IntentClassifier, rows: Sequence[Labelled],
             kb: KnowledgeBase | None) -> list[Outcome]:
    """Each row as the bot would handle it as a contact's first message. With a knowledge base
    its rules apply (a question that asks for a person is never closed) and it decides which
    intents are containable; without one, the model's manifest does."""
    predictions = classifier.predict_batch([r.text for r in rows])
    rules = Rules.from_kb(kb, classifier.detector) if kb is not None else Rules.none()
    out = []
    for row, p in zip(rows, predictions, strict=True):
        hits = rules.check(row.text)
        out.append(Outcome(row.intent, p.intent, p.confidence, _containable(classifier, kb,
                                                                            p.intent),
                           hits.human_request or hits.anger, row.language))
    return out


def _containable(classifier: IntentClassifier, kb: KnowledgeBase | None, intent: str) -> bool:
    if kb is not None and intent in kb.intents:
        return kb.intents[intent].containable
    return classifier.containable(intent)


@dataclass(frozen=True, slots=True)
class EvalReport:
    model: str
    threshold: float
    overall: Scores
    by_language: dict[str, Scores]
    intents: dict[str, IntentScores]
    sweep: list[Scores]
    sweep_by_language: dict[str, list[Scores]]
    confusions: list[tuple[str, str, int]]  # (true intent, taken for, questions), most first

    def as_json(self) -> dict[str, Any]:
        o = self.overall
        return {
            "n": o.n, "accuracy": o.accuracy, "containment": o.containment,
            "false_containment": o.false_containment, "oos_recall": o.oos_recall,
            "correct_containment": o.correct_containment,
            "false_containment_of_all": o.false_containment_of_all,
            "threshold": self.threshold, "model": self.model,
            "by_language": {k: v.as_dict() for k, v in self.by_language.items()},
            "per_intent": {k: {"precision": v.precision, "recall": v.recall,
                               "support": v.support, "predicted": v.predicted}
                           for k, v in self.intents.items()},
            "sweep": [s.as_dict() for s in self.sweep],
            "sweep_by_language": {k: [s.as_dict() for s in v]
                                  for k, v in self.sweep_by_language.items()},
            "confusions": [{"intent": a, "taken_for": b, "questions": n}
                           for a, b, n in self.confusions],
        }


def evaluate(classifier: IntentClassifier, rows: Sequence[Labelled], kb: KnowledgeBase | None,
             threshold: float, model: str = "") -> EvalReport:
    results = outcomes(classifier, rows, kb)
    by_language = {lang.value: [o for o in results if o.language == lang]
                   for lang in sorted({o.language for o in results})}
    grid = (*SWEEP_GRID, threshold)
    return EvalReport(
        model=model, threshold=threshold, overall=score(results, threshold),
        by_language={k: score(v, threshold) for k, v in by_language.items()},
        intents=per_intent(results, threshold),
        sweep=sweep(results, grid),
        sweep_by_language={k: sweep(v, grid) for k, v in by_language.items()},
        confusions=confusions(results),
    )


def confusions(results: Sequence[Outcome], top: int = 20) -> list[tuple[str, str, int]]:
    """Which intents are taken for which (top intent, no threshold), in-scope questions only:
    the sibling intents whose examples or answers need a look (or a shared answer family)."""
    pairs = Counter((o.label, o.predicted) for o in results
                    if o.label != OOS and o.predicted not in (o.label, OOS))
    return [(a, b, n) for (a, b), n in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
            ][:top]


def render_eval(report: EvalReport) -> str:
    def pct(x: float) -> str:
        return f"{100 * x:6.1f} %"

    lines = [f"model {report.model}  threshold {report.threshold:.2f}", "",
             f"{'':8}{'n':>6} {'accuracy':>9} {'contained':>10} {'false cont':>10} "
             f"{'correct':>9} {'oos recall':>10}"]
    for name, s in [("all", report.overall), *report.by_language.items()]:
        lines.append(f"{name:8}{s.n:>6} {pct(s.accuracy):>9} {pct(s.containment):>10} "
                     f"{pct(s.false_containment):>10} {pct(s.correct_containment):>9} "
                     f"{pct(s.oos_recall):>10}")
    lines += ["", "contained = closed by the bot / all; false cont = closed wrongly / closed; "
              "correct = closed right / in scope", "",
              "threshold sweep (all questions; then contained / false cont per language):"]
    languages = list(report.sweep_by_language)
    lines.append(f"{'threshold':>9} {'contained':>10} {'false cont':>10} {'correct':>9} "
                 f"{'oos recall':>10}" + "".join(f" {lang:>17}" for lang in languages))
    for row, s in enumerate(report.sweep):
        mark = "  <- model" if abs(s.threshold - report.threshold) < 1e-9 else ""
        per_language = "".join(
            f" {pct(v[row].containment)} /{pct(v[row].false_containment)}"
            for v in report.sweep_by_language.values())
        lines.append(f"{s.threshold:>9.2f} {pct(s.containment):>10} "
                     f"{pct(s.false_containment):>10} {pct(s.correct_containment):>9} "
                     f"{pct(s.oos_recall):>10}{per_language}{mark}")
    if report.confusions:
        lines += ["", "intents taken for another (top intent, in-scope questions):"]
        lines += [f"  {n:>4}  {a} -> {b}" for a, b, n in report.confusions]
    lines += ["", f"{'intent':32} {'precision':>9} {'recall':>8} {'support':>8}"]
    for name, scores in report.intents.items():
        lines.append(f"{name[:32]:32} {pct(scores.precision):>9} {pct(scores.recall):>8} "
                     f"{scores.support:>8}")
    return "\n".join(lines)


def ask(classifier: IntentClassifier, kb: KnowledgeBase, config: PolicyConfig, text: str,
        language: Language | None = None, tier: Tier = Tier.NORMAL) -> dict[str, Any]:
    """What the bot would do with ``text`` as a contact's first message."""
    lang = language or detect_language(text)
    prediction: Prediction = classifier.predict_batch([text])[0]
    decision = decide(Rules.from_kb(kb, classifier.detector).check(text), prediction, lang,
                      Context(tier=tier), kb, config)
    return {
        "intent": prediction.intent, "confidence": round(prediction.confidence, 4),
        "threshold": config.threshold, "language": lang.value,
        "action": decision.action.value, "acted_on": decision.intent,
        "reason": decision.reason, "queue": decision.queue, "skills": dict(decision.skills),
        "priority": decision.priority, "reply": decision.reply,
    }


def render_ask(answer: dict[str, Any]) -> str:
    lines = [f"intent      {answer['intent']} (confidence {answer['confidence']:.3f}, "
             f"threshold {answer['threshold']:.2f}, language {answer['language']})"]
    if answer["action"] == "answered":
        lines.append(f"the bot     answers ({answer['acted_on']})")
    else:
        lines.append(f"the bot     hands off: reason {answer['reason']}, queue "
                     f"{answer['queue']}, priority {answer['priority']}"
                     + (f", skills {answer['skills']}" if answer["skills"] else ""))
    lines.append(f"reply       {answer['reply']}")
    return "\n".join(lines)
