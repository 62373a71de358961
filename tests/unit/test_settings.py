"""router.settings.Settings.from_env: defaults, conversion, the stack file, and secrets."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import orjson
import pytest

from router.errors import PeakrouteError, SettingsError
from router.settings import STACK_FILE, Settings, env_name


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An environment whose state dir is a fresh empty directory (no stack.json)."""
    return {"PEAKROUTE_STATE_DIR": str(tmp_path)}


def write_stack(state_dir: Path, settings: dict[str, object]) -> None:
    (state_dir / STACK_FILE).write_bytes(orjson.dumps({"settings": settings}))


def test_an_empty_environment_gives_the_defaults(env: dict[str, str], tmp_path: Path) -> None:
    assert Settings.from_env(env) == Settings(state_dir=tmp_path)


def test_default_values(env: dict[str, str]) -> None:
    s = Settings.from_env(env)
    assert s.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert s.kafka_security_protocol == "PLAINTEXT"
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.sla_target_s == 30.0
    assert s.sla_target_ms == 30_000
    assert s.max_record_bytes == 65_536
    assert s.max_text_chars == 4_000
    assert s.topic_partitions == 8


def test_the_state_dir_comes_from_the_environment(env: dict[str, str], tmp_path: Path) -> None:
    assert Settings.from_env(env).state_dir == tmp_path


def test_the_default_settings_are_valid() -> None:
    Settings().validate()


def test_sla_target_s_10_gives_10_seconds_and_10000_ms(env: dict[str, str]) -> None:
    s = Settings.from_env({**env, "PEAKROUTE_SLA_TARGET_S": "10"})
    assert s.sla_target_s == 10.0
    assert isinstance(s.sla_target_s, float)
    assert s.sla_target_ms == 10_000


def test_a_fractional_sla_target_is_converted_to_whole_ms(env: dict[str, str]) -> None:
    assert Settings.from_env({**env, "PEAKROUTE_SLA_TARGET_S": "0.25"}).sla_target_ms == 250


def test_an_integer_setting_is_converted(env: dict[str, str]) -> None:
    s = Settings.from_env({**env, "PEAKROUTE_TOPIC_PARTITIONS": "16"})
    assert s.topic_partitions == 16
    assert isinstance(s.topic_partitions, int)


def test_a_string_setting_is_taken_as_is(env: dict[str, str]) -> None:
    s = Settings.from_env({**env, "PEAKROUTE_KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092"})
    assert s.kafka_bootstrap_servers == "k1:9092,k2:9092"


def test_variables_without_the_prefix_are_ignored(env: dict[str, str]) -> None:
    assert Settings.from_env({**env, "SLA_TARGET_S": "1", "peakroute_sla_target_s": "2"}) \
        .sla_target_s == 30.0


@pytest.mark.parametrize(("name", "raw"), [
    ("PEAKROUTE_SLA_TARGET_S", "ten"),
    ("PEAKROUTE_SLA_TARGET_S", ""),
    ("PEAKROUTE_TOPIC_PARTITIONS", "8.5"),
    ("PEAKROUTE_TOPIC_PARTITIONS", "eight"),
    ("PEAKROUTE_WEB_PORT", "66o6"),
    ("PEAKROUTE_MAX_TEXT_CHARS", "4k"),
])
def test_a_bad_number_raises_settings_error_naming_the_variable(
    env: dict[str, str], name: str, raw: str
) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({**env, name: raw})


def test_settings_error_is_a_peakroute_error() -> None:
    assert issubclass(SettingsError, PeakrouteError)


def test_a_bad_security_protocol_raises_settings_error(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match="PEAKROUTE_KAFKA_SECURITY_PROTOCOL"):
        Settings.from_env({**env, "PEAKROUTE_KAFKA_SECURITY_PROTOCOL": "TLS"})


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"])
def test_each_supported_security_protocol_is_accepted(env: dict[str, str], protocol: str) -> None:
    credentials = ({"PEAKROUTE_KAFKA_SASL_USERNAME": "router",
                    "PEAKROUTE_KAFKA_SASL_PASSWORD": "pw"} if protocol.startswith("SASL") else {})
    s = Settings.from_env({**env, **credentials, "PEAKROUTE_KAFKA_SECURITY_PROTOCOL": protocol})
    assert s.kafka_security_protocol == protocol


def test_a_bad_sasl_mechanism_raises_settings_error(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match="PEAKROUTE_KAFKA_SASL_MECHANISM"):
        Settings.from_env({**env, "PEAKROUTE_KAFKA_SASL_MECHANISM": "GSSAPI"})


@pytest.mark.parametrize("name", ["PEAKROUTE_TOPIC_PARTITIONS", "PEAKROUTE_SLA_TARGET_S",
                                  "PEAKROUTE_MAX_RECORD_BYTES", "PEAKROUTE_MAX_TEXT_CHARS"])
def test_a_non_positive_value_raises_settings_error(env: dict[str, str], name: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({**env, name: "0"})


def test_a_bad_log_format_raises_settings_error(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match="PEAKROUTE_LOG_FORMAT"):
        Settings.from_env({**env, "PEAKROUTE_LOG_FORMAT": "xml"})


@pytest.mark.parametrize("raw", ["nan", "inf"])
def test_a_non_finite_sla_target_raises_settings_error(env: dict[str, str], raw: str) -> None:
    with pytest.raises(SettingsError, match="PEAKROUTE_SLA_TARGET_S"):
        Settings.from_env({**env, "PEAKROUTE_SLA_TARGET_S": raw})


# --- stack.json ----------------------------------------------------------------------------

def test_the_stack_file_in_the_state_dir_is_read(env: dict[str, str], tmp_path: Path) -> None:
    write_stack(tmp_path, {"kafka_bootstrap_servers": "127.0.0.1:1234",
                           "redis_url": "redis://127.0.0.1:5/0"})
    s = Settings.from_env(env)
    assert s.kafka_bootstrap_servers == "127.0.0.1:1234"
    assert s.redis_url == "redis://127.0.0.1:5/0"


def test_an_environment_variable_overrides_the_stack_file(
    env: dict[str, str], tmp_path: Path
) -> None:
    write_stack(tmp_path, {"kafka_bootstrap_servers": "127.0.0.1:1234",
                           "redis_url": "redis://127.0.0.1:5/0"})
    s = Settings.from_env({**env, "PEAKROUTE_KAFKA_BOOTSTRAP_SERVERS": "10.0.0.1:9092"})
    assert s.kafka_bootstrap_servers == "10.0.0.1:9092"
    assert s.redis_url == "redis://127.0.0.1:5/0"


def test_stack_file_values_are_converted_to_the_field_type(
    env: dict[str, str], tmp_path: Path
) -> None:
    write_stack(tmp_path, {"topic_partitions": 4, "sla_target_s": 12})
    s = Settings.from_env(env)
    assert s.topic_partitions == 4
    assert isinstance(s.topic_partitions, int)
    assert s.sla_target_s == 12.0
    assert isinstance(s.sla_target_s, float)


def test_unknown_keys_in_the_stack_file_are_ignored(env: dict[str, str], tmp_path: Path) -> None:
    write_stack(tmp_path, {"broker_pid": 4242, "redis_url": "redis://127.0.0.1:5/0"})
    assert Settings.from_env(env).redis_url == "redis://127.0.0.1:5/0"


def test_a_stack_file_without_settings_gives_the_defaults(
    env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / STACK_FILE).write_bytes(b'{"pid": 1}')
    assert Settings.from_env(env) == Settings(state_dir=tmp_path)


def test_a_corrupt_stack_file_raises_settings_error(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / STACK_FILE).write_bytes(b'{"settings": ')
    with pytest.raises(SettingsError, match=STACK_FILE):
        Settings.from_env(env)


def test_a_bad_value_in_the_stack_file_raises_settings_error(
    env: dict[str, str], tmp_path: Path
) -> None:
    write_stack(tmp_path, {"topic_partitions": "many"})
    with pytest.raises(SettingsError, match="PEAKROUTE_TOPIC_PARTITIONS"):
        Settings.from_env(env)


@pytest.mark.parametrize("content", [b"[]", b'{"settings": null}'])
def test_a_stack_file_of_the_wrong_shape_raises_settings_error(
    env: dict[str, str], tmp_path: Path, content: bytes
) -> None:
    (tmp_path / STACK_FILE).write_bytes(content)
    with pytest.raises(SettingsError):
        Settings.from_env(env)


def test_a_stack_file_in_another_dir_is_not_read(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    write_stack(other, {"redis_url": "redis://127.0.0.1:5/0"})
    empty = tmp_path / "empty"
    empty.mkdir()
    s = Settings.from_env({"PEAKROUTE_STATE_DIR": str(empty)})
    assert s.redis_url == Settings().redis_url


# --- topics, as_env, repr ------------------------------------------------------------------

def test_topics_maps_roles_to_topic_names(env: dict[str, str]) -> None:
    assert Settings.from_env(env).topics == {
        "contacts_inbound": "contacts.inbound",
        "bot_replies": "bot.replies",
        "routing_requests": "routing.requests",
        "agents_events": "agents.events",
        "assignments": "assignments",
        "routing_decisions": "routing.decisions",
        "deadletter": "deadletter",
    }


def test_topics_has_exactly_seven_entries_and_no_partition_count(env: dict[str, str]) -> None:
    topics = Settings.from_env(env).topics
    assert len(topics) == 7
    assert "partitions" not in topics
    assert "replication_factor" not in topics


def test_a_topic_name_can_be_changed_by_environment(env: dict[str, str]) -> None:
    s = Settings.from_env({**env, "PEAKROUTE_TOPIC_DEADLETTER": "peak.dlq"})
    assert s.topics["deadletter"] == "peak.dlq"


def test_every_role_a_decoder_accepts_is_a_topic() -> None:
    from router.events import ACCEPTED_ON

    assert set(ACCEPTED_ON) <= set(Settings().topics)


def test_as_env_names_every_field_with_the_prefix() -> None:
    env = Settings().as_env()
    assert set(env) == {env_name(f.name) for f in dataclasses.fields(Settings)}
    assert all(k.startswith("PEAKROUTE_") and k == k.upper() for k in env)
    assert all(isinstance(v, str) for v in env.values())


def test_as_env_round_trips_through_from_env_with_defaults(tmp_path: Path) -> None:
    s = Settings(state_dir=tmp_path)
    assert Settings.from_env(s.as_env()) == s


def test_as_env_round_trips_through_from_env_with_changed_values(tmp_path: Path) -> None:
    s = Settings(
        state_dir=tmp_path, kafka_bootstrap_servers="k1:9093,k2:9093",
        kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="router", kafka_sasl_password="s3cr3t=,;",
        redis_url="redis://:pw@10.0.0.5:6380/2", sla_target_s=12.5, topic_partitions=24,
        batch_within_s=0.005, web_port=7000, topic_deadletter="dlq", log_format="console",
    )
    assert Settings.from_env(s.as_env()) == s


def test_as_env_round_trip_ignores_a_stack_file(tmp_path: Path) -> None:
    write_stack(tmp_path, {"kafka_bootstrap_servers": "127.0.0.1:1234"})
    s = Settings(state_dir=tmp_path, kafka_bootstrap_servers="k:1")
    assert Settings.from_env(s.as_env()) == s


def test_passwords_do_not_appear_in_repr() -> None:
    s = Settings(kafka_sasl_password="kafka-Pa55word", redis_url="redis://:redis-Pa55word@h:1/0")
    text = repr(s)
    assert "kafka-Pa55word" not in text
    assert "redis-Pa55word" not in text
    assert "kafka_sasl_password" not in text
    assert "redis_url" not in text
    assert "kafka_bootstrap_servers" in text


def test_passwords_do_not_appear_in_str() -> None:
    s = Settings(kafka_sasl_password="kafka-Pa55word", redis_url="redis://:redis-Pa55word@h:1/0")
    assert "Pa55word" not in str(s)


def test_replace_returns_a_changed_copy() -> None:
    s = Settings()
    t = s.replace(sla_target_s=5.0)
    assert t.sla_target_ms == 5_000
    assert s.sla_target_s == 30.0


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().sla_target_s = 1.0  # type: ignore[misc]


@pytest.mark.parametrize("url", ["unix:///tmp/redis.sock", "redis://127.0.0.1:7000/2"])
def test_a_redis_cluster_needs_a_tcp_url_of_database_0(url: str) -> None:
    with pytest.raises(SettingsError, match="PEAKROUTE_REDIS_CLUSTER"):
        Settings(redis_url=url, redis_cluster=True).validate()


def test_a_redis_cluster_takes_any_node_of_it() -> None:
    Settings(redis_url="redis://127.0.0.1:7000", redis_cluster=True).validate()
    Settings(redis_url="redis://127.0.0.1:7000/0", redis_cluster=True).validate()
