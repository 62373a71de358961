"""`peakroute bot train|eval|ask|mine`: the AI trainer's commands' arguments (router/cli.py adds
them). Light to import: the commands (scikit-learn) load only when one runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from router.bot.errors import LabelledDataError
from router.events import Language
from router.settings import Settings

CSV_HELP = ("CSV of labelled chat logs with columns text,intent (optional: language); an "
            "intent `oos` or empty means out of scope")


def add_parser(sub: Any) -> None:
    bot = sub.add_parser(
        "bot", help="train, evaluate, ask and mine the bot (the AI trainer's tools)",
        description="The bot classifies each customer question into an intent of the knowledge "
        "base (PEAKROUTE_BOT_KB_PATH, default: the packaged one), answers what it may close and "
        "hands the rest to a queue. See docs/BOT.md for the workflow.")
    actions = bot.add_subparsers(dest="action", required=True, metavar="ACTION")

    train = actions.add_parser(
        "train", help="train a model from labelled logs and/or the knowledge base",
        description="Train a model into --out. With a CSV: from its rows, merged with --kb's "
        "examples if given (an intent only in the CSV is containable unless the knowledge base "
        "says otherwise). Without a CSV: from the knowledge base alone. The confidence "
        "threshold is chosen on validation splits of the training data for "
        "--target-false-containment. A worker serves it with PEAKROUTE_BOT_MODEL_DIR=<out> "
        "and picks up a retrained model without a restart.")
    train.add_argument("labelled", nargs="?", type=Path, metavar="LABELLED.csv", help=CSV_HELP)
    train.add_argument("--out", type=Path, required=True, metavar="MODEL_DIR",
                       help="directory to write the model to (replaced atomically)")
    train.add_argument("--kb", type=Path, metavar="KB.yaml",
                       help="knowledge base to merge (without a CSV: default "
                       "PEAKROUTE_BOT_KB_PATH or the packaged one)")
    train.add_argument("--target-false-containment", type=float, default=None, metavar="RATIO",
                       help="the threshold keeps false containment of all questions (closed "
                       "wrongly / all) "
                       "at most this on validation (default "
                       "PEAKROUTE_BOT_TARGET_FALSE_CONTAINMENT, 0.02)")
    train.add_argument("--json", action="store_true", help="print the manifest as JSON")

    ev = actions.add_parser(
        "eval", help="containment, false containment, accuracy and a threshold sweep",
        description="Evaluate a model on labelled questions that it was not trained on, each "
        "as a contact's first message: accuracy on in-scope questions, containment (share the "
        "bot would close), false containment (share of its closures that are wrong: another "
        "intent or an out-of-scope question), out-of-scope recall, per language and per intent, "
        "and a sweep of thresholds to choose from (set it with PEAKROUTE_BOT_THRESHOLD).")
    ev.add_argument("labelled", type=Path, metavar="LABELLED.csv", help=CSV_HELP)
    ev.add_argument("--model", type=Path, metavar="MODEL_DIR",
                    help="default: the worker's model (PEAKROUTE_BOT_MODEL_DIR, else the "
                    "knowledge base's own, trained on first use)")
    ev.add_argument("--kb", type=Path, metavar="KB.yaml",
                    help="knowledge base for rules and containable intents (default: the "
                    "worker's, if the model was trained with one; none otherwise)")
    ev.add_argument("--threshold", type=float, default=None,
                    help="override the model's threshold (default PEAKROUTE_BOT_THRESHOLD, "
                    "0 = the model's)")
    ev.add_argument("--json", action="store_true",
                    help="print the report as one JSON object (last line)")

    mine_p = actions.add_parser(
        "mine", help="cluster the questions the bot did not close into candidate intents",
        description="The AI trainer's loop: group the questions the bot escalated as not "
        "understood into candidate intents, with counts, distinguishing terms and "
        "representative examples, printed as knowledge-base YAML to complete and paste "
        "under `intents:` (or JSON). Reads a CSV (column text; with a reason column, its "
        "not_understood rows) or the routing.requests topic (routing.requested.v1 with reason "
        "not_understood: each transcript's last customer turn).")
    mine_p.add_argument("source", nargs="?", type=Path, metavar="FILE.csv",
                        help="CSV of questions (column text, optional reason)")
    mine_p.add_argument("--from-topic", action="store_true",
                        help="read escalations from routing.requests (PEAKROUTE_KAFKA_* "
                        "settings), from the beginning to the current end")
    mine_p.add_argument("--min-size", type=int, default=3,
                        help="smallest cluster reported as a candidate (default 3)")
    mine_p.add_argument("--clusters", type=int, default=None, metavar="K",
                        help="number of clusters (default: chosen by silhouette)")
    mine_p.add_argument("--limit", type=int, default=100_000,
                        help="most recent questions to cluster (default 100000)")
    mine_p.add_argument("--timeout", type=float, default=60.0,
                        help="--from-topic: stop reading after this many seconds")
    mine_p.add_argument("--json", action="store_true", help="print one JSON object")

    ask_p = actions.add_parser("ask", help="what the bot would do with one question",
                               description="Classify one question as a contact's first "
                               "message: intent, confidence, and the bot's action.")
    ask_p.add_argument("text")
    ask_p.add_argument("--model", type=Path, metavar="MODEL_DIR", help="as for eval")
    ask_p.add_argument("--kb", type=Path, metavar="KB.yaml", help="default: the worker's")
    ask_p.add_argument("--language", choices=[lang.value for lang in Language],
                       help="default: guessed from the text")
    ask_p.add_argument("--vip", action="store_true", help="the customer is VIP")
    ask_p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from router.bot.commands import ask_command, eval_command, mine_command, train_command

    if args.action == "train":
        train_command(args.labelled, args.out, args.kb, settings,
                      args.target_false_containment, as_json=args.json)
    elif args.action == "eval":
        eval_command(args.labelled, settings, model=args.model, kb_path=args.kb,
                     threshold=args.threshold, as_json=args.json)
    elif args.action == "mine":
        if (args.source is None) == (not args.from_topic):
            raise LabelledDataError("give either a CSV of questions or --from-topic")
        mine_command(args.source, settings, from_topic=args.from_topic,
                     min_size=args.min_size, clusters=args.clusters, limit=args.limit,
                     timeout_s=args.timeout, as_json=args.json)
    else:
        ask_command(args.text, settings, model=args.model, kb_path=args.kb,
                    language=Language(args.language) if args.language else None,
                    vip=args.vip, as_json=args.json)
    return 0
