"""Where `peakroute bot mine` reads the questions the bot did not close: a CSV (column `text`;
with a `reason` column, only its `not_understood` rows), or the routing.requests topic
(`routing.requested.v1` escalations with reason `not_understood`: the last customer turn of
each one's transcript), read from the beginning to the end offsets at the start, without a
consumer group. Customer text is returned, never logged.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from aiokafka import TopicPartition

from router.bot.policy import Reason
from router.bot.trainer import read_csv
from router.decode import Decoder
from router.events import RoutingRequested, Speaker
from router.kafka import consumer
from router.settings import Settings

NOT_UNDERSTOOD = Reason.NOT_UNDERSTOOD.value


def read_csv_questions(path: Path, reason: str = NOT_UNDERSTOOD) -> list[str]:
    """The `text` column (rows whose `reason`, if the CSV has that column, is ``reason``)."""
    columns, rows = read_csv(path, ("text",), "text` or `text,reason")
    texts = [(row.get("text") or "").strip() for _, row in rows
             if "reason" not in columns or (row.get("reason") or "").strip() == reason]
    return [t for t in texts if t]


def question_of(event: RoutingRequested) -> str:
    """The customer's last turn in an escalation's transcript ("" without one)."""
    for turn in reversed(event.transcript):
        if turn.speaker == Speaker.CUSTOMER and turn.text.strip():
            return turn.text.strip()
    return ""


async def read_topic_questions(settings: Settings, reason: str = NOT_UNDERSTOOD,
                               limit: int = 100_000, timeout_s: float = 60.0) -> list[str]:
    """Escalations with ``reason`` on routing.requests, from the beginning to the end offsets
    as they were at the start (at most ``limit`` questions, the most recent kept)."""
    topic = settings.topic_routing_requests
    cons = consumer(settings, group_id=None, auto_offset_reset="earliest")
    await cons.start()
    try:
        partitions = sorted(cons.partitions_for_topic(topic) or ())
        tps = [TopicPartition(topic, p) for p in partitions]
        if not tps:
            return []
        cons.assign(tps)
        await cons.seek_to_beginning(*tps)
        ends = await cons.end_offsets(tps)
        pending = {tp for tp in tps if ends[tp] > await cons.position(tp)}
        decoder = Decoder()
        out: list[str] = []
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            batches = await cons.getmany(timeout_ms=500, max_records=2000)
            for tp, records in batches.items():
                for record in records:
                    event = decoder.decode(record.value)
                    if isinstance(event, RoutingRequested) and event.reason == reason:
                        text = question_of(event)
                        if text:
                            out.append(text)
                    if record.offset + 1 >= ends[tp]:
                        pending.discard(tp)
            await asyncio.sleep(0)
        return out[-limit:]
    finally:
        await cons.stop()
