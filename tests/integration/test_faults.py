"""The fault proof, short: at 100 contacts/s, on a stack of its own (real broker, real
redis-server with its append-only file, two real worker processes, the simulated gateway and
agents), every fault of load_tests.faults once (the connection resets 8 times), all within
90 s of wall time. Each fault must bite (the workers counted errors of its kind, or the killed
workers were restarted) and the books must hold: nothing lost, stranded or set not ready by an
offer its agent never saw, nobody accepted twice, the dead letters exactly the malformed
records sent, the counters equal to the audit log. Select it with ``-m faults``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from load_tests.faults import EXPECTED, SINGLE_FAULTS
from tests.conftest import repo_root

pytestmark = [pytest.mark.integration, pytest.mark.faults]
WALL_S = 90
CONTRACT = ("published", "terminal", "lost", "stranded", "phantom_not_ready", "double_assigned",
            "deadletters", "counters_match_audit", "faults")


def test_every_fault_bites_and_the_books_hold(tmp_path: Path, session_bot_model: str) -> None:
    # The session's model (tests/conftest.py): the proof's 90 s are for the proof, not for
    # training a model in each of its workers.
    env = {**os.environ, "PEAKROUTE_BOT_MODEL_DIR": session_bot_model}
    argv = [sys.executable, "-m", "load_tests.faults", "--rate", "100", "--duration", "10",
            "--warmup", "1", "--gap", "0.5", "--settle", "0.5", "--restart-after", "1",
            "--ready-timeout", "12", "--resets", "8", "--reset-every", "0.25", "--sleep", "11",
            "--patience", "8", "--drain", "12", "--state-dir", str(tmp_path), "--json"]
    try:
        done = subprocess.run(argv, cwd=repo_root(), env=env, capture_output=True, text=True,
                              timeout=WALL_S, check=False)
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        pytest.fail(f"the fault proof took more than {WALL_S} s:\n{err[-3000:]}")
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr[-3000:]
    result = orjson.loads(lines[-1])
    detail = f"{result}\n{done.stderr[-2000:]}"
    assert set(CONTRACT) <= set(result), detail
    assert result["published"] > 1000, detail
    assert list(result["faults"]) == list(SINGLE_FAULTS), detail  # one Redis: no cluster faults
    for fault in SINGLE_FAULTS:
        kinds = EXPECTED[fault]
        counted = result["faults"][fault]
        assert any(counted.get(kind, 0) > 0 for kind in kinds), f"{fault} did not bite\n{detail}"
    assert result["data_intact"] == {"redis_readonly": True, "redis_aof_restart": True}, detail
    assert result["unexpected_exits"] == [], detail
    assert result["lost"] == 0, detail
    assert result["terminal"] == result["published"], detail
    assert result["stranded"] == 0, detail
    assert result["phantom_not_ready"] == 0, detail
    assert result["double_assigned"] == 0, detail
    assert result["deadletters_as_sent"] is True, detail
    assert sum(result["deadletters"].values()) == result["accounting"]["malformed_sent"], detail
    assert result["counters_match_audit"] is True, detail
    assert result["ok"] is True, detail
    assert done.returncode == 0, detail
