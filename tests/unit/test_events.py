from __future__ import annotations

import enum
import re
from dataclasses import MISSING, fields

import orjson
import pytest

from router.decode import Decoder
from router.events import EVENT_TYPES, Event, RoutingRequested, RoutingRequestedV2

from ._samples import SAMPLES

DECODER = Decoder()
CLASSES = list(EVENT_TYPES.values())
IDS = [cls.__name__ for cls in CLASSES]


def test_every_event_type_has_a_sample() -> None:
    assert set(SAMPLES) == set(CLASSES)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_event_round_trips_through_json_and_decoder(cls: type[Event]) -> None:
    event = SAMPLES[cls]
    decoded = DECODER.decode(event.to_json())
    assert decoded == event
    assert type(decoded) is cls


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_enum_fields_come_back_as_enums(cls: type[Event]) -> None:
    event = SAMPLES[cls]
    decoded = DECODER.decode(event.to_json())
    for f in fields(event):
        original = getattr(event, f.name)
        if isinstance(original, enum.Enum):
            value = getattr(decoded, f.name)
            assert type(value) is type(original), f.name
            assert value is original, f.name


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_to_dict_includes_type_equal_to_TYPE(cls: type[Event]) -> None:
    data = SAMPLES[cls].to_dict()
    assert data["type"] == cls.TYPE
    assert set(data) == {"type"} | {f.name for f in fields(cls)}


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_to_json_is_the_json_of_to_dict(cls: type[Event]) -> None:
    event = SAMPLES[cls]
    assert orjson.loads(event.to_json()) == orjson.loads(orjson.dumps(event.to_dict()))


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_event_with_only_required_fields_round_trips(cls: type[Event]) -> None:
    full = SAMPLES[cls].to_dict()
    required = {
        f.name: full[f.name] for f in fields(cls)
        if f.default is MISSING and f.default_factory is MISSING
    }
    event = cls(**required)
    assert DECODER.decode(event.to_json()) == event


def test_every_type_name_ends_with_its_version() -> None:
    for name, cls in EVENT_TYPES.items():
        assert name == cls.TYPE
        assert re.fullmatch(r"[a-z_.]+\.v[0-9]+", name), name


def test_a_newer_version_keeps_every_field_of_the_older_one() -> None:
    """routing.requested.v2 adds optional fields: a v1 consumer's fields mean the same."""
    old = {f.name: f.type for f in fields(RoutingRequested)}
    new = {f.name: f.type for f in fields(RoutingRequestedV2)}
    assert old.items() <= new.items()
    assert all(f.default is None for f in fields(RoutingRequestedV2) if f.name not in old)


def test_type_names_are_unique() -> None:
    names = [cls.TYPE for cls in CLASSES]
    assert len(names) == len(set(names)) == 22
