"""`peakroute demo` notices a router worker that died: it says so (exit code, the end of the
worker's log), starts it again and goes on to balanced books."""

from __future__ import annotations

import asyncio
import io
import signal
from pathlib import Path

import pytest

from router.demo import DemoOptions, DemoRun, WorkerProcess, run_demo
from router.settings import Settings

pytestmark = pytest.mark.integration


async def test_a_killed_worker_is_reported_and_restarted(
        stack: Settings, worker: WorkerProcess, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEAKROUTE_STATE_DIR", str(tmp_path))
    # The session's worker trained the bot's model: the demo's workers load it from there
    # instead of training their own (~45 s on a busy 2-core machine).
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "bot-models").symlink_to(stack.state_dir / "bot-models")
    killed: list[int] = []

    async def kill_worker(run: DemoRun) -> None:
        await asyncio.sleep(2.0)
        victim = run.workers[0]
        killed.append(victim.proc.pid)
        victim.proc.send_signal(signal.SIGKILL)
        for _ in range(100):  # the demo checks its workers at each progress line
            if run.workers[0] is not victim:
                return
            await asyncio.sleep(0.1)

    out = io.StringIO()
    opts = DemoOptions(rate=5, duration_s=8, agents=8, handle_mean_s=1.0, bad_ratio=0.0,
                       drain_s=45, interval_s=0.5, during=kill_worker)
    result = await run_demo(opts, out)
    text = out.getvalue()
    assert killed
    assert "router worker 0 exited (code -9, SIGKILL)" in text, text[-3000:]
    assert str(tmp_path / "demo" / "logs" / "worker-0.log") in text
    assert "restarted router worker 0" in text
    assert result["run"]["worker_restarts"] == 1
    assert result["balanced"], result["totals"]
    assert result["totals"]["published"] > 0
    assert result["totals"]["deadlettered"] == 0
