"""The cluster fault proof, short: load_tests.faults on a Redis Cluster of three primaries with
one replica each (its own stack: the real broker, six `redis-server --cluster-enabled yes`
nodes, two real workers that WAIT for a replica after each batch, the simulated gateway and
agents), at 100 contacts/s: a worker SIGKILLed and restarted, the slots of the live domain and
of live conversations moved to other primaries while contacts flow (resharding), then the
primary serving the live domain SIGKILLed until its replica takes over (failover). Nothing
lost, stranded or accepted twice, the dead letters exactly the malformed records sent, the
counters equal to the audit log."""

from __future__ import annotations

from pathlib import Path

import pytest

from load_tests.faults import CLUSTER_FAULTS
from tests.integration._proof import assert_books_hold, run_proof

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.cluster]
WALL_S = 150


def test_resharding_and_a_primary_killed_under_load_lose_nothing(
        tmp_path: Path, session_bot_model: str) -> None:
    result, detail, code = run_proof("load_tests.faults", [
        "--redis-cluster", "3", "--replicas", "1", "--rate", "100", "--duration", "10",
        "--warmup", "2", "--gap", "1", "--settle", "0.5", "--restart-after", "1",
        "--ready-timeout", "12", "--patience", "8", "--drain", "20", "--state-dir",
        str(tmp_path)], wall_s=WALL_S, model_dir=session_bot_model)
    assert result["redis_cluster"] == 3, detail
    assert result["replicas"] == 1, detail
    assert result["published"] > 1000, detail
    assert list(result["faults"]) == list(CLUSTER_FAULTS), detail
    assert all(result["faults_bit"].values()), detail
    reshard = result["fault_detail"]["cluster_reshard"]
    assert reshard["domains"]["shop-1"]["keys"] > 0, detail
    kill = result["fault_detail"]["cluster_primary_kill"]
    assert kill["promoted_port"] != kill["killed_port"], detail
    assert_books_hold(result, detail)
    assert result["ok"] is True, detail
    assert code == 0, detail
