"""Redis AUTH with an ACL user over TLS against a real redis-server, a worker that routes
through it, and no secret in the worker's log or the commands' output."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import trustme

from router.demo import WorkerProcess, wait_ready
from router.events import ContactArrived
from router.kafka import producer
from router.redis_client import redis_client, sync_redis_client
from router.routing import state as routing_state
from router.settings import Settings
from router.stack import StackProcess, free_port, redis_binary
from tests.conftest import eventually

PASSWORD = "acl-Pa55-" + uuid.uuid4().hex[:8]
# The ACL docs/DEPLOY.md recommends for the router's Redis user: its own keys, no more.
ROUTER_ACL = ["resetkeys", "~pr:*", "~pb:*", "resetchannels", "-@all", "+@read", "+@write",
              "+@scripting", "+@connection", "+info"]


@dataclass(frozen=True)
class TlsRedis:
    url: str
    ca_file: str


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    """redis-server with TLS only (no plaintext port), the default user off and one ACL user
    limited to the router's keys and commands."""
    d = tmp_path_factory.mktemp("tls-redis")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(d / "server.pem"))
    cert.private_key_pem.write_to_path(str(d / "server.key"))
    port = free_port()
    argv = [redis_binary(), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
            "--tls-cert-file", str(d / "server.pem"), "--tls-key-file", str(d / "server.key"),
            "--tls-ca-cert-file", str(d / "ca.pem"), "--tls-auth-clients", "no",
            "--save", "", "--appendonly", "no", "--dir", str(d),
            "--user", "default", "off",
            "--user", "router", "on", f">{PASSWORD}", *ROUTER_ACL]
    with (d / "redis.log").open("ab") as log:
        popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    proc = StackProcess("redis", popen.pid, argv[0])
    server = TlsRedis(f"rediss://127.0.0.1:{port}/0", str(d / "ca.pem"))
    client = sync_redis_client(settings_for(server))
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if popen.poll() is not None:
                    pytest.fail("this redis-server has no TLS support, which these tests need "
                                "(Debian's has it: apt-get install redis-server); its log: "
                                + (d / "redis.log").read_text()[-300:])
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield server
    finally:
        client.close()
        proc.stop()
        popen.wait()


def settings_for(server: TlsRedis, base: Settings | None = None, **changes: object) -> Settings:
    values: dict[str, object] = {"redis_url": server.url, "redis_username": "router",
                                 "redis_password": PASSWORD, "redis_ssl_cafile": server.ca_file}
    return (base or Settings()).replace(**{**values, **changes})


def test_a_client_from_settings_reaches_redis_over_tls_as_the_acl_user(
        tls_redis: TlsRedis) -> None:
    with sync_redis_client(settings_for(tls_redis)) as client:
        client.set("pr:probe", "1")
        assert client.get("pr:probe") == b"1"
        with pytest.raises(redis.exceptions.NoPermissionError):  # the ACL user, not default
            client.set("elsewhere", "1")


def test_a_wrong_password_is_refused_and_the_error_does_not_echo_it(tls_redis: TlsRedis) -> None:
    wrong = "wrong-" + PASSWORD
    with sync_redis_client(settings_for(tls_redis, redis_password=wrong)) as client, \
            pytest.raises(redis.AuthenticationError) as raised:
        client.ping()
    assert wrong not in str(raised.value)
    assert PASSWORD not in str(raised.value)


def test_the_server_certificate_is_verified(tls_redis: TlsRedis, tmp_path: Path) -> None:
    stranger = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(stranger))
    with sync_redis_client(settings_for(tls_redis, redis_ssl_cafile=str(stranger)),
                           socket_connect_timeout=3) as client, \
            pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        client.ping()


def test_plaintext_is_not_served(tls_redis: TlsRedis) -> None:
    plain = tls_redis.url.replace("rediss://", "redis://")
    with redis.Redis.from_url(plain, username="router", password=PASSWORD,
                              socket_connect_timeout=3, socket_timeout=3) as client, \
            pytest.raises(redis.ConnectionError):
        client.ping()


async def test_a_worker_handles_contacts_with_redis_over_tls_and_logs_no_secret(
        stack: Settings, tls_redis: TlsRedis, tmp_path: Path) -> None:
    # Topics and a consumer group of its own: the session's worker never sees these records.
    run = uuid.uuid4().hex[:6]
    topics = {f"topic_{role}": f"sec-{run}.{name}" for role, name in stack.topics.items()}
    settings = settings_for(tls_redis, stack, app_id=f"peakroute-sec-{run}", **topics)
    worker = WorkerProcess(settings, 0, tmp_path)
    try:
        await wait_ready([worker])
        domain = f"sec-{run}"
        contact_id = f"{domain}-c1"
        prod = producer(settings)
        await prod.start()
        try:
            event = ContactArrived(event_id=uuid.uuid4().hex, ts_ms=int(time.time() * 1000),
                                   contact_id=contact_id, domain=domain, customer_id="u1",
                                   text="where is my order")
            await prod.send_and_wait(settings.topic_contacts_inbound, event.to_json(),
                                     key=contact_id.encode())
        finally:
            await prod.stop()
        client = redis_client(settings)
        try:
            state = await eventually(
                lambda: routing_state.contact_state(client, domain, contact_id), timeout_s=60)
        finally:
            await client.aclose()
        assert state in ("contained", "escalating", "queued")
    finally:
        worker.stop()
    log = worker.log_path.read_text(errors="replace")
    assert log.strip(), "the worker wrote no log at all"
    assert PASSWORD not in log


def test_commands_print_no_secret_when_they_fail(tmp_path: Path) -> None:
    secret = "cli-Pa55-" + uuid.uuid4().hex[:8]
    env = {**os.environ, "PEAKROUTE_STATE_DIR": str(tmp_path),
           "PEAKROUTE_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
           "PEAKROUTE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
           "PEAKROUTE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
           "PEAKROUTE_KAFKA_SASL_USERNAME": "router", "PEAKROUTE_KAFKA_SASL_PASSWORD": secret,
           "PEAKROUTE_REDIS_URL": f"redis://router:{secret}@127.0.0.1:{free_port()}/0",
           "PEAKROUTE_LOG_LEVEL": "DEBUG"}
    for argv in (["topics"], ["stack", "status", "--json"]):
        done = subprocess.run([sys.executable, "-m", "router.cli", *argv], env=env,
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode != 0
        assert secret not in done.stdout + done.stderr

