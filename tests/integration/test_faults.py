"""The fault proof, short: at 100 contacts/s, on a stack of its own (real broker, real
redis-server with its append-only file, two real worker processes, the simulated gateway and
agents), every fault of load_tests.faults once (the connection resets 8 times), within 150 s of
wall time (it takes about 75 s). Each fault must bite (the workers counted errors of its kind,
or the killed workers were restarted) and the books must hold: nothing lost, stranded or set
not ready by an offer its agent never saw, nobody accepted twice, the dead letters exactly the
malformed records sent, the counters equal to the audit log. Select it with ``-m faults``."""

from __future__ import annotations

from pathlib import Path

import pytest

from load_tests.faults import EXPECTED, SINGLE_FAULTS
from tests.integration._proof import assert_books_hold, run_proof

pytestmark = [pytest.mark.integration, pytest.mark.faults]
WALL_S = 150
CONTRACT = ("published", "terminal", "lost", "stranded", "phantom_not_ready", "double_assigned",
            "deadletters", "counters_match_audit", "faults")


def test_every_fault_bites_and_the_books_hold(tmp_path: Path, session_bot_model: str) -> None:
    # The proof's time is for the proof, not for training a model in each of its workers.
    result, detail, code = run_proof("load_tests.faults", [
        "--rate", "100", "--duration", "10", "--warmup", "1", "--gap", "0.5", "--settle", "0.5",
        "--restart-after", "1", "--ready-timeout", "12", "--resets", "8", "--reset-every",
        "0.25", "--sleep", "11", "--patience", "8", "--drain", "12", "--state-dir",
        str(tmp_path)], wall_s=WALL_S, model_dir=session_bot_model)
    assert set(CONTRACT) <= set(result), detail
    assert result["published"] > 1000, detail
    assert list(result["faults"]) == list(SINGLE_FAULTS), detail  # one Redis: no cluster faults
    for fault in SINGLE_FAULTS:
        kinds = EXPECTED[fault]
        counted = result["faults"][fault]
        assert any(counted.get(kind, 0) > 0 for kind in kinds), f"{fault} did not bite\n{detail}"
    assert result["data_intact"] == {"redis_readonly": True, "redis_aof_restart": True}, detail
    assert_books_hold(result, detail)
    assert sum(result["deadletters"].values()) == result["accounting"]["malformed_sent"], detail
    assert result["ok"] is True, detail
    assert code == 0, detail
