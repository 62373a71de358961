"""A router cluster on this machine for the load tools: the embedded stack, N worker processes
of the same app (one consumer group sharing the partitions), simulated agents and a simulated
gateway; SIGKILL and restart a worker; per-process CPU from /proc."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from agents.client import AgentBus
from agents.simulated import AgentPool, Behaviour, roster
from load_tests.gateway import SimulatedGateway
from router.bot.loader import load_brain
from router.demo import WorkerProcess, wait_ready
from router.redis_client import redis_client
from router.settings import Settings
from router.stack import EmbeddedStack

DOMAIN = "shop-1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a process has used (Linux /proc), None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields_ = stat.rpartition(")")[2].split()
    return (int(fields_[11]) + int(fields_[12])) / CLOCK_TICKS  # utime, stime


def machine_busy_seconds() -> float:
    """CPU seconds every core of this machine spent busy since boot (/proc/stat)."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in first[1:9])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


@dataclass
class CpuMeter:
    """CPU used by named processes between start() and stop(); a role may span several
    processes (a worker that was killed and restarted)."""

    used: dict[str, float] = field(default_factory=dict)
    _open: dict[tuple[str, int], float] = field(default_factory=dict)
    started_at: float = 0.0
    wall_s: float = 0.0
    machine_busy_s: float = 0.0

    def start(self, pids: dict[str, int]) -> None:
        self.started_at = time.monotonic()
        self.machine_busy_s = -machine_busy_seconds()
        for role, pid in pids.items():
            self.watch(role, pid)

    def watch(self, role: str, pid: int) -> None:
        cpu = cpu_seconds(pid)
        if cpu is not None:
            self._open[(role, pid)] = cpu
            self.used.setdefault(role, 0.0)

    def sample(self) -> None:
        """Bank what each watched process used so far (call before killing one)."""
        for (role, pid), last in list(self._open.items()):
            cpu = cpu_seconds(pid)
            if cpu is None:
                del self._open[(role, pid)]
                continue
            self.used[role] += cpu - last
            self._open[(role, pid)] = cpu

    def stop(self) -> dict[str, float]:
        self.sample()
        self._open.clear()
        self.wall_s = time.monotonic() - self.started_at
        self.machine_busy_s += machine_busy_seconds()
        return self.used

    def shares(self) -> dict[str, float]:
        """Cores each role kept busy on average (1.0 = one core all the time), and what every
        other process on the machine used meanwhile (a shared machine's noise)."""
        wall = self.wall_s or 1.0
        out = {role: round(used / wall, 3) for role, used in sorted(self.used.items())}
        others = self.machine_busy_s - sum(self.used.values())
        out["other_processes"] = round(max(0.0, others) / wall, 3)
        out["machine_cores"] = os.cpu_count() or 1
        return out


@dataclass
class ClusterOptions:
    workers: int = 2
    partitions: int = 8
    agents: int = 40
    handle_mean_s: float = 3.0
    patience_s: float = 15.0
    bad_ratio: float = 0.005
    redis_aof: bool = False
    offer_timeout_s: float = 5.0
    redis_cluster: int = 0  # a Redis Cluster of this many primaries (0: one redis-server)
    redis_replicas: int = 0  # replicas per primary; with replicas the workers WAIT for one


class Cluster:
    """Everything a load tool needs, started and stopped together."""

    def __init__(self, state_dir: Path, opts: ClusterOptions) -> None:
        self.opts = opts
        base = Settings.from_env()
        self.base = base
        self.stack = EmbeddedStack(state_dir, partitions=opts.partitions,
                                   redis_aof=opts.redis_aof, redis_cluster=opts.redis_cluster,
                                   redis_replicas=opts.redis_replicas)
        self.settings = base
        self.workers: list[WorkerProcess] = []
        self.pool: AgentPool | None = None
        self.gateway: SimulatedGateway | None = None
        self.redis: aioredis.Redis | None = None
        self.cpu = CpuMeter()

    @property
    def log_dir(self) -> Path:
        return self.stack.state_dir / "logs"

    async def start(self, rate: float) -> Settings:
        await self.stack.start()
        self.settings = self.base.replace(
            **self.stack.recorded_settings(), state_dir=self.stack.state_dir,
            offer_timeout_s=self.opts.offer_timeout_s, timer_interval_s=0.2,
            # A batch is done once a replica has it: a primary killed then loses none of it.
            redis_wait_replicas=1 if self.opts.redis_replicas else 0,
        )
        # The bot's model, trained here once (cached under the state dir) instead of in every
        # worker at the same time.
        await asyncio.to_thread(load_brain, self.settings)
        self.workers = [WorkerProcess(self.settings, i, self.log_dir)
                        for i in range(self.opts.workers)]
        await wait_ready(self.workers)
        # The tool's own reads ride out the Redis restart it causes.
        self.redis = redis_client(self.settings, retry=Retry(ExponentialBackoff(1.0, 0.05), 8),
                                  retry_on_error=[RedisConnectionError, RedisTimeoutError])
        bus = AgentBus(self.settings)
        await bus.start()
        self.pool = AgentPool(bus, roster(self.opts.agents, DOMAIN), DOMAIN,
                              Behaviour(handle_mean_s=self.opts.handle_mean_s))
        await self.pool.start()
        self.gateway = SimulatedGateway(self.settings, rate=rate, domain=DOMAIN,
                                        patience_s=self.opts.patience_s,
                                        bad_ratio=self.opts.bad_ratio)
        await self.gateway.start()
        return self.settings

    def pids(self) -> dict[str, int]:
        roles = {p.name: p.pid for p in self.stack.processes}
        roles.update({f"worker-{i}": w.proc.pid for i, w in enumerate(self.workers)})
        roles["load_generator"] = os.getpid()  # gateway + simulated agents + this tool
        return roles

    def kill_worker(self, index: int) -> None:
        """SIGKILL: no shutdown, no commit, no leaving the group (a crash or an OOM kill)."""
        self.cpu.sample()
        proc = self.workers[index].proc
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
        proc.wait()

    async def restart_worker(self, index: int, *, wait: bool = True) -> None:
        self.workers[index] = WorkerProcess(self.settings, index, self.log_dir)
        self.cpu.watch(f"worker-{index}", self.workers[index].proc.pid)
        if wait:
            await wait_ready([self.workers[index]])

    async def restart_redis(self) -> float:
        self.cpu.sample()
        down_s = await self.stack.restart_redis()
        redis_proc = next(p for p in self.stack.processes if p.name == "redis")
        self.cpu.watch("redis", redis_proc.pid)
        return down_s

    async def stop(self) -> None:
        if self.gateway is not None:
            with contextlib.suppress(Exception):
                await self.gateway.stop()
        if self.pool is not None:
            with contextlib.suppress(Exception):
                await self.pool.stop()
                await self.pool.bus.stop()
        if self.redis is not None:
            await self.redis.aclose()
        for w in self.workers:
            w.stop()
        self.stack.stop()


async def sleep_until(deadline: float) -> None:
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))
