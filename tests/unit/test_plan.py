"""`peakroute plan` without Redis: the forecast CSV, the plan per interval, the containment
what-if, and the command's table, JSON and plot."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest
from rich.console import Console

from router import cli
from router.errors import PeakrouteError
from router.plan.cli import read_forecast, render
from router.plan.erlang import Goal, staff_erlang_a, staff_erlang_c
from router.plan.planner import Assumptions, Interval, containment_what_if, plan, scheduled

UTC = ZoneInfo("UTC")
NIGHT = """interval_start,contacts
2025-11-10T23:00,20000
2025-11-10T23:30,38000
2025-11-11T00:00,120000
2025-11-11T00:30,70000
"""


def _assumptions(**kw: float) -> Assumptions:
    base: dict[str, float] = {"containment": 0.6, "aht_s": 90.0, "patience_s": 60.0,
                              "target_s": 30.0, "objective": 0.8}
    base.update(kw)
    return Assumptions(**base)  # type: ignore[arg-type]


def test_forecast_csv_with_iso_times_and_its_spacing(tmp_path: Path) -> None:
    path = tmp_path / "night.csv"
    path.write_text(NIGHT)
    intervals = read_forecast(path, ZoneInfo("Asia/Shanghai"))
    assert [i.contacts for i in intervals] == [20000, 38000, 120000, 70000]
    assert {i.length_s for i in intervals} == {1800.0}
    assert intervals[2].start == dt.datetime(2025, 11, 11, tzinfo=ZoneInfo("Asia/Shanghai"))


def test_forecast_csv_with_times_of_day(tmp_path: Path) -> None:
    path = tmp_path / "day.csv"
    path.write_text("start,contacts\n9:00,10\n09:15,12.5\n")
    intervals = read_forecast(path, UTC, 0, today=dt.date(2025, 11, 11))
    assert intervals[1].start == dt.datetime(2025, 11, 11, 9, 15, tzinfo=UTC)
    assert [i.length_s for i in intervals] == [900.0, 900.0]
    assert read_forecast(path, UTC, 600, today=dt.date(2025, 11, 11))[0].length_s == 600.0


@pytest.mark.parametrize(("text", "message"), [
    ("start,contacts\n", "at least one row"),
    ("start,contacts\n10:00,many\n", "not a number"),
    ("start,contacts\n10:00,-1\n", ">= 0"),
    ("start,contacts\n10:30,1\n10:00,1\n", "must increase"),
    ("start,contacts\nlater,1\n", "neither an ISO"),
])
def test_bad_forecasts_say_which_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(PeakrouteError, match=message):
        read_forecast(path, UTC)


def test_each_interval_is_staffed_for_the_contacts_the_bot_leaves() -> None:
    start = dt.datetime(2025, 11, 11, tzinfo=UTC)
    a = _assumptions()
    [row] = plan([Interval(start, 1800, 120_000)], a)
    assert row.to_humans == pytest.approx(48_000)
    assert row.load == pytest.approx(48_000 / 1800 * 90)  # 2,400 erlangs
    assert row.erlang_c == staff_erlang_c(48_000 / 1800, 90, 30, Goal(0.8))
    assert row.erlang_a == staff_erlang_a(48_000 / 1800, 90, 60, 30, Goal(0.8))
    assert row.agents_c == row.erlang_c.agents == 2405
    assert row.agents_a < row.agents_c


def test_concurrency_and_shrinkage_turn_servers_into_agents_to_schedule() -> None:
    a = _assumptions(concurrency=3, shrinkage=0.25)
    assert scheduled(30, a) == 14  # 10 agents of 3 chats, 10 / 0.75 = 13.3
    assert scheduled(0, a) == 0
    assert scheduled(9, _assumptions()) == 9


def test_each_point_of_containment_saves_agents_at_the_peak() -> None:
    start = dt.datetime(2025, 11, 11, tzinfo=UTC)
    w = containment_what_if(Interval(start, 1800, 120_000), _assumptions(), 5)
    assert [p.containment for p in w.points] == [x / 100 for x in range(55, 66)]
    agents = [p.agents_c for p in w.points]
    assert agents == sorted(agents, reverse=True)
    # one point = 1,200 contacts in 30 min = 60 erlangs: 60 agents by Erlang C
    assert w.saved_per_point_c == 60.0
    # Erlang A saves fewer: part of the load leaves; capped at 5 % leaving, 57 per point
    assert 0 < w.saved_per_point_a < 60
    capped = containment_what_if(Interval(start, 1800, 120_000),
                                 _assumptions(max_abandonment=0.05), 5)
    assert capped.saved_per_point_a == 57.0
    edge = containment_what_if(Interval(start, 1800, 1000), _assumptions(containment=0.02), 5)
    assert edge.points[0].containment == 0.0  # never below 0 %


def test_the_command_as_json_and_plot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    forecast = tmp_path / "night.csv"
    forecast.write_text(NIGHT)
    png = tmp_path / "plan.png"
    monkeypatch.setenv("PEAKROUTE_STATE_DIR", str(tmp_path))
    code = cli.main(["plan", "--forecast", str(forecast), "--containment", "0.6", "--json",
                     "--plot", str(png), "--shrinkage", "0.2"])
    assert code == 0
    out = orjson.loads(capsys.readouterr().out)
    assert out["assumptions"]["sources"]["containment"] == "option"
    assert out["assumptions"]["sources"]["aht_s"] == "PEAKROUTE_PLAN_AHT_S"
    peak = out["peak"]
    assert peak["start"].startswith("2025-11-11T00:00")
    assert peak["erlang_c"]["servers"] == 2405
    assert peak["erlang_c"]["agents"] == 3007  # 2,405 / 0.8
    assert out["agents_max_c"] == 3007
    assert out["what_if_containment"]["agents_saved_per_point_c"] == 75.0  # 60 / 0.8
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_plot_says_how_to_get_matplotlib(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    forecast = tmp_path / "night.csv"
    forecast.write_text(NIGHT)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    monkeypatch.setenv("PEAKROUTE_STATE_DIR", str(tmp_path))
    code = cli.main(["plan", "--forecast", str(forecast), "--containment", "0.6", "--plot",
                     str(tmp_path / "p.png")])
    assert code == 2
    assert "pip install 'peakroute[load]'" in capsys.readouterr().err


@pytest.mark.parametrize("width", [80, 200])
def test_the_table_fits_the_terminal(tmp_path: Path, width: int) -> None:
    forecast = tmp_path / "night.csv"
    forecast.write_text(NIGHT)
    a = _assumptions()
    rows = plan(read_forecast(forecast, UTC), a)
    w = containment_what_if(rows[2].interval, a, 3)
    console = Console(width=width, record=True)
    console.print(render(a, rows, w, width))
    text = console.export_text()
    assert all(len(line) <= width for line in text.splitlines())
    assert "…" not in text
    header = next(line for line in text.splitlines() if "agents" in line)
    assert header.count("agents") == 2  # Erlang C and A agents are kept at any width
    assert ("hidden at this width" in text) == (width == 80)
    assert "each point saves 60 agents (Erlang C)" in " ".join(text.split())


def test_plan_check_staffs_by_the_plan_and_judges_by_standard_errors() -> None:
    from load_tests.plan_check import parse_args, planned, summarise

    plan_ = planned(parse_args([]))  # 10/s x 2 s = 20 erlangs, 80 % within 1 s
    assert plan_["agents"] == staff_erlang_c(10, 2, 1, Goal(0.8)).agents == 23
    near = [{"measured_sl": v, "ideal_sl": v, "measured_asa_s": 0.1}
            for v in (0.80, 0.95, 1.0, 0.85, 0.90)]
    s = summarise({"service_level": 0.97, "asa_s": 0.1}, near)
    # mean 0.90, sd 0.0791, standard error 0.0354: 0.07 below is 1.98 standard errors
    assert (s["measured_sl_mean"], s["standard_error"]) == (0.9, 0.0354)
    assert s["gap_in_standard_errors"] == -1.98
    assert s["within_3_standard_errors"] is True
    far = summarise({"service_level": 0.97, "asa_s": 0.1},
                    [{**r, "measured_sl": v} for r, v in zip(near, (0.8, 0.82, 0.78, 0.8, 0.8),
                                                             strict=True)])
    assert far["within_3_standard_errors"] is False
