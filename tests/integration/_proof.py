"""The load tools' proofs (load_tests.failover, load_tests.faults) run short as tests: each
starts a stack of its own in a subprocess, prints one JSON result, and the books must hold."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import orjson
import pytest

from tests.conftest import repo_root


def run_proof(module: str, args: list[str], *, wall_s: float, model_dir: str,
              env: dict[str, str] | None = None) -> tuple[dict[str, Any], str, int]:
    """``python -m <module> <args> --json`` within ``wall_s``, its workers on the session's
    bot model (no worker trains its own): the result, a detail for failures (the result and
    the end of its log) and the exit code."""
    argv = [sys.executable, "-m", module, *args, "--json"]
    full_env = {**os.environ, "PEAKROUTE_BOT_MODEL_DIR": model_dir, **(env or {})}
    try:
        done = subprocess.run(argv, cwd=repo_root(), env=full_env, capture_output=True,
                              text=True, timeout=wall_s, check=False)
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        pytest.fail(f"{module} took more than {wall_s} s:\n{err[-3000:]}")
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr[-3000:]
    result = orjson.loads(lines[-1])
    return result, f"{result}\n{done.stderr[-2000:]}", done.returncode


def assert_books_hold(result: dict[str, Any], detail: str) -> None:
    """Every contact ended in exactly one terminal state; none was accepted by two agents,
    stranded with an agent who never saw its offer, or left an agent not ready for an offer it
    never saw; the dead letters are the malformed records sent; the counters equal the audit
    log; no process exited unexpectedly."""
    assert result["lost"] == 0, detail
    assert result["terminal"] == result["published"], detail
    assert result["stranded"] == 0, detail
    assert result["phantom_not_ready"] == 0, detail
    assert result["double_assigned"] == 0, detail
    assert result["deadletters_as_sent"] is True, detail
    assert result["counters_match_audit"] is True, detail
    assert result.get("unexpected_exits", []) == [], detail
