"""The failover proof, short: two workers under load, each SIGKILLed and restarted, one stopped
gracefully and restarted, then both killed while contacts pile up (the re-delivered backlog),
then Redis restarted from its append-only file; every contact must end in exactly one
terminal state, none may be accepted by two agents, stranded with an agent who never saw its
offer or leave an agent not ready for an offer never seen; the dead letters must be the
malformed records sent and the counters must equal the audit log. The tool starts a stack of
its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from router.settings import RUNTIMES
from tests.conftest import repo_root

CONTRACT = ("published", "terminal", "lost", "stranded", "phantom_not_ready", "double_assigned",
            "deadletters", "counters_match_audit", "kills")


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_killed_and_restarted_workers_lose_nothing_and_assign_nothing_twice(
        tmp_path: Path, runtime: str, session_bot_model: str) -> None:
    argv = [sys.executable, "-m", "load_tests.failover", "--workers", "2", "--rate", "15",
            "--duration", "16", "--kills", "2", "--restart-after", "1", "--backlog", "3",
            "--drain", "150", "--state-dir", str(tmp_path), "--json"]
    # The session's model (tests/conftest.py): no worker trains its own.
    env = {**os.environ, "PEAKROUTE_RUNTIME": runtime, "PEAKROUTE_BOT_MODEL_DIR": session_bot_model}
    done = subprocess.run(argv, cwd=repo_root(), capture_output=True, text=True, timeout=290,
                          check=False, env=env)
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr[-3000:]
    result = orjson.loads(lines[-1])
    assert set(CONTRACT) <= set(result)
    detail = f"{result}\n{done.stderr[-2000:]}"
    assert result["published"] > 100, detail
    assert result["kills"] == 4, detail  # two single kills + both workers for the backlog
    assert result["lost"] == 0, detail
    assert result["double_assigned"] == 0, detail
    assert result["stranded"] == 0, detail
    assert result["phantom_not_ready"] == 0, detail
    assert result["deadletters_as_sent"] is True, detail
    assert result["counters_match_audit"] is True, detail
    assert result["terminal"] == result["published"], detail
    assert result["counted_once"], detail
    assert result["counters"]["invariant_violations"] == 0, detail
    assert result["graceful"]["restarts"] == 1, detail
    assert result["redis"]["restarts"] == 1, detail
    assert result["redis"]["state_intact"] is True, detail
    assert result["redis"]["contacts_checked"] > 0, detail
    assert done.returncode == 0, detail
