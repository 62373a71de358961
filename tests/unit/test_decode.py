"""router.decode: every malformed input becomes a Rejection with its own reason; nothing raises."""

from __future__ import annotations

import base64
from dataclasses import fields
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.decode import (
    ID_RE,
    LABEL_MAX,
    MAX_LEVELS,
    TS_MAX_MS,
    TS_MIN_MS,
    Decoder,
    Limits,
    Reason,
    Rejection,
    dead_letter,
)
from router.events import (
    ACCEPTED_ON,
    EVENT_TYPES,
    AgentLoggedIn,
    AgentStateChanged,
    AssignmentOffered,
    BotReplied,
    Channel,
    ContactArrived,
    DeadLetter,
    Event,
    RoutingDecision,
    RoutingRequested,
)

from ._samples import SAMPLES

DECODER = Decoder()
FUZZ = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def fields_of(cls: type[Event] = ContactArrived, drop: tuple[str, ...] = (),
              **changes: Any) -> dict[str, Any]:
    data = SAMPLES[cls].to_dict()
    for name in drop:
        del data[name]
    data.update(changes)
    return data


def record(cls: type[Event] = ContactArrived, drop: tuple[str, ...] = (),
           **changes: Any) -> bytes:
    """A valid record of ``cls`` (from the shared samples) with some fields changed or dropped."""
    return orjson.dumps(fields_of(cls, drop, **changes))


def rejection(raw: bytes | None, role: str | None = None,
              decoder: Decoder = DECODER) -> Rejection:
    result = decoder.decode(raw, role)
    assert isinstance(result, Rejection), f"expected a rejection, got {result!r}"
    assert isinstance(result.detail, str)
    assert result.detail
    return result


def reason(raw: bytes | None, role: str | None = None, decoder: Decoder = DECODER) -> Reason:
    return rejection(raw, role, decoder).reason


def accepted(raw: bytes, role: str | None = None, decoder: Decoder = DECODER) -> Event:
    result = decoder.decode(raw, role)
    assert isinstance(result, Event), f"expected an event, got {result!r}"
    return result


def nested_arrays(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# --- every reason has an input that produces it ----------------------------------------------

EXAMPLE_FOR_REASON: dict[Reason, tuple[bytes, str | None]] = {
    Reason.EMPTY: (b"", None),
    Reason.TOO_LARGE: (b" " * (Limits().max_record_bytes + 1), None),
    Reason.NOT_UTF8: (b"\xff\xfe{}", None),
    Reason.INVALID_JSON: (b'{"type": "contact.arrived.v1"', None),
    Reason.TOO_DEEP: (nested_arrays(2000), None),
    Reason.NOT_AN_OBJECT: (b"[]", None),
    Reason.MISSING_TYPE: (b'{"event_id": "e"}', None),
    Reason.UNKNOWN_TYPE: (b'{"type": "contact.arrived.v9"}', None),
    Reason.UNEXPECTED_TYPE: (record(AgentLoggedIn), "contacts_inbound"),
    Reason.MISSING_FIELD: (record(drop=("contact_id",)), None),
    Reason.UNKNOWN_FIELD: (record(color="red"), None),
    Reason.WRONG_TYPE: (record(ts_ms="1700000000000"), None),
    Reason.INVALID_ID: (record(contact_id=""), None),
    Reason.TEXT_TOO_LONG: (record(text="x" * (Limits().max_text_chars + 1)), None),
    Reason.OUT_OF_RANGE: (record(ts_ms=TS_MIN_MS - 1), None),
    Reason.INVALID_VALUE: (record(channel="fax"), None),
}


def test_every_input_reason_has_an_example() -> None:
    assert set(EXAMPLE_FOR_REASON) == set(Reason) - {Reason.PROCESSING_FAILED}


@pytest.mark.parametrize("expected", list(EXAMPLE_FOR_REASON), ids=str)
def test_each_reason_is_produced_by_its_example(expected: Reason) -> None:
    raw, role = EXAMPLE_FOR_REASON[expected]
    assert reason(raw, role) is expected


def test_reasons_are_distinct_metric_labels() -> None:
    values = [r.value for r in Reason]
    assert len(values) == len(set(values))
    assert all(v == v.lower() and " " not in v for v in values)


# --- empty / too large / encoding / JSON syntax ----------------------------------------------

def test_empty_bytes_are_rejected_as_empty() -> None:
    assert reason(b"") is Reason.EMPTY


def test_a_tombstone_none_value_is_rejected_as_empty() -> None:
    assert reason(None) is Reason.EMPTY


def test_record_over_max_record_bytes_is_rejected_as_too_large() -> None:
    raw = record(text="x" * 3000)
    assert reason(raw, decoder=Decoder(Limits(max_record_bytes=len(raw) - 1))) is Reason.TOO_LARGE


def test_record_of_exactly_max_record_bytes_is_accepted() -> None:
    raw = record(text="x" * 3000)
    accepted(raw, decoder=Decoder(Limits(max_record_bytes=len(raw))))


def test_too_large_is_checked_before_parsing() -> None:
    raw = b"\xff" * (Limits().max_record_bytes + 1)
    assert reason(raw) is Reason.TOO_LARGE


def test_bytes_that_are_not_utf8_are_rejected_as_not_utf8() -> None:
    assert reason(b"\xff\xfe{\x00}") is Reason.NOT_UTF8


def test_invalid_utf8_inside_a_string_value_is_rejected_as_not_utf8() -> None:
    assert reason(record().replace(b"Where", b"Wh\xc3\x28re")) is Reason.NOT_UTF8


def test_truncated_json_is_rejected_as_invalid_json() -> None:
    raw = record()
    assert reason(raw[: len(raw) // 2]) is Reason.INVALID_JSON


def test_nan_is_rejected_as_invalid_json() -> None:
    assert reason(record().replace(b'"ts_ms":1700000000000', b'"ts_ms":NaN')) \
        is Reason.INVALID_JSON


def test_infinity_is_rejected_as_invalid_json() -> None:
    assert reason(b'{"type": "contact.arrived.v1", "ts_ms": Infinity}') is Reason.INVALID_JSON


def test_negative_infinity_is_rejected_as_invalid_json() -> None:
    assert reason(b"-Infinity") is Reason.INVALID_JSON


def test_number_overflowing_a_double_is_rejected_as_invalid_json() -> None:
    assert reason(b'{"ts_ms": 1e400}') is Reason.INVALID_JSON


def test_trailing_garbage_is_rejected_as_invalid_json() -> None:
    assert reason(record() + b"}x") is Reason.INVALID_JSON


def test_two_concatenated_objects_are_rejected_as_invalid_json() -> None:
    assert reason(record() + record()) is Reason.INVALID_JSON


def test_single_quoted_json_is_rejected_as_invalid_json() -> None:
    assert reason(b"{'type': 'contact.arrived.v1'}") is Reason.INVALID_JSON


def test_whitespace_only_is_rejected_as_invalid_json() -> None:
    assert reason(b"   \n") is Reason.INVALID_JSON


def test_lone_surrogate_escape_is_rejected_as_invalid_json() -> None:
    assert reason(record(text="PLACEHOLDER").replace(b"PLACEHOLDER", b"\\ud800")) \
        is Reason.INVALID_JSON


def test_invalid_json_detail_is_bounded() -> None:
    assert len(rejection(b"{" + b" " * 5000).detail) <= 200


def test_2000_nested_arrays_are_rejected_as_too_deep() -> None:
    assert reason(nested_arrays(2000)) is Reason.TOO_DEEP


def test_deep_nesting_inside_an_event_field_is_rejected_as_too_deep() -> None:
    raw = record(text="PLACEHOLDER").replace(b'"PLACEHOLDER"', b'{"a":' * 2000 + b"1" + b"}" * 2000)
    assert reason(raw) is Reason.TOO_DEEP


# --- top-level shape and type --------------------------------------------------------------

@pytest.mark.parametrize("raw", [b"[]", b'[{"type": "customer.left.v1"}]', b"42", b"-1.5",
                                 b'"contact.arrived.v1"', b"true", b"null"],
                         ids=["empty-list", "list-of-object", "int", "float", "string", "bool",
                              "null"])
def test_a_top_level_value_that_is_not_an_object_is_rejected_as_not_an_object(raw: bytes) -> None:
    assert reason(raw) is Reason.NOT_AN_OBJECT


def test_an_object_without_type_is_rejected_as_missing_type() -> None:
    assert reason(record(drop=("type",))) is Reason.MISSING_TYPE


def test_a_null_type_is_rejected_as_missing_type() -> None:
    assert reason(record(type=None)) is Reason.MISSING_TYPE


def test_an_unknown_version_is_rejected_as_unknown_type() -> None:
    assert reason(record(type="contact.arrived.v9")) is Reason.UNKNOWN_TYPE


def test_an_unknown_type_name_is_rejected_as_unknown_type() -> None:
    assert reason(record(type="contact.teleported.v1")) is Reason.UNKNOWN_TYPE


def test_type_names_are_case_sensitive() -> None:
    assert reason(record(type="CONTACT.ARRIVED.V1")) is Reason.UNKNOWN_TYPE


@pytest.mark.parametrize("value", [1, 1.5, True, [], ["contact.arrived.v1"], {"a": 1}, ""],
                         ids=["int", "float", "bool", "empty-list", "list", "object", "empty"])
def test_a_type_that_is_not_a_known_string_is_rejected_as_unknown_type(value: Any) -> None:
    assert reason(record(type=value)) is Reason.UNKNOWN_TYPE


def test_unknown_type_detail_is_bounded() -> None:
    assert len(rejection(record(type="x" * 10_000)).detail) < 200


def test_an_agent_event_on_contacts_inbound_is_rejected_as_unexpected_type() -> None:
    assert reason(record(AgentLoggedIn), role="contacts_inbound") is Reason.UNEXPECTED_TYPE


def test_a_contact_event_on_agents_events_is_rejected_as_unexpected_type() -> None:
    assert reason(record(ContactArrived), role="agents_events") is Reason.UNEXPECTED_TYPE


def test_a_deadletter_on_routing_requests_is_rejected_as_unexpected_type() -> None:
    assert reason(record(DeadLetter), role="routing_requests") is Reason.UNEXPECTED_TYPE


def test_an_unknown_role_accepts_no_type() -> None:
    assert reason(record(ContactArrived), role="no_such_role") is Reason.UNEXPECTED_TYPE


@pytest.mark.parametrize(("role", "cls"),
                         [(role, cls) for role, classes in ACCEPTED_ON.items() for cls in classes],
                         ids=lambda v: v if isinstance(v, str) else v.__name__)
def test_each_role_accepts_its_own_types(role: str, cls: type[Event]) -> None:
    assert accepted(record(cls), role=role) == SAMPLES[cls]


def test_unexpected_type_is_checked_before_the_fields() -> None:
    assert reason(record(AgentLoggedIn, drop=("agent_id",)), role="contacts_inbound") \
        is Reason.UNEXPECTED_TYPE


# --- fields: presence ----------------------------------------------------------------------

def test_a_missing_required_field_is_rejected_as_missing_field() -> None:
    result = rejection(record(drop=("contact_id",)))
    assert result.reason is Reason.MISSING_FIELD
    assert "contact_id" in result.detail


def test_a_missing_event_id_is_rejected_as_missing_field() -> None:
    assert reason(record(drop=("event_id",))) is Reason.MISSING_FIELD


def test_a_missing_optional_field_takes_its_default() -> None:
    event = accepted(record(drop=("channel", "language", "tier", "text")))
    assert isinstance(event, ContactArrived)
    assert (event.channel, event.language, event.tier, event.text) == ("chat", "zh", "normal", "")


def test_an_unknown_field_is_rejected_as_unknown_field() -> None:
    result = rejection(record(color="red"))
    assert result.reason is Reason.UNKNOWN_FIELD
    assert "color" in result.detail


def test_a_field_of_another_event_type_is_rejected_as_unknown_field() -> None:
    assert reason(record(ContactArrived, agent_id="a-1")) is Reason.UNKNOWN_FIELD


def test_unknown_field_detail_is_bounded() -> None:
    extra = {f"k{i}" + "x" * 500: 1 for i in range(100)}
    assert len(rejection(orjson.dumps({**fields_of(), **extra})).detail) < 300


# --- fields: types -------------------------------------------------------------------------

def test_ts_ms_as_string_is_rejected_as_wrong_type() -> None:
    assert reason(record(ts_ms="1700000000000")) is Reason.WRONG_TYPE


def test_ts_ms_as_float_is_rejected_as_wrong_type() -> None:
    assert reason(record(ts_ms=1_700_000_000_000.0)) is Reason.WRONG_TYPE


def test_ts_ms_as_bool_true_is_rejected_as_wrong_type() -> None:
    assert reason(record(ts_ms=True)) is Reason.WRONG_TYPE


def test_an_integer_too_big_for_64_bits_is_rejected_as_wrong_type() -> None:
    raw = record().replace(b"1700000000000", b"123456789012345678901234567890")
    assert reason(raw) is Reason.WRONG_TYPE


def test_skills_as_list_is_rejected_as_wrong_type() -> None:
    assert reason(record(RoutingRequested, skills=["zh", "refunds"])) is Reason.WRONG_TYPE


def test_a_skill_level_as_string_is_rejected_as_wrong_type() -> None:
    assert reason(record(RoutingRequested, skills={"zh": "1"})) is Reason.WRONG_TYPE


def test_capacity_as_number_is_rejected_as_wrong_type() -> None:
    assert reason(record(AgentLoggedIn, capacity=3)) is Reason.WRONG_TYPE


def test_text_as_number_is_rejected_as_wrong_type() -> None:
    assert reason(record(text=42)) is Reason.WRONG_TYPE


def test_an_id_as_number_is_rejected_as_wrong_type() -> None:
    assert reason(record(contact_id=42)) is Reason.WRONG_TYPE


def test_a_flag_as_integer_is_rejected_as_wrong_type() -> None:
    assert reason(record(AgentLoggedIn, ready=1)) is Reason.WRONG_TYPE


def test_a_flag_as_string_is_rejected_as_wrong_type() -> None:
    assert reason(record(RoutingDecision, within_target="true")) is Reason.WRONG_TYPE


def test_priority_as_float_is_rejected_as_wrong_type() -> None:
    assert reason(record(RoutingRequested, priority=1.0)) is Reason.WRONG_TYPE


# --- fields: ids -----------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["", "x" * 65, "a b", "a/b", "客户一", "a\nb", "a\x00b", "é"],
                         ids=["empty", "65-chars", "space", "slash", "chinese", "newline", "nul",
                              "accent"])
def test_a_bad_id_is_rejected_as_invalid_id(value: str) -> None:
    assert reason(record(contact_id=value)) is Reason.INVALID_ID


def test_an_id_of_64_chars_is_accepted() -> None:
    assert accepted(record(contact_id="x" * 64)).contact_id == "x" * 64  # type: ignore[attr-defined]


def test_an_id_may_use_every_allowed_punctuation() -> None:
    accepted(record(contact_id="A-z_0.9:x@y"))


def test_a_bad_event_id_is_rejected_as_invalid_id() -> None:
    assert reason(record(event_id="has space")) is Reason.INVALID_ID


def test_a_bad_skill_name_is_rejected_as_invalid_id() -> None:
    assert reason(record(RoutingRequested, skills={"退款": 1})) is Reason.INVALID_ID


def test_an_empty_skill_name_is_rejected_as_invalid_id() -> None:
    assert reason(record(AgentLoggedIn, skills={"": 1})) is Reason.INVALID_ID


def test_invalid_id_detail_does_not_echo_a_long_value() -> None:
    assert len(rejection(record(contact_id="/" * 5000)).detail) < 200


# --- fields: lengths -----------------------------------------------------------------------

def test_text_longer_than_max_text_chars_is_rejected_as_text_too_long() -> None:
    assert reason(record(text="x" * (Limits().max_text_chars + 1))) is Reason.TEXT_TOO_LONG


def test_text_of_exactly_max_text_chars_is_accepted() -> None:
    accepted(record(text="x" * Limits().max_text_chars))


def test_text_length_counts_characters_not_bytes() -> None:
    text = "快" * Limits().max_text_chars  # 3 bytes each in UTF-8
    assert accepted(record(text=text)).text == text  # type: ignore[attr-defined]


def test_a_label_longer_than_64_is_rejected_as_text_too_long() -> None:
    assert reason(record(BotReplied, intent="x" * (LABEL_MAX + 1))) is Reason.TEXT_TOO_LONG


def test_a_label_of_64_chars_is_accepted() -> None:
    accepted(record(AgentStateChanged, reason="x" * LABEL_MAX))


def test_labels_are_not_bound_by_max_text_chars() -> None:
    decoder = Decoder(Limits(max_text_chars=5))
    accepted(record(BotReplied, text="short", intent="x" * LABEL_MAX), decoder=decoder)


# --- fields: ranges ------------------------------------------------------------------------

def test_ts_ms_before_2015_is_rejected_as_out_of_range() -> None:
    assert reason(record(ts_ms=TS_MIN_MS - 1)) is Reason.OUT_OF_RANGE


def test_ts_ms_in_seconds_instead_of_milliseconds_is_rejected_as_out_of_range() -> None:
    assert reason(record(ts_ms=1_700_000_000)) is Reason.OUT_OF_RANGE


def test_ts_ms_after_2100_is_rejected_as_out_of_range() -> None:
    assert reason(record(ts_ms=TS_MAX_MS + 1)) is Reason.OUT_OF_RANGE


def test_ts_ms_at_both_bounds_is_accepted() -> None:
    accepted(record(ts_ms=TS_MIN_MS))
    accepted(record(ts_ms=TS_MAX_MS))


def test_negative_ts_ms_is_rejected_as_out_of_range() -> None:
    assert reason(record(ts_ms=-1)) is Reason.OUT_OF_RANGE


def test_expires_at_ms_out_of_range_is_rejected_as_out_of_range() -> None:
    assert reason(record(AssignmentOffered, expires_at_ms=0)) is Reason.OUT_OF_RANGE


def test_skill_level_0_is_rejected_as_out_of_range() -> None:
    assert reason(record(RoutingRequested, skills={"zh": 0})) is Reason.OUT_OF_RANGE


def test_skill_level_11_is_rejected_as_out_of_range() -> None:
    assert reason(record(AgentLoggedIn, skills={"zh": 11})) is Reason.OUT_OF_RANGE


def test_skill_levels_1_and_10_are_accepted() -> None:
    accepted(record(AgentLoggedIn, skills={"zh": 1, "en": 10}))


def test_capacity_33_is_rejected_as_out_of_range() -> None:
    assert reason(record(AgentLoggedIn, capacity={"chat": 33})) is Reason.OUT_OF_RANGE


def test_negative_capacity_is_rejected_as_out_of_range() -> None:
    assert reason(record(AgentLoggedIn, capacity={"chat": -1})) is Reason.OUT_OF_RANGE


def test_capacity_0_and_32_are_accepted() -> None:
    accepted(record(AgentLoggedIn, capacity={"chat": 0, "voice": 32}))


def test_priority_10_is_rejected_as_out_of_range() -> None:
    assert reason(record(RoutingRequested, priority=10)) is Reason.OUT_OF_RANGE


def test_negative_priority_is_rejected_as_out_of_range() -> None:
    assert reason(record(RoutingRequested, priority=-1)) is Reason.OUT_OF_RANGE


def test_more_than_32_skills_is_rejected_as_out_of_range() -> None:
    skills = {f"s{i}": 1 for i in range(MAX_LEVELS + 1)}
    assert reason(record(AgentLoggedIn, skills=skills)) is Reason.OUT_OF_RANGE


def test_exactly_32_skills_are_accepted() -> None:
    skills = {f"s{i}": 1 for i in range(MAX_LEVELS)}
    assert accepted(record(AgentLoggedIn, skills=skills)).skills == skills  # type: ignore[attr-defined]


def test_negative_waited_ms_is_rejected_as_out_of_range() -> None:
    assert reason(record(RoutingDecision, waited_ms=-1)) is Reason.OUT_OF_RANGE


def test_negative_source_offset_is_rejected_as_out_of_range() -> None:
    assert reason(record(DeadLetter, source_offset=-5)) is Reason.OUT_OF_RANGE


# --- fields: enumerations ------------------------------------------------------------------

def test_channel_fax_is_rejected_as_invalid_value() -> None:
    assert reason(record(channel="fax")) is Reason.INVALID_VALUE


def test_language_fr_is_rejected_as_invalid_value() -> None:
    assert reason(record(language="fr")) is Reason.INVALID_VALUE


def test_agent_state_sleeping_is_rejected_as_invalid_value() -> None:
    assert reason(record(AgentStateChanged, state="sleeping")) is Reason.INVALID_VALUE


def test_a_capacity_key_that_is_not_a_channel_is_rejected_as_invalid_value() -> None:
    assert reason(record(AgentLoggedIn, capacity={"fax": 1})) is Reason.INVALID_VALUE


def test_tier_gold_is_rejected_as_invalid_value() -> None:
    assert reason(record(tier="gold")) is Reason.INVALID_VALUE


def test_bot_action_unknown_is_rejected_as_invalid_value() -> None:
    assert reason(record(BotReplied, action="ignored")) is Reason.INVALID_VALUE


def test_routing_decision_unknown_is_rejected_as_invalid_value() -> None:
    assert reason(record(RoutingDecision, decision="teleported")) is Reason.INVALID_VALUE


def test_enum_values_are_case_sensitive() -> None:
    assert reason(record(channel="CHAT")) is Reason.INVALID_VALUE


def test_an_enum_given_as_a_list_is_rejected_as_invalid_value() -> None:
    assert reason(record(channel=["chat"])) is Reason.INVALID_VALUE


def test_an_enum_given_as_an_object_is_rejected_as_invalid_value() -> None:
    assert reason(record(channel={"chat": 1})) is Reason.INVALID_VALUE


def test_every_channel_is_accepted_as_a_capacity_key() -> None:
    capacity = {c.value: 1 for c in Channel}
    assert accepted(record(AgentLoggedIn, capacity=capacity)).capacity == capacity  # type: ignore[attr-defined]


# --- nulls ---------------------------------------------------------------------------------

def test_null_agent_id_on_routing_decision_is_accepted_as_none() -> None:
    event = accepted(record(RoutingDecision, agent_id=None, offer_id=None))
    assert isinstance(event, RoutingDecision)
    assert event.agent_id is None
    assert event.offer_id is None


def test_null_key_b64_on_deadletter_is_accepted_as_none() -> None:
    event = accepted(record(DeadLetter, key_b64=None))
    assert isinstance(event, DeadLetter)
    assert event.key_b64 is None


def test_null_for_a_required_id_is_rejected() -> None:
    assert reason(record(contact_id=None)) is Reason.WRONG_TYPE


def test_null_for_ts_ms_is_rejected() -> None:
    assert reason(record(ts_ms=None)) is Reason.WRONG_TYPE


def test_null_for_a_required_enum_is_rejected() -> None:
    assert isinstance(DECODER.decode(record(AgentStateChanged, state=None)), Rejection)


def test_null_for_a_defaulted_but_not_optional_field_is_rejected() -> None:
    assert reason(record(text=None)) is Reason.WRONG_TYPE


def test_null_for_a_non_nullable_flag_is_rejected() -> None:
    assert reason(record(RoutingDecision, within_target=None)) is Reason.WRONG_TYPE


# --- limits --------------------------------------------------------------------------------

def test_default_limits() -> None:
    assert Limits() == Limits(max_record_bytes=65_536, max_text_chars=4_000)
    assert DECODER.limits == Limits()


def test_custom_max_record_bytes_is_honoured() -> None:
    decoder = Decoder(Limits(max_record_bytes=100))
    assert reason(b"{" + b" " * 99 + b"}", decoder=decoder) is Reason.TOO_LARGE
    assert reason(b"{" + b" " * 98 + b"}", decoder=decoder) is Reason.MISSING_TYPE


def test_custom_max_text_chars_is_honoured() -> None:
    decoder = Decoder(Limits(max_text_chars=5))
    assert reason(record(text="123456"), decoder=decoder) is Reason.TEXT_TOO_LONG
    assert accepted(record(text="12345"), decoder=decoder).text == "12345"  # type: ignore[attr-defined]


def test_a_larger_max_text_chars_accepts_longer_text() -> None:
    decoder = Decoder(Limits(max_record_bytes=1_000_000, max_text_chars=10_000))
    accepted(record(text="x" * 10_000), decoder=decoder)


def test_decoders_with_different_limits_are_independent() -> None:
    small = Decoder(Limits(max_text_chars=5))
    raw = record(text="123456")
    assert reason(raw, decoder=small) is Reason.TEXT_TOO_LONG
    accepted(raw)


# --- the decoder never raises ----------------------------------------------------------------

@FUZZ
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_give_an_event_or_a_rejection(raw: bytes) -> None:
    assert isinstance(DECODER.decode(raw), Event | Rejection)


JSON_SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=80))
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=3),
    max_leaves=10,
)
FIELD_NAMES = sorted({f.name for cls in EVENT_TYPES.values() for f in fields(cls)} | {"type"})
KEYS = st.sampled_from(FIELD_NAMES) | st.text(max_size=10)


@st.composite
def json_objects(draw: st.DrawFn) -> dict[str, Any]:
    obj = draw(st.dictionaries(KEYS, JSON_VALUES, max_size=8))
    if draw(st.booleans()):
        obj["type"] = draw(st.sampled_from(sorted(EVENT_TYPES)))
    return obj


@FUZZ
@given(json_objects(), st.sampled_from([None, *ACCEPTED_ON]))
def test_arbitrary_json_objects_give_an_event_or_a_rejection(
    obj: dict[str, Any], role: str | None
) -> None:
    assert isinstance(DECODER.decode(orjson.dumps(obj), role), Event | Rejection)


@st.composite
def mutated_events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event with one to three fields replaced by arbitrary JSON (or removed)."""
    cls = draw(st.sampled_from(list(EVENT_TYPES.values())))
    data = SAMPLES[cls].to_dict()
    names = [n for n in data if n != "type"]
    for name in draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True)):
        if draw(st.booleans()):
            data[name] = draw(JSON_VALUES)
        else:
            del data[name]
    return data


@FUZZ
@given(mutated_events())
def test_valid_events_with_arbitrary_field_values_give_an_event_or_a_rejection(
    data: dict[str, Any],
) -> None:
    result = DECODER.decode(orjson.dumps(data))
    assert isinstance(result, Event | Rejection)
    if isinstance(result, Event):  # whatever is accepted re-encodes to an equal event
        assert DECODER.decode(result.to_json()) == result


def test_a_deeply_nested_type_value_is_rejected_not_raised() -> None:
    raw = b'{"type":' + nested_arrays(1000) + b"}"  # under orjson's 1024 depth limit
    assert reason(raw) is Reason.UNKNOWN_TYPE


def test_a_deeply_nested_enum_value_is_rejected_not_raised() -> None:
    raw = record(channel="PLACEHOLDER").replace(b'"PLACEHOLDER"', nested_arrays(1000))
    assert reason(raw) is Reason.INVALID_VALUE


# --- dead letters --------------------------------------------------------------------------

REJECTED = Rejection(Reason.INVALID_JSON, "unexpected end of data")


def letter_for(raw: bytes | None, key: bytes | None = b"c-1", *, topic: str = "contacts.inbound",
               partition: int = 3, offset: int = 12345, rejected: Rejection = REJECTED,
               now_ms: int = 1_700_000_000_123) -> DeadLetter:
    return dead_letter(raw, key, rejected, topic=topic, partition=partition, offset=offset,
                       now_ms=now_ms)


def test_dead_letter_keeps_the_original_bytes_exactly() -> None:
    raw = b'{"type": "contact.arrived.v1", "text": "\xe4\xbd\xa0\xe5\xa5\xbd"'
    assert base64.b64decode(letter_for(raw).original_b64, validate=True) == raw


def test_dead_letter_keeps_non_utf8_bytes_exactly() -> None:
    raw = b"\xff\xfe\x00\x01garbage\x80"
    assert base64.b64decode(letter_for(raw).original_b64, validate=True) == raw


def test_dead_letter_of_a_missing_value_has_empty_original() -> None:
    assert letter_for(None, rejected=Rejection(Reason.EMPTY, "no value")).original_b64 == ""


def test_dead_letter_key_b64_is_none_when_the_key_is_none() -> None:
    assert letter_for(b"x", key=None).key_b64 is None


def test_dead_letter_keeps_the_key_bytes_exactly() -> None:
    key = b"\xffkey\x00"
    letter = letter_for(b"x", key=key)
    assert letter.key_b64 is not None
    assert base64.b64decode(letter.key_b64, validate=True) == key


def test_dead_letter_of_an_empty_key_is_not_none() -> None:
    assert letter_for(b"x", key=b"").key_b64 == ""


def test_dead_letter_records_reason_detail_and_source() -> None:
    rejected = Rejection(Reason.UNKNOWN_FIELD, "unknown field(s): color")
    letter = letter_for(b"{}", rejected=rejected, topic="agents.events", partition=7, offset=99,
                        now_ms=1_700_000_000_999)
    assert letter.reason == "unknown_field"
    assert letter.detail == "unknown field(s): color"
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == \
        ("agents.events", 7, 99)
    assert letter.ts_ms == 1_700_000_000_999
    assert letter.TYPE == "deadletter.v1"


def test_dead_letter_event_id_is_a_valid_id() -> None:
    event_id = letter_for(b"x").event_id
    assert ID_RE.fullmatch(event_id)


def test_dead_letter_event_id_is_at_most_64_chars_for_a_long_topic() -> None:
    topic = "t." + "x" * 247  # Kafka's maximum topic name length is 249
    event_id = letter_for(b"x", topic=topic, partition=2**31 - 1, offset=2**62).event_id
    assert len(event_id) <= 64
    assert ID_RE.fullmatch(event_id)


def test_dead_letter_event_id_differs_by_offset() -> None:
    assert letter_for(b"x", offset=1).event_id != letter_for(b"x", offset=2).event_id


def test_dead_letter_is_stable_for_the_same_record() -> None:
    assert letter_for(b"x") == letter_for(b"x")


@pytest.mark.parametrize("expected", list(EXAMPLE_FOR_REASON), ids=str)
def test_dead_letter_of_each_rejection_decodes_back(expected: Reason) -> None:
    raw, role = EXAMPLE_FOR_REASON[expected]
    if expected is Reason.TOO_LARGE:
        raw = raw[: 40_000]  # base64 of a record over the limit is itself over the limit
        rejected = Rejection(Reason.TOO_LARGE, "big")
    else:
        rejected = rejection(raw, role)
    letter = letter_for(raw, rejected=rejected)
    assert DECODER.decode(letter.to_json()) == letter


@FUZZ
@given(st.binary(max_size=2000), st.none() | st.binary(max_size=100),
       st.integers(0, 2**31 - 1), st.integers(0, 2**62))
def test_dead_letter_of_any_rejected_bytes_decodes_back(
    raw: bytes, key: bytes | None, partition: int, offset: int
) -> None:
    result = DECODER.decode(raw)
    rejected = result if isinstance(result, Rejection) else Rejection(Reason.PROCESSING_FAILED, "x")
    letter = letter_for(raw, key, rejected=rejected, partition=partition, offset=offset)
    assert base64.b64decode(letter.original_b64) == raw
    assert len(letter.event_id) <= 64
    assert ID_RE.fullmatch(letter.event_id)
    assert DECODER.decode(letter.to_json()) == letter


# --- a value the caller parsed already ---------------------------------------------------------


def parses(raw: bytes) -> bool:
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return True


@pytest.mark.parametrize("raw", [record(cls) for cls in SAMPLES]
                         + [raw for raw, _ in EXAMPLE_FOR_REASON.values() if raw and parses(raw)],
                         ids=lambda raw: raw[:40].decode(errors="replace"))
def test_a_value_parsed_by_the_caller_decodes_as_its_bytes_do(raw: bytes) -> None:
    """The gateway parses a record to see whose it is, then has it checked without parsing it
    again: the same event, or the same rejection, as from the bytes alone."""
    parsed = orjson.loads(raw)
    for role in (None, "contacts_inbound"):
        assert DECODER.decode(raw, role, parsed=parsed) == DECODER.decode(raw, role)


def test_a_value_parsed_by_the_caller_is_not_parsed_again() -> None:
    parsed = fields_of(contact_id="from-the-caller")
    event = DECODER.decode(record(), parsed=parsed)
    assert isinstance(event, ContactArrived)
    assert event.contact_id == "from-the-caller"
    too_large = DECODER.decode(b" " * (Limits().max_record_bytes + 1), parsed=parsed)
    assert isinstance(too_large, Rejection)
    assert too_large.reason is Reason.TOO_LARGE  # the bytes' own checks still hold
