"""`peakroute status` at the terminal's width: columns are dropped by importance, never squeezed
into "10…" (router/termtable.py)."""

from __future__ import annotations

import pytest
from rich.console import Console

from router.settings import Settings
from router.sla.rating import rate_figures
from router.sla.snapshot import DomainFigures, QueueFigures, Snapshot, WindowFigures
from router.sla.windows import WINDOW_NAMES, Counts
from router.status import render
from router.termtable import Column, fit


def _snapshot() -> Snapshot:
    c = Counts(offered=1234, answered=1100, answered_within_target=1000, abandoned=100,
               short_abandoned=10, wait_sum_ms=5_000_000, wait_max_ms=60_000)
    windows = {w: WindowFigures(c, 1000 / 1190, 4.5) for w in WINDOW_NAMES}
    queues = [QueueFigures("shop-1", name, 30.0, windows, c, 12, 10, 45.0, 3, 25, 12.0)
              for name in ("complaints", "payment", "refunds_and_returns_abroad")]
    d = DomainFigures("shop-1", {"ready": 25, "not_ready": 3}, 0.318,
                      {"arrived": 4250, "contained": 3800, "escalated": 450})
    return Snapshot(1_700_000_000_000, "short_abandons_excluded", 0.8, [d], queues,
                    [rate_figures(d, queues, Settings())])


def _text(width: int) -> str:
    console = Console(width=width, record=True)
    console.print(render(_snapshot(), width=width))
    return console.export_text()


def _rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()
            if line.strip().startswith(("complaints", "payment", "refunds"))]


@pytest.mark.parametrize("width", [60, 80, 100, 200])
def test_every_line_fits_and_every_figure_is_whole(width: int) -> None:
    text = _text(width)
    assert all(len(line) <= width for line in text.splitlines())
    for row in _rows(text):
        assert "…" not in " ".join(row[1:])  # figures whole; only a long queue name is cut
        assert row[1] == "84.0"  # SL% 5m is always shown


def test_200_columns_show_everything_80_the_most_important() -> None:
    wide = _rows(_text(200))
    assert wide[2][0] == "refunds_and_returns_abroad"
    assert wide[0][1:] == ["84.0"] * 4 + ["30s", "12", "45s", "3", "12s", "25", "1100", "100"]
    text = _text(80)
    narrow = _rows(text)
    assert narrow[2][0].endswith("…")  # the long name is cut, not the figures
    # SL 5m, then what is live: waiting, oldest, at risk, ready, and SL today
    for figure in ("45s", "25"):
        assert figure in narrow[0]
    assert "hidden at this width: abandoned today, answered today, target" in text
    assert "rating gold 93.0" in text


def test_fit_drops_the_least_important_first() -> None:
    cols = [Column("name", ["x"], 100, justify="left"), Column("a" * 30, ["1"], 10),
            Column("b" * 30, ["2"], 50), Column("c" * 30, ["3"], 10)]
    _, dropped = fit(cols, 50)
    assert [c.header[0] for c in dropped] == ["c", "a"]  # ties: the rightmost first
    _, none = fit(cols, 200)
    assert none == []
