"""Kafka SASL (SCRAM-SHA-512, PLAIN) and TLS, Redis ACL user, password and TLS: the client
arguments built from settings, the refusals of settings that cannot work, and no secret in a
repr, a status line or a log line."""

from __future__ import annotations

import io
import logging
import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme

from router import logs
from router.errors import SettingsError
from router.kafka import client_kwargs
from router.redis_client import connection_kwargs, redacted_url, redis_client
from router.settings import Settings
from router.transport import Transport

KAFKA_SECRET = "kafka-S3cret-pw"
REDIS_SECRET = "redis-S3cret-pw"
KEY_SECRET = "key-S3cret-pw"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def client_cert(ca: trustme.CA, tmp_path: Path) -> tuple[str, str]:
    cert = ca.issue_cert("peakroute-worker")
    cert_path, key_path = tmp_path / "client.pem", tmp_path / "client.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    return str(cert_path), str(key_path)


def scram(ca_file: str = "") -> Settings:
    return Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
                    kafka_sasl_username="router", kafka_sasl_password=KAFKA_SECRET,
                    kafka_ssl_cafile=ca_file)


# --- Kafka ---------------------------------------------------------------------------------

def test_scram_sha_512_over_tls_gives_aiokafka_the_mechanism_credentials_and_a_verifying_context(
        ca_file: str) -> None:
    kwargs = client_kwargs(scram(ca_file))
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "router"
    assert kwargs["sasl_plain_password"] == KAFKA_SECRET
    context = kwargs["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert len(context.get_ca_certs()) == 1  # the CA file, not the system store


def test_plain_over_sasl_plaintext_has_no_tls_context() -> None:
    settings = Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="PLAIN",
                        kafka_sasl_username="router", kafka_sasl_password=KAFKA_SECRET)
    kwargs = client_kwargs(settings)
    assert kwargs["sasl_mechanism"] == "PLAIN"
    assert "ssl_context" not in kwargs


def test_plaintext_passes_no_credentials() -> None:
    kwargs = client_kwargs(Settings())
    assert kwargs == {"bootstrap_servers": "127.0.0.1:9092", "security_protocol": "PLAINTEXT"}


def test_mutual_tls_loads_the_client_certificate(ca_file: str,
                                                 client_cert: tuple[str, str]) -> None:
    cert, key = client_cert
    settings = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=ca_file,
                        kafka_ssl_certfile=cert, kafka_ssl_keyfile=key)
    assert isinstance(client_kwargs(settings)["ssl_context"], ssl.SSLContext)


def test_a_client_key_that_does_not_match_fails_at_start(ca: trustme.CA, ca_file: str,
                                                         client_cert: tuple[str, str],
                                                         tmp_path: Path) -> None:
    other = tmp_path / "other.key"
    ca.issue_cert("someone-else").private_key_pem.write_to_path(str(other))
    settings = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=ca_file,
                        kafka_ssl_certfile=client_cert[0], kafka_ssl_keyfile=str(other))
    with pytest.raises(ssl.SSLError):
        client_kwargs(settings)


def _clients(transport: Transport) -> list[Any]:
    return [transport.consumer._client, transport.producer.client]


async def test_the_worker_consumes_and_produces_with_the_scram_credentials(ca_file: str) -> None:
    transport = Transport(scram(ca_file), {})
    for client in _clients(transport):
        assert client._security_protocol == "SASL_SSL"
        assert client._sasl_mechanism == "SCRAM-SHA-512"
        assert client._sasl_plain_username == "router"
        assert client._sasl_plain_password == KAFKA_SECRET
        assert client._ssl_context.verify_mode == ssl.CERT_REQUIRED


async def test_the_worker_gets_tls_without_sasl(ca_file: str) -> None:
    transport = Transport(Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=ca_file), {})
    for client in _clients(transport):
        assert client._security_protocol == "SSL"
        assert client._sasl_mechanism is None or client._sasl_mechanism == "PLAIN"
    for client in _clients(Transport(Settings(), {})):
        assert client._security_protocol == "PLAINTEXT"
        assert client._ssl_context is None


@pytest.mark.parametrize(("env", "names"), [
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "u"},
     "PEAKROUTE_KAFKA_SASL_PASSWORD"),
    ({"KAFKA_SASL_MECHANISM": "SCRAM-SHA-512"}, "PEAKROUTE_KAFKA_SASL_MECHANISM"),
    ({"KAFKA_SSL_CAFILE": "/ca.pem"}, "SSL or SASL_SSL"),
    ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CERTFILE": "/c.pem"},
     "PEAKROUTE_KAFKA_SSL_KEYFILE"),
    ({"REDIS_URL": "http://h:1"}, "rediss://"),
    ({"REDIS_SSL_CAFILE": "/ca.pem"}, "is not rediss://"),
    ({"REDIS_URL": "rediss://h:1/0", "REDIS_SSL_KEYFILE": "/k.pem"},
     "PEAKROUTE_REDIS_SSL_CERTFILE"),
])
def test_security_settings_that_cannot_work_are_refused_with_the_variable_to_fix(
        env: dict[str, str], names: str, tmp_path: Path) -> None:
    environ = {"PEAKROUTE_" + k: v for k, v in env.items()} | {
        "PEAKROUTE_STATE_DIR": str(tmp_path)}
    with pytest.raises(SettingsError, match=names):
        Settings.from_env(environ)


# --- Redis ---------------------------------------------------------------------------------

def test_the_redis_acl_user_and_password_come_from_settings() -> None:
    kwargs = connection_kwargs(Settings(redis_username="router", redis_password=REDIS_SECRET))
    assert kwargs == {"username": "router", "password": REDIS_SECRET}


def test_a_password_in_the_url_alone_is_left_to_the_url() -> None:
    assert connection_kwargs(Settings(redis_url="redis://:pw@h:1/0")) == {}


def test_rediss_verifies_the_server_with_the_configured_ca(ca_file: str,
                                                           client_cert: tuple[str, str]) -> None:
    settings = Settings(redis_url="rediss://h:6380/0", redis_ssl_cafile=ca_file,
                        redis_ssl_certfile=client_cert[0], redis_ssl_keyfile=client_cert[1])
    kwargs = connection_kwargs(settings)
    assert kwargs["ssl_cert_reqs"] == "required"
    assert kwargs["ssl_ca_certs"] == ca_file
    assert kwargs["ssl_certfile"] == client_cert[0]
    client = redis_client(settings)
    conn = client.connection_pool.connection_kwargs
    assert conn["ssl_ca_certs"] == ca_file
    assert conn["ssl_cert_reqs"] == "required"


def test_the_redis_client_takes_the_settings_password_over_the_urls() -> None:
    client = redis_client(Settings(redis_url="redis://:old@h:1/0", redis_password=REDIS_SECRET))
    assert client.connection_pool.connection_kwargs["password"] == REDIS_SECRET


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
    ("rediss://router:pw@h:6380/1", "rediss://router:***@h:6380/1"),
    ("redis://router@h:6379/0", "redis://router@h:6379/0"),
    ("redis://h:6379/0", "redis://h:6379/0"),
])
def test_redacted_url_hides_only_the_password(url: str, shown: str) -> None:
    assert redacted_url(url) == shown


# --- no secret in a repr or a log line -----------------------------------------------------

def secret_settings() -> Settings:
    return Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
                    kafka_sasl_username="router", kafka_sasl_password=KAFKA_SECRET,
                    kafka_ssl_key_password=KEY_SECRET, redis_username="router",
                    redis_password=REDIS_SECRET,
                    redis_url=f"rediss://router:{REDIS_SECRET}@h:6380/0")


def test_no_secret_in_the_settings_repr() -> None:
    text = repr(secret_settings()) + str(secret_settings())
    for secret in (KAFKA_SECRET, REDIS_SECRET, KEY_SECRET):
        assert secret not in text
    assert "redis_username='router'" in text


async def test_no_secret_in_a_log_line_that_carries_the_settings_or_a_client() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("peakroute.test_security")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        settings = secret_settings()
        transport = Transport(settings, {})
        logger.info("worker_configured", extra=logs.fields(
            settings=settings, consumer=transport.consumer, producer=transport.producer))
        logger.info("redis_client_built", extra=logs.fields(client=redis_client(settings)))
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "worker_configured" in text
    for secret in (KAFKA_SECRET, REDIS_SECRET, KEY_SECRET):
        assert secret not in text


@pytest.mark.parametrize(("url", "settings", "expected"), [
    ("redis://:old@h:1/0", {"redis_password": "new"}, "redis://h:1/0"),
    ("redis://u:old@h:1/0", {"redis_password": "new"}, "redis://u@h:1/0"),
    ("redis://u:old@h:1/0", {"redis_username": "v"}, "redis://:old@h:1/0"),
    ("redis://u:old@h:1/0", {}, "redis://u:old@h:1/0"),
])
def test_the_client_url_drops_only_what_the_settings_replace(
        url: str, settings: dict[str, str], expected: str) -> None:
    from router.redis_client import client_url

    assert client_url(Settings(redis_url=url, **settings)) == expected
