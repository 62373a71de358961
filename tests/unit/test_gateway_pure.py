"""The gateway's pure parts: frame parsing, the flood limiter, tokens, roster files, the demo
human's skills."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.errors import PeakrouteError
from router.gateway.auth import AuthError, Role, Verifier, hs256_secret, issue
from router.gateway.cli import parse_ttl
from router.gateway.demo import every_skill
from router.gateway.protocol import ClientType, ErrorCode, FloodGate, Frame, FrameError, parse
from router.gateway.roster import Profile, RosterError, check, parse_levels, read_file
from router.routing.config import policy_from_settings
from router.routing.policy import memberships
from router.settings import Settings

MAX = 4096


def test_a_valid_accept_parses_with_its_reference() -> None:
    frame = parse('{"type": "accept", "offer_id": "o42", "id": "c7"}', MAX)
    assert frame == Frame(ClientType.ACCEPT, {"type": "accept", "offer_id": "o42", "id": "c7"},
                          "c7")


@pytest.mark.parametrize(("raw", "code"), [
    ("", ErrorCode.MALFORMED),
    ("null", ErrorCode.MALFORMED),
    ('"hello"', ErrorCode.MALFORMED),
    ('{"type": null}', ErrorCode.MALFORMED),
    ('{"type": "HELLO", "token": "t"}', ErrorCode.UNKNOWN_TYPE),
    ('{"type": "hello"}', ErrorCode.INVALID_FIELD),
    ('{"type": "hello", "token": ""}', ErrorCode.INVALID_FIELD),
    ('{"type": "state", "state": "ready", "reason": 5}', ErrorCode.INVALID_FIELD),
    ('{"type": "set_agent_state", "agent_id": "a-1", "state": "ready"}', ErrorCode.INVALID_FIELD),
    ('{"type": "set_profile", "agent_id": "a-1", "skills": [1]}', ErrorCode.INVALID_FIELD),
    ('{"type": "complete", "contact_id": "' + "c" * 65 + '"}', ErrorCode.INVALID_FIELD),
    ('{"type": "ping", "pad": "' + "x" * MAX + '"}', ErrorCode.TOO_LARGE),
])
def test_bad_frames_are_named_errors(raw: str, code: ErrorCode) -> None:
    result = parse(raw, MAX)
    assert isinstance(result, FrameError)
    assert result.code == code


def test_size_counts_bytes_not_characters() -> None:
    raw = '{"type": "ping", "pad": "' + "退" * 1400 + '"}'  # 1400 chars, 4200 bytes
    assert len(raw) < MAX
    assert isinstance(parse(raw, MAX), FrameError)


@given(st.binary(max_size=300) | st.text(max_size=300))
def test_parsing_never_raises(raw: bytes | str) -> None:
    assert isinstance(parse(raw, MAX), Frame | FrameError)


def test_the_flood_gate_allows_the_burst_then_the_rate() -> None:
    gate = FloodGate(rate=10.0, burst=5)
    assert [gate.allow(100.0) for _ in range(7)] == [True] * 5 + [False] * 2
    assert gate.strikes == 2
    assert gate.allow(100.15)  # 0.15 s at 10/s buys one frame
    assert not gate.allow(100.15)


def test_refusals_far_apart_do_not_add_up_to_a_close() -> None:
    gate = FloodGate(rate=1.0, burst=1)
    assert gate.allow(0.0)
    assert not gate.allow(0.0)
    assert not gate.allow(0.1)
    assert gate.strikes == 2
    assert gate.allow(1.5)
    assert not gate.allow(30.0 - 28.4)  # within 10 s of the last refusal: it adds up
    assert gate.strikes == 3
    assert gate.allow(20.0)
    assert gate.allow(21.0)
    assert not gate.allow(21.0)  # more than 10 s after the last refusal: the count starts again
    assert gate.strikes == 1


@pytest.mark.parametrize(("text", "parts"), [
    ("", None), ("0-3", [0, 1, 2, 3]), ("4,5, 7", [4, 5, 7]), ("0-1,6", [0, 1, 6]),
])
def test_gateway_partitions_parse(tmp_path: Path, text: str, parts: list[int] | None) -> None:
    assert Settings(state_dir=tmp_path, gateway_partitions=text).gateway_partition_list() \
        == parts


@pytest.mark.parametrize("text", ["x", "3-1", "-2", "1,,2"])
def test_bad_gateway_partitions_are_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(PeakrouteError, match="PEAKROUTE_GATEWAY_PARTITIONS"):
        Settings(state_dir=tmp_path, gateway_partitions=text).validate()


def test_a_disabled_flag_survives_the_roster_json() -> None:
    p = Profile("a-1", {"zh": 1}, {"chat": 2}, "Li", disabled=True)
    assert Profile.from_json("a-1", p.to_json()).disabled is True
    assert Profile.from_json("a-1", b'{"skills": {}, "capacity": {}}').disabled is False


def _settings(tmp_path: Path, **extra: object) -> Settings:
    return Settings(state_dir=tmp_path, gateway_jwt_secret="s" * 40).replace(**extra)


def test_a_token_round_trips_with_role_and_domain(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    ident = Verifier(s).verify(issue(s, "sup-1", Role.SUPERVISOR, "shop-9", 60), "other")
    assert (ident.subject, ident.role, ident.domain) == ("sup-1", Role.SUPERVISOR, "shop-9")
    assert ident.expires_at_ms > time.time() * 1000


@pytest.mark.parametrize(("claims", "code"), [
    ({"role": "root"}, "invalid_token"),
    ({"sub": "has space"}, "invalid_token"),
    ({"dom": 5}, "invalid_token"),
    ({"exp": 1_000_000}, "token_expired"),
    ({"iss": "evil"}, "invalid_token"),
])
def test_tokens_with_bad_claims_are_refused(tmp_path: Path, claims: dict[str, object],
                                            code: str) -> None:
    s = _settings(tmp_path)
    now = int(time.time())
    base = {"sub": "a-1", "role": "agent", "dom": "shop-1", "iss": "peakroute",
            "aud": "peakroute-desktop", "iat": now, "exp": now + 60}
    token = jwt.encode({**base, **claims}, "s" * 40, algorithm="HS256")
    with pytest.raises(AuthError) as err:
        Verifier(s).verify(token, "shop-1")
    assert err.value.code == code


def test_the_embedded_secret_is_made_once_and_kept_private(tmp_path: Path) -> None:
    s = Settings(state_dir=tmp_path)
    first = hs256_secret(s)
    assert hs256_secret(s) == first
    assert len(first) >= 32
    assert (tmp_path / "gateway.secret").stat().st_mode & 0o077 == 0


def test_rs256_needs_a_key(tmp_path: Path) -> None:
    with pytest.raises(PeakrouteError, match="PEAKROUTE_GATEWAY_JWT_PUBLIC_KEY"):
        Verifier(Settings(state_dir=tmp_path, gateway_jwt_algorithm="RS256"))


def test_rs256_tokens_from_an_identity_provider_are_verified(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "idp.pem"
    pem.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    s = Settings(state_dir=tmp_path, gateway_jwt_algorithm="RS256",
                 gateway_jwt_public_key=str(pem))
    now = int(time.time())
    token = jwt.encode({"sub": "a-1", "dom": "shop-1", "iss": "peakroute",
                        "aud": "peakroute-desktop", "iat": now, "exp": now + 60}, key,
                       algorithm="RS256")
    assert Verifier(s).verify(token, "x").subject == "a-1"
    hs = jwt.encode({"sub": "a-1", "iat": now, "exp": now + 60}, "s" * 40, algorithm="HS256")
    with pytest.raises(AuthError):
        Verifier(s).verify(hs, "x")  # no algorithm confusion


def test_levels_parse_and_refuse() -> None:
    assert parse_levels("zh=2, refunds=1;general=3") == {"zh": 2, "refunds": 1, "general": 3}
    with pytest.raises(RosterError, match="name=number"):
        parse_levels("zh")
    with pytest.raises(RosterError, match="out_of_range"):
        check(Profile("a-1", {"zh": 0}), "shop-1")
    with pytest.raises(RosterError, match="invalid_value"):
        check(Profile("a-1", {"zh": 1}, {"fax": 1}), "shop-1")


def test_roster_files_in_csv_and_yaml(tmp_path: Path) -> None:
    csv = tmp_path / "r.csv"
    csv.write_text("agent_id,name,skills,capacity\na-1,Li,zh=2;refunds=1,chat=2;voice=1\n"
                   "a-2,,en=1,\n")
    assert read_file(csv) == [Profile("a-1", {"zh": 2, "refunds": 1}, {"chat": 2, "voice": 1},
                                      "Li"),
                              Profile("a-2", {"en": 1}, {"chat": 3}, "")]
    yml = tmp_path / "r.yaml"
    yml.write_text("agents:\n  - {agent_id: a-3, skills: {zh: 1}, capacity: {chat: 1}}\n")
    assert read_file(yml) == [Profile("a-3", {"zh": 1}, {"chat": 1})]
    bad = tmp_path / "bad.csv"
    bad.write_text("agent_id,skills\na-1,zh\n")
    with pytest.raises(RosterError, match=r"bad.csv:2"):
        read_file(bad)


def test_ttl_units() -> None:
    assert [parse_ttl(t) for t in ("90", "30m", "8h", "1d")] == [90, 1800, 28800, 86400]


def test_the_demo_human_can_serve_every_queue_of_the_shipped_policy() -> None:
    policy = policy_from_settings(Settings()).for_domain("shop-1")
    skills = every_skill(policy)
    served = {m.lane.partition(".")[0] for m in memberships(skills, policy) if m.ring == 0}
    assert served == set(policy.queues)


def test_an_offer_frame_says_preferred_and_whom_to_call_back() -> None:
    from router.events import AssignmentOffered, Channel
    from router.gateway.session import offer_frame
    offer = AssignmentOffered(event_id="e", ts_ms=1_800_000_000_000, offer_id="o1",
                              contact_id="c1", agent_id="a", domain="d",
                              channel=Channel.CALLBACK, expires_at_ms=1_800_000_020_000,
                              preferred=True, callback_to="tel:+8613800138000")
    frame = offer_frame(offer, None, 1_800_000_000_000)
    assert (frame["channel"], frame["preferred"], frame["callback_to"]) == (
        "callback", True, "tel:+8613800138000")
