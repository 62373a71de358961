"""The cluster fault proof, short: load_tests.faults on a Redis Cluster of three primaries with
one replica each (its own stack: the real broker, six `redis-server --cluster-enabled yes`
nodes, two real workers that WAIT for a replica after each batch, the simulated gateway and
agents), at 100 contacts/s: a worker SIGKILLed and restarted, the slots of the live domain and
of live conversations moved to other primaries while contacts flow (resharding), then the
primary serving the live domain SIGKILLed until its replica takes over (failover). Nothing
lost, stranded or accepted twice, the dead letters exactly the malformed records sent, the
counters equal to the audit log."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from load_tests.faults import CLUSTER_FAULTS
from tests.conftest import repo_root

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.cluster]
WALL_S = 150


def test_resharding_and_a_primary_killed_under_load_lose_nothing(
        tmp_path: Path, session_bot_model: str) -> None:
    env = {**os.environ, "PEAKROUTE_BOT_MODEL_DIR": session_bot_model}
    argv = [sys.executable, "-m", "load_tests.faults", "--redis-cluster", "3", "--replicas",
            "1", "--rate", "100", "--duration", "10", "--warmup", "2", "--gap", "1",
            "--settle", "0.5", "--restart-after", "1", "--ready-timeout", "12",
            "--patience", "8", "--drain", "20", "--state-dir", str(tmp_path), "--json"]
    try:
        done = subprocess.run(argv, cwd=repo_root(), env=env, capture_output=True, text=True,
                              timeout=WALL_S, check=False)
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        pytest.fail(f"the cluster fault proof took more than {WALL_S} s:\n{err[-3000:]}")
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr[-3000:]
    result = orjson.loads(lines[-1])
    detail = f"{result}\n{done.stderr[-2000:]}"
    assert result["redis_cluster"] == 3, detail
    assert result["replicas"] == 1, detail
    assert result["published"] > 1000, detail
    assert list(result["faults"]) == list(CLUSTER_FAULTS), detail
    assert all(result["faults_bit"].values()), detail
    reshard = result["fault_detail"]["cluster_reshard"]
    assert reshard["domains"]["shop-1"]["keys"] > 0, detail
    kill = result["fault_detail"]["cluster_primary_kill"]
    assert kill["promoted_port"] != kill["killed_port"], detail
    assert result["unexpected_exits"] == [], detail
    assert result["lost"] == 0, detail
    assert result["terminal"] == result["published"], detail
    assert result["stranded"] == 0, detail
    assert result["phantom_not_ready"] == 0, detail
    assert result["double_assigned"] == 0, detail
    assert result["deadletters_as_sent"] is True, detail
    assert result["counters_match_audit"] is True, detail
    assert result["ok"] is True, detail
    assert done.returncode == 0, detail
