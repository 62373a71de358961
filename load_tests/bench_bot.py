"""Bot classification throughput on one core, in batches as the bot stage classifies them.

    python -m load_tests.bench_bot [--seconds 5] [--batch 1000] [--kb KB.yaml] [--model DIR]

Texts are the knowledge base's examples in both languages, with a random order number added to
a share of them (so they are not all seen verbatim). Prints one JSON line:
``classifications_per_s`` (the classifier's predict call) and ``decisions_per_s`` (classifier,
rules and policy: everything the stage computes per message besides Redis and Kafka).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import orjson
from threadpoolctl import threadpool_limits

from router.bot.classifier import IntentClassifier
from router.bot.kb import load_kb, resolve_kb_path
from router.bot.loader import kb_model, policy_config
from router.bot.policy import Context, decide
from router.bot.rules import Rules
from router.bot.text import detect_language
from router.settings import Settings

DEFAULT_BATCH = 1000
SEED = 7
ORDER_NUMBER_SHARE = 0.3


def texts_of(examples: list[str], n: int, rng: random.Random) -> list[str]:
    out = []
    for _ in range(n):
        text = rng.choice(examples)
        if rng.random() < ORDER_NUMBER_SHARE:
            text = f"{text} {rng.randrange(10**11, 10**12)}"
        out.append(text)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load_tests.bench_bot",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to measure each")
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="texts per call")
    parser.add_argument("--kb", type=Path, help="knowledge base (default: the worker's)")
    parser.add_argument("--model", type=Path, help="model dir (default: the KB's own)")
    args = parser.parse_args(argv)

    settings = Settings.from_env()
    kb = load_kb(args.kb or resolve_kb_path(settings.bot_kb_path))
    classifier = (IntentClassifier.load(args.model) if args.model
                  else kb_model(settings, kb)[0])
    rules, config = Rules.from_kb(kb), policy_config(settings, classifier)
    rng = random.Random(SEED)
    pool = texts_of([t for t, _ in kb.examples()], 20 * args.batch, rng)
    batches = [pool[i:i + args.batch] for i in range(0, len(pool), args.batch)]

    with threadpool_limits(limits=1):  # one core: BLAS and OpenMP pools of one thread
        classifier.predict_batch(batches[0])  # warm up
        n, started, i = 0, time.perf_counter(), 0
        while time.perf_counter() - started < args.seconds:
            n += len(classifier.predict_batch(batches[i % len(batches)]))
            i += 1
        classify_rate = n / (time.perf_counter() - started)

        n, started, i = 0, time.perf_counter(), 0
        while time.perf_counter() - started < args.seconds:
            batch = batches[i % len(batches)]
            for text, p in zip(batch, classifier.predict_batch(batch), strict=True):
                decide(rules.check(text), p, detect_language(text), Context(), kb, config)
            n += len(batch)
            i += 1
        decide_rate = n / (time.perf_counter() - started)

    print(orjson.dumps({
        "classifications_per_s": round(classify_rate), "decisions_per_s": round(decide_rate),
        "batch": args.batch, "intents": len(classifier.intents), "threads": 1,
    }).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
