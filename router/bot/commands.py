"""The `peakroute bot` commands as functions: each computes, prints and returns its result
(load_tests/banking77.py calls them as they are). The argument parsing is in router.bot.cli.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson

from router.bot.classifier import IntentClassifier
from router.bot.errors import LabelledDataError
from router.bot.kb import KnowledgeBase, load_kb, resolve_kb_path
from router.bot.loader import load_brain, policy_config
from router.bot.mine_source import read_csv_questions, read_topic_questions
from router.bot.mining import MIN_SIZE, Mined, mine, to_yaml
from router.bot.mining import as_json as as_json_of
from router.bot.trainer import (
    EvalReport,
    ask,
    evaluate,
    read_labelled,
    render_ask,
    render_eval,
    train_model,
)
from router.events import Language, Tier
from router.settings import Settings


def train_command(labelled: Path | None, out: Path, kb_path: Path | None, settings: Settings,
                  target_false_containment: float | None = None, *, as_json: bool = False,
                  quiet: bool = False) -> IntentClassifier:
    if labelled is None:
        kb: KnowledgeBase | None = load_kb(kb_path or resolve_kb_path(settings.bot_kb_path))
    else:
        kb = load_kb(kb_path) if kb_path else None
    rows = read_labelled(labelled) if labelled else []
    target = target_false_containment or settings.bot_target_false_containment
    classifier = train_model(kb, rows, target)
    classifier.save(out)
    m = classifier.manifest
    if as_json:
        print(m.to_json(indent=False).decode())
    elif not quiet:
        v = m.validation
        containable = sum(m.containable.values())
        print(f"trained {m.examples} examples, {len(m.intents)} intents ({containable} "
              f"containable) -> {out}")
        if "threshold_from" in v:
            print(f"threshold {m.threshold:.2f} from the knowledge base")
        else:
            print(f"threshold {m.threshold:.2f} for false containment of all questions <= "
                  f"{target:.1%} on validation ({v.get('method')}: {v.get('questions')} "
                  f"questions, {v.get('out_of_scope_questions')} out of scope): correct "
                  f"containment {v.get('correct_containment', 0):.1%}, false containment of "
                  f"all {v.get('false_containment_of_all', 0):.1%}"
                  + ("" if v.get("target_met") else "  (target NOT met: lowest reached)"))
    return classifier


def _model_and_kb(settings: Settings, model: Path | None, kb_path: Path | None
                  ) -> tuple[IntentClassifier, KnowledgeBase | None, str]:
    if model is None:
        brain = load_brain(settings)
        kb = load_kb(kb_path) if kb_path else brain.kb
        return brain.classifier, kb, str(brain.model_dir)
    classifier = IntentClassifier.load(model)
    if kb_path:
        return classifier, load_kb(kb_path), str(model)
    if classifier.manifest.kb_digest:  # trained with a knowledge base: judge it with one
        return classifier, load_kb(resolve_kb_path(settings.bot_kb_path)), str(model)
    return classifier, None, str(model)


def eval_command(labelled: Path, settings: Settings, *, model: Path | None = None,
                 kb_path: Path | None = None, threshold: float | None = None,
                 as_json: bool = False, quiet: bool = False) -> EvalReport:
    classifier, kb, source = _model_and_kb(settings, model, kb_path)
    rows = read_labelled(labelled)
    t = threshold if threshold is not None else (settings.bot_threshold or classifier.threshold)
    report = evaluate(classifier, rows, kb, t, model=source)
    if as_json:
        print(orjson.dumps(report.as_json()).decode())
    elif not quiet:
        print(render_eval(report))
    return report


def mine_command(source: Path | None, settings: Settings, *, from_topic: bool = False,
                 min_size: int = MIN_SIZE, clusters: int | None = None, limit: int = 100_000,
                 timeout_s: float = 60.0, as_json: bool = False) -> Mined:
    """Cluster the questions the bot did not close (a CSV, or routing.requests) into
    candidate intents; print them as knowledge-base YAML, or JSON."""
    if from_topic:
        texts = asyncio.run(read_topic_questions(settings, limit=limit, timeout_s=timeout_s))
    elif source is not None:
        texts = read_csv_questions(source)[-limit:]
    else:
        raise LabelledDataError("give a CSV of questions or --from-topic")
    mined = mine(texts, min_size=min_size, k=clusters)
    if as_json:
        print(orjson.dumps(as_json_of(mined)).decode())
    else:
        print(to_yaml(mined), end="")
    return mined


def ask_command(text: str, settings: Settings, *, model: Path | None = None,
                kb_path: Path | None = None, language: Language | None = None,
                vip: bool = False, as_json: bool = False) -> dict[str, Any]:
    classifier, kb, _ = _model_and_kb(settings, model, kb_path)
    if kb is None:
        kb = load_kb(resolve_kb_path(settings.bot_kb_path))
    answer = ask(classifier, kb, policy_config(settings, classifier), text, language,
                 Tier.VIP if vip else Tier.NORMAL)
    print(orjson.dumps(answer).decode() if as_json else render_ask(answer))
    return answer
