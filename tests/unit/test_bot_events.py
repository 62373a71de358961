"""The bot's additions to the contract: the escalation's transcript and contact.closed.v1."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from router.decode import MAX_TURNS, Decoder, Limits, Reason, Rejection
from router.events import ContactClosed, RoutingRequested, Speaker, Turn

T = 1_795_500_000_000
DECODER = Decoder()


def request(transcript: Any) -> bytes:
    return orjson.dumps({"type": "routing.requested.v1", "event_id": "e1", "ts_ms": T,
                         "contact_id": "c1", "domain": "d1", "transcript": transcript})


def reason(raw: bytes) -> Reason:
    result = DECODER.decode(raw, "routing_requests")
    assert isinstance(result, Rejection), result
    return result.reason


def test_a_transcript_round_trips_as_turns() -> None:
    event = RoutingRequested(event_id="e1", ts_ms=T, contact_id="c1", domain="d1",
                             queue="refunds", confidence=0.75, transcript=(
                                 Turn(Speaker.CUSTOMER, "我要退款", T),
                                 Turn(Speaker.BOT, "正在为您转接", T + 1)))
    assert DECODER.decode(event.to_json(), "routing_requests") == event


def test_the_transcript_is_optional_and_empty_by_default() -> None:
    decoded = DECODER.decode(request([]), "routing_requests")
    assert isinstance(decoded, RoutingRequested)
    assert decoded.transcript == ()


@pytest.mark.parametrize(("transcript", "expected"), [
    ("hello", Reason.WRONG_TYPE),
    ([1], Reason.WRONG_TYPE),
    ([{"speaker": "agent", "text": "x", "ts_ms": T}], Reason.INVALID_VALUE),
    ([{"speaker": "bot", "text": "x"}], Reason.MISSING_FIELD),
    ([{"speaker": "bot", "text": "x", "ts_ms": T, "mood": "ok"}], Reason.UNKNOWN_FIELD),
    ([{"speaker": "bot", "text": 5, "ts_ms": T}], Reason.WRONG_TYPE),
    ([{"speaker": "bot", "text": "x", "ts_ms": 5}], Reason.OUT_OF_RANGE),
    ([{"speaker": "bot", "text": "x", "ts_ms": T}] * (MAX_TURNS + 1), Reason.OUT_OF_RANGE),
])
def test_a_bad_transcript_is_rejected(transcript: Any, expected: Reason) -> None:
    assert reason(request(transcript)) is expected


def test_a_turn_longer_than_the_text_limit_is_rejected() -> None:
    decoder = Decoder(Limits(max_text_chars=5))
    result = decoder.decode(request([{"speaker": "bot", "text": "x" * 6, "ts_ms": T}]))
    assert isinstance(result, Rejection)
    assert result.reason is Reason.TEXT_TOO_LONG


def test_contact_closed_round_trips_and_belongs_on_no_input_topic() -> None:
    event = ContactClosed(event_id="e2", ts_ms=T, contact_id="c1", domain="d1",
                          text="会话已结束", intent="logistics")
    assert DECODER.decode(event.to_json()) == event
    assert event.reason == "silence"
    rejected = DECODER.decode(event.to_json(), "contacts_inbound")
    assert isinstance(rejected, Rejection)
    assert rejected.reason is Reason.UNEXPECTED_TYPE
