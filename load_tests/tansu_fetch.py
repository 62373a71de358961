"""Reproduction of the embedded broker's fetch cost, without the router or the gateway: records
produced at a steady rate to a fresh Tansu broker, read by plain aiokafka consumers (no group,
each assigned its share of the partitions, from the end, as the gateway reads).

    python -m load_tests.tansu_fetch --readers 2 --used 8   # 4 partitions with records each
    python -m load_tests.tansu_fetch --readers 2 --used 2   # 1 each: the same records
    python -m load_tests.tansu_fetch --readers 1 --used 4   # one reader of 4
    python -m load_tests.tansu_fetch --readers 0            # produce only

Tansu's memory store keeps each produced batch as an object; a fetch that finds new records in
a partition lists every batch that partition ever stored, and is answered at once, so a reader
that keeps up fetches again at once and keeps a broker thread listing. The latency (record made
-> read) and the broker's CPU then grow with the partitions holding records per reader and with
the batches each holds (one per producer linger). Prints the latency per 5 s of sending; the
last line is one JSON object (docs/ARCHITECTURE.md, "Agent gateway").

    python -m load_tests.tansu_fetch --retention [--steps 4 --batches 3000]

asks whether anything bounds that growth: one partition of a topic created with
`retention.ms` 1000 gets `--batches` one-record batches per step, and after each step the time
from producing a record to reading it is taken (median of 5); then again past the retention
time, with the log's start offset; then DeleteRecords (what a retention job would send) below
the last record, and once more. The last line is one JSON object (docs/REHEARSAL.md, "Long runs
slow down").
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.queues
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic, RecordsToDelete
from aiokafka.partitioner import murmur2

from router.stack import _die_with_parent, broker_binary, free_port

TOPIC = "tansu-fetch"
Queue = multiprocessing.queues.Queue


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def keys_for(count: int, partitions: int, used: int) -> list[str]:
    """``count`` keys spread evenly over partitions 0 .. used-1 (Kafka's default partitioner)."""
    out: list[str] = []
    per: dict[int, int] = {}
    most = -(-count // used)
    j = 0
    while len(out) < count:
        key = f"k-{j}"
        j += 1
        part = (murmur2(key.encode()) & 0x7FFFFFFF) % partitions
        if part < used and per.get(part, 0) < most:
            per[part] = per.get(part, 0) + 1
            out.append(key)
    return out


async def _produce(boot: str, keys: list[str], rate: float, seconds: float,
                   linger_ms: int) -> None:
    prod = AIOKafkaProducer(bootstrap_servers=boot, linger_ms=linger_ms, acks="all")
    await prod.start()
    total, n, pad = int(rate * seconds), 0, "x" * 250
    started = time.perf_counter()
    try:
        while n < total:  # the records due by now, every 2 ms (as the gateway bench paces)
            due = min(total, int((time.perf_counter() - started) * rate) + 1)
            while n < due:
                value = orjson.dumps({"ts": time.time() * 1000, "n": n, "pad": pad})
                await prod.send(TOPIC, value, key=keys[n % len(keys)].encode())
                n += 1
            await asyncio.sleep(0.002)
        await prod.flush()
    finally:
        await prod.stop()


def producer_main(boot: str, keys: list[str], rate: float, seconds: float,
                  linger_ms: int) -> None:
    asyncio.run(_produce(boot, keys, rate, seconds, linger_ms))


async def _read(boot: str, parts: list[int], options: dict[str, int], seconds: float,
                out: Queue[Any]) -> None:
    cons = AIOKafkaConsumer(bootstrap_servers=boot, enable_auto_commit=False, **options)
    await cons.start()
    tps = [TopicPartition(TOPIC, p) for p in parts]
    cons.assign(tps)
    await cons.seek_to_end(*tps)
    for tp in tps:
        await cons.position(tp)
    out.put(("ready", None))
    seen: list[tuple[float, float]] = []  # (record made, ms until read)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            batches = await cons.getmany(timeout_ms=200, max_records=5000)
            now = time.time() * 1000
            for recs in batches.values():
                for rec in recs:
                    made = orjson.loads(rec.value)["ts"]
                    seen.append((made, now - made))
    finally:
        await cons.stop()
    out.put(("done", seen))


def reader_main(boot: str, parts: list[int], options: dict[str, int], seconds: float,
                out: Queue[Any]) -> None:
    asyncio.run(_read(boot, parts, options, seconds, out))


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 1)


def start_broker(boot: str, stderr: Any = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
    """A fresh Tansu broker listening on ``boot`` (its stderr to ``stderr``)."""
    return subprocess.Popen(
        [broker_binary(), "broker", "--listener-url", f"tcp://{boot}",
         "--advertised-listener-url", f"tcp://{boot}"],
        stdout=subprocess.DEVNULL, stderr=stderr,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None)


async def create_topic(boot: str, partitions: int, topic: str = TOPIC,
                       configs: dict[str, str] | None = None) -> None:
    """Create ``topic``, waiting up to 30 s for a broker just started to answer."""
    admin = AIOKafkaAdminClient(bootstrap_servers=boot)
    deadline = time.monotonic() + 30
    while True:
        try:
            await admin.start()
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1, topic_configs=configs)])
    finally:
        await admin.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    boot = f"127.0.0.1:{free_port()}"
    broker = start_broker(boot)
    ctx = multiprocessing.get_context("spawn")
    procs: list[multiprocessing.process.BaseProcess] = []
    try:
        asyncio.run(create_topic(boot, args.partitions))
        keys = keys_for(args.keys, args.partitions, args.used or args.partitions)
        out: Queue[Any] = ctx.Queue()
        options = {"fetch_max_wait_ms": args.fetch_wait_ms, "fetch_min_bytes": args.min_bytes}
        for i in range(args.readers):
            parts = [p for p in range(args.partitions) if p % args.readers == i]
            procs.append(ctx.Process(target=reader_main,
                                     args=(boot, parts, options, args.seconds + 8, out)))
            procs[-1].start()
        for _ in procs:
            out.get()
        broker_cpu, started = cpu_s(broker.pid), time.time() * 1000
        prod = ctx.Process(target=producer_main,
                           args=(boot, keys, args.rate, args.seconds, args.linger_ms))
        prod.start()
        prod.join()
        broker_cores = (cpu_s(broker.pid) - broker_cpu) / args.seconds
        seen: list[tuple[float, float]] = []
        for _ in procs:
            seen += out.get()[1]
        for proc in procs:
            proc.join()
        windows = {}
        for s in range(0, int(args.seconds), 5):
            ms = [v for made, v in seen if started + s * 1000 <= made < started + (s + 5) * 1000]
            windows[f"{s}-{s + 5}s"] = {"p50_ms": percentile(ms, 0.5),
                                         "p99_ms": percentile(ms, 0.99)}
        latencies = [v for _, v in seen]
        return {"readers": args.readers, "partitions": args.partitions,
                "partitions_with_records": args.used or args.partitions, "rate": args.rate,
                "seconds": args.seconds, "linger_ms": args.linger_ms,
                "fetch_wait_ms": args.fetch_wait_ms, "fetch_min_bytes": args.min_bytes,
                "sent": int(args.rate * args.seconds), "read": len(latencies),
                "p50_ms": percentile(latencies, 0.5), "p99_ms": percentile(latencies, 0.99),
                "max_ms": round(max(latencies), 1) if latencies else None,
                "broker_cores": round(broker_cores, 2), "by_5s": windows,
                "loadavg_1m": round(os.getloadavg()[0], 2)}
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        broker.terminate()
        broker.wait()


RETENTION_MS = 1000
RETENTION_TOPIC = f"{TOPIC}-retention"
FRESH_CAP_S = 10.0  # a record not read by then counts as this long


async def _fresh_ms(boot: str, topic: str, prod: AIOKafkaProducer, reads: int = 5) -> float:
    """Median time from producing one record to reading it, from the partition's end."""
    cons = AIOKafkaConsumer(bootstrap_servers=boot, enable_auto_commit=False,
                            fetch_max_wait_ms=5)
    await cons.start()
    try:
        tp = TopicPartition(topic, 0)
        cons.assign([tp])
        await cons.seek_to_end(tp)
        await cons.position(tp)
        took = []
        for _ in range(reads):
            t0 = time.perf_counter()
            await prod.send_and_wait(topic, b"y", partition=0)
            while not (await cons.getmany(tp, timeout_ms=100)).get(tp):
                if time.perf_counter() - t0 > FRESH_CAP_S:
                    break
            took.append((time.perf_counter() - t0) * 1000)
        return percentile(took, 0.5) or 0.0
    finally:
        await cons.stop()


async def _offsets(boot: str, tp: TopicPartition) -> tuple[int, int]:
    """The partition's log start and end, as the broker lists them."""
    cons = AIOKafkaConsumer(bootstrap_servers=boot, enable_auto_commit=False)
    await cons.start()
    try:
        return ((await cons.beginning_offsets([tp]))[tp], (await cons.end_offsets([tp]))[tp])
    finally:
        await cons.stop()


async def _retention(boot: str, steps: int, batches: int) -> dict[str, Any]:
    """The growth, then retention and DeleteRecords tried on RETENTION_TOPIC (created)."""
    topic = RETENTION_TOPIC
    admin = AIOKafkaAdminClient(bootstrap_servers=boot)
    await admin.start()
    prod = AIOKafkaProducer(bootstrap_servers=boot, linger_ms=0)
    await prod.start()
    out: dict[str, Any] = {"retention_ms": RETENTION_MS, "batches_per_step": batches}
    try:
        growth = []
        for step in range(1, steps + 1):
            for _ in range(batches):  # one record per batch: one object in Tansu's store
                await prod.send_and_wait(topic, b"x" * 100, partition=0)
            growth.append({"batches": step * batches,
                           "fresh_record_ms": await _fresh_ms(boot, topic, prod)})
        out["growth"] = growth
        await asyncio.sleep(2 * RETENTION_MS / 1000)
        out["fresh_record_ms_past_retention"] = await _fresh_ms(boot, topic, prod)
        tp = TopicPartition(topic, 0)
        start, end = await _offsets(boot, tp)
        out["offsets_past_retention"] = {"start": start, "end": end}
        try:
            got = await asyncio.wait_for(admin.delete_records({tp: RecordsToDelete(end - 1)}),
                                         10)
            out["delete_records"] = {str(k): v for k, v in got.items()}
        except Exception as exc:  # the broker's answer is the finding
            out["delete_records"] = f"{type(exc).__name__}: {exc}"
        out["fresh_record_ms_after_delete_records"] = await _fresh_ms(boot, topic, prod)
        return out
    finally:
        await prod.stop()
        await admin.close()


def run_retention(args: argparse.Namespace) -> dict[str, Any]:
    boot = f"127.0.0.1:{free_port()}"
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"tansu-retention-{os.getpid()}.log"
    with log.open("wb") as err:
        broker = start_broker(boot, err)
    try:
        asyncio.run(create_topic(boot, 1, RETENTION_TOPIC,
                                 {"retention.ms": str(RETENTION_MS)}))
        result = asyncio.run(_retention(boot, args.steps, args.batches))
        result["broker_alive"] = broker.poll() is None
        said = log.read_text(errors="replace")
        result["broker_panicked"] = "panicked" in said
        result["broker_log"] = str(log)
        return result
    finally:
        broker.terminate()
        broker.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--partitions", type=int, default=8, help="partitions of the topic")
    parser.add_argument("--used", type=int, default=0,
                        help="partitions that get records, 0 .. used-1 (0: all)")
    parser.add_argument("--keys", type=int, default=8, help="record keys (as domains)")
    parser.add_argument("--readers", type=int, default=2,
                        help="consumers; reader i reads the partitions p with p %% readers == i")
    parser.add_argument("--rate", type=float, default=5000.0, help="records per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--linger-ms", type=int, default=5, help="the producer's linger")
    parser.add_argument("--fetch-wait-ms", type=int, default=5, help="the readers' fetch wait")
    parser.add_argument("--min-bytes", type=int, default=1, help="the readers' fetch_min_bytes")
    parser.add_argument("--retention", action="store_true",
                        help="whether retention or DeleteRecords bounds the growth (above)")
    parser.add_argument("--steps", type=int, default=4, help="--retention: steps")
    parser.add_argument("--batches", type=int, default=3000,
                        help="--retention: one-record batches per step")
    args = parser.parse_args(argv)
    result = run_retention(args) if args.retention else run(args)
    for name, value in result.items():
        print(f"{name:24} {value}", file=sys.stderr)
    print(orjson.dumps(result).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
