"""The failover proof, short: two workers under load, each SIGKILLed and restarted, one stopped
gracefully and restarted, then both killed while contacts pile up (the re-delivered backlog),
then Redis restarted from its append-only file; every contact must end in exactly one
terminal state, none may be accepted by two agents, stranded with an agent who never saw its
offer or leave an agent not ready for an offer never seen; the dead letters must be the
malformed records sent and the counters must equal the audit log. The tool starts a stack of
its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.settings import RUNTIMES
from tests.integration._proof import assert_books_hold, run_proof

CONTRACT = ("published", "terminal", "lost", "stranded", "phantom_not_ready", "double_assigned",
            "deadletters", "counters_match_audit", "kills")


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_killed_and_restarted_workers_lose_nothing_and_assign_nothing_twice(
        tmp_path: Path, runtime: str, session_bot_model: str) -> None:
    result, detail, code = run_proof("load_tests.failover", [
        "--workers", "2", "--rate", "15", "--duration", "16", "--kills", "2",
        "--restart-after", "1", "--backlog", "3", "--drain", "150", "--state-dir",
        str(tmp_path)], wall_s=290, model_dir=session_bot_model,
        env={"PEAKROUTE_RUNTIME": runtime})
    assert set(CONTRACT) <= set(result), detail
    assert result["published"] > 100, detail
    assert result["kills"] == 4, detail  # two single kills + both workers for the backlog
    assert_books_hold(result, detail)
    assert result["counted_once"], detail
    assert result["counters"]["invariant_violations"] == 0, detail
    assert result["graceful"]["restarts"] == 1, detail
    assert result["redis"]["restarts"] == 1, detail
    assert result["redis"]["state_intact"] is True, detail
    assert result["redis"]["contacts_checked"] > 0, detail
    assert code == 0, detail
