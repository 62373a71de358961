"""`peakroute stack up|status|down` as a user runs it: starts, answers, stops exactly what it
started; a parent that dies takes its stack with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from router.stack import StackProcess

pytestmark = pytest.mark.integration


def peakroute(state_dir: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PEAKROUTE_STATE_DIR": str(state_dir)}
    return subprocess.run([sys.executable, "-m", "router.cli", *args], env=env, text=True,
                          capture_output=True, timeout=timeout, check=False)


def recorded(state_dir: Path) -> list[StackProcess]:
    data = orjson.loads((state_dir / "stack.json").read_bytes())
    return [StackProcess(**p) for p in data["processes"]]


def test_stack_up_status_down_leaves_no_process(tmp_path: Path) -> None:
    up = peakroute(tmp_path, "stack", "up")
    assert up.returncode == 0, up.stderr
    procs = recorded(tmp_path)
    assert {p.name for p in procs} == {"broker", "redis"}
    try:
        status = peakroute(tmp_path, "stack", "status", "--json")
        assert status.returncode == 0, status.stderr
        body = orjson.loads(status.stdout)
        assert body["running"]
        assert body["kafka_answers"]
        assert body["redis_answers"]
        again = peakroute(tmp_path, "stack", "up")
        assert again.returncode == 2
        assert "already running" in again.stderr
    finally:
        down = peakroute(tmp_path, "stack", "down")
    assert down.returncode == 0, down.stderr
    assert not any(p.alive() for p in procs)
    assert not (tmp_path / "stack.json").exists()
    assert peakroute(tmp_path, "stack", "status").returncode == 1


def test_stack_dies_with_its_parent(tmp_path: Path) -> None:
    """A crash of the owning process (SIGKILL: no cleanup code runs) stops the stack too."""
    env = {**os.environ, "PEAKROUTE_STATE_DIR": str(tmp_path)}
    parent = subprocess.Popen(
        [sys.executable, "-m", "router.cli", "stack", "up", "--foreground"], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "stack.json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        procs = recorded(tmp_path)
        assert all(p.alive() for p in procs)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 10
    while any(p.alive() for p in procs) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(p.alive() for p in procs), "stack processes outlived their parent"
