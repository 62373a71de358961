"""router.bot.trainer and the `peakroute bot` commands (through router.cli.main)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from router.bot.classifier import IntentClassifier
from router.bot.errors import LabelledDataError
from router.bot.policy import PolicyConfig
from router.bot.scoring import OOS
from router.bot.trainer import (
    Labelled,
    ask,
    evaluate,
    outcomes,
    read_labelled,
    render_eval,
    train_model,
    training_data,
)
from router.cli import main
from router.events import Language

from ._bot import DATA, SMALL_KB, small_kb, small_model

LABELLED = DATA / "bot_labelled_small.csv"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rows.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_read_labelled_reads_rows_and_guesses_the_language() -> None:
    rows = read_labelled(LABELLED)
    assert rows[0] == Labelled("快递到哪里了", "logistics", Language.ZH)
    assert rows[2].language is Language.EN


def test_an_empty_or_oos_intent_means_out_of_scope() -> None:
    rows = read_labelled(LABELLED)
    assert {r.intent for r in rows if r.text in {"recommend a good movie", "讲个笑话"}} == {OOS}


def test_a_language_column_wins_over_the_guess(tmp_path: Path) -> None:
    rows = read_labelled(write(tmp_path, "text,intent,language\nok 好,coupon,en\n"))
    assert rows[0].language is Language.EN


def test_a_csv_without_the_columns_is_refused_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(LabelledDataError, match="line 1: no column intent"):
        read_labelled(write(tmp_path, "text,label\na,b\n"))


def test_an_empty_text_names_its_line(tmp_path: Path) -> None:
    with pytest.raises(LabelledDataError, match="line 3: empty text"):
        read_labelled(write(tmp_path, "text,intent\na,b\n,c\n"))


def test_a_bad_language_names_its_line(tmp_path: Path) -> None:
    with pytest.raises(LabelledDataError, match="line 2: language 'fr'"):
        read_labelled(write(tmp_path, "text,intent,language\nbonjour,x,fr\n"))


def test_a_missing_or_empty_csv_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LabelledDataError, match="no such file"):
        read_labelled(tmp_path / "none.csv")
    with pytest.raises(LabelledDataError, match="no rows"):
        read_labelled(write(tmp_path, "text,intent\n"))


def test_training_data_merges_kb_examples_and_rows() -> None:
    rows = [Labelled("where is my shipment", "logistics", Language.EN),
            Labelled("do you ship to mars", "space_shipping", Language.EN),
            Labelled("weather?", OOS, Language.EN)]
    examples, containable = training_data(small_kb(), rows)
    assert len(examples) == len(small_kb().examples()) + 3
    assert containable["space_shipping"] is True  # only in the logs: containable
    assert containable["refund"] is False  # the knowledge base says otherwise
    assert OOS not in containable


def test_training_data_without_a_kb_is_the_rows_alone() -> None:
    rows = [Labelled("a", "x", Language.EN), Labelled("b", "y", Language.EN)]
    assert training_data(None, rows) == ([("a", "x"), ("b", "y")], {"x": True, "y": True})


def test_evaluate_reports_overall_per_language_per_intent_and_a_sweep() -> None:
    model = small_model()
    report = evaluate(model, read_labelled(LABELLED), small_kb(), 0.5, model="m")
    assert report.overall.n == 18
    assert report.overall.out_of_scope == 5
    assert set(report.by_language) == {"zh", "en"}
    assert report.by_language["zh"].n + report.by_language["en"].n == 18
    assert "logistics" in report.intents
    assert [s.threshold for s in report.sweep] == sorted(s.threshold for s in report.sweep)
    assert report.overall.accuracy > 0.8


def test_the_rules_apply_in_evaluation_with_a_kb() -> None:
    rows = [Labelled("转人工", OOS, Language.ZH)]
    assert outcomes(small_model(), rows, small_kb())[0].ruled
    assert not outcomes(small_model(), rows, None)[0].ruled


def test_the_kb_decides_containable_in_evaluation() -> None:
    rows = [Labelled("我要退款", "refund", Language.ZH)]
    assert not outcomes(small_model(), rows, small_kb())[0].containable


def test_the_json_report_has_the_documented_keys() -> None:
    data = evaluate(small_model(), read_labelled(LABELLED), small_kb(), 0.5).as_json()
    assert {"n", "accuracy", "containment", "false_containment", "oos_recall"} <= set(data)
    assert data["n"] == 18


def test_the_text_report_shows_the_sweep_and_marks_the_threshold() -> None:
    text = render_eval(evaluate(small_model(), read_labelled(LABELLED), small_kb(), 0.5))
    assert "threshold sweep" in text
    assert "<- model" in text


def test_ask_says_what_the_bot_would_do() -> None:
    cfg = PolicyConfig(threshold=0.5)
    answer = ask(small_model(), small_kb(), cfg, "我要退款")
    assert answer["intent"] == "refund"
    assert answer["action"] == "escalated"
    assert answer["queue"] == "refunds"
    assert answer["language"] == "zh"
    human = ask(small_model(), small_kb(), cfg, "transfer me to a human")
    assert human["reason"] == "human_requested"


def test_train_model_from_the_rows_alone_makes_every_intent_containable() -> None:
    model = train_model(None, read_labelled(LABELLED) * 3, 0.05)
    assert model.manifest.kb_digest == ""
    assert all(model.manifest.containable.values())


# --- the CLI -------------------------------------------------------------------------------


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("PEAKROUTE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("PEAKROUTE_BOT_KB_PATH", str(SMALL_KB))
    monkeypatch.setenv("PEAKROUTE_LOG_LEVEL", "WARNING")
    return tmp_path


def last_json(out: str) -> dict[str, object]:
    data: dict[str, object] = orjson.loads(out.strip().splitlines()[-1])
    return data


def test_cli_train_from_the_kb_alone_then_eval_as_json(
        env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bot", "train", "--out", str(env / "m")]) == 0
    assert "containable" in capsys.readouterr().out
    assert IntentClassifier.load(env / "m").manifest.kb_digest == small_kb().digest
    assert main(["bot", "eval", str(LABELLED), "--model", str(env / "m"), "--json"]) == 0
    report = last_json(capsys.readouterr().out)
    assert report["n"] == 18
    assert {"accuracy", "containment", "false_containment", "oos_recall"} <= set(report)


def test_cli_train_from_a_csv_merged_with_a_kb(env: Path, capsys: pytest.CaptureFixture[str]
                                               ) -> None:
    assert main(["bot", "train", str(LABELLED), "--kb", str(SMALL_KB), "--out", str(env / "m"),
                 "--json"]) == 0
    manifest = last_json(capsys.readouterr().out)
    assert manifest["examples"] == len(small_kb().examples()) + 18


def test_cli_eval_without_a_model_uses_the_workers_kb_model(
        env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bot", "eval", str(LABELLED), "--threshold", "0.4"]) == 0
    out = capsys.readouterr().out
    assert "threshold 0.40" in out
    assert (env / "state" / "bot-models").is_dir()  # trained once, cached for the worker


def test_cli_ask_prints_intent_confidence_and_action(
        env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bot", "ask", "I want a refund", "--json"]) == 0
    answer = last_json(capsys.readouterr().out)
    assert answer["intent"] == "refund"
    assert answer["action"] == "escalated"
    assert main(["bot", "ask", "where is my package"]) == 0
    assert "intent      logistics" in capsys.readouterr().out


def test_cli_errors_are_one_line_with_exit_code_2(
        env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bot", "eval", str(env / "none.csv")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_a_kb_threshold_is_the_threshold_of_a_model_trained_from_the_kb_alone() -> None:
    from dataclasses import replace

    kb = replace(small_kb(), threshold=0.42)
    assert train_model(kb, (), 0.05).threshold == 0.42
    rows = read_labelled(LABELLED)
    assert train_model(kb, rows, 0.05).manifest.validation.get("splits") == 4


def test_eval_lists_which_intents_are_taken_for_which() -> None:
    from router.bot.scoring import Outcome
    from router.bot.trainer import confusions

    rows = [Outcome("a", "b", 0.9, True), Outcome("a", "b", 0.2, True),
            Outcome("b", "a", 0.9, True), Outcome("a", "a", 0.9, True),
            Outcome(OOS, "a", 0.9, True), Outcome("c", OOS, 0.9, True)]
    assert confusions(rows) == [("a", "b", 2), ("b", "a", 1)]
    report = evaluate(small_model(), read_labelled(LABELLED), small_kb(), 0.3)
    assert "confusions" in report.as_json()


def test_a_kb_threshold_comes_with_its_neighbour_power() -> None:
    from dataclasses import replace

    kb = replace(small_kb(), threshold=0.42, neighbour_power=0.5)
    assert train_model(kb, (), 0.05).manifest.neighbour_power == 0.5
    assert train_model(replace(kb, neighbour_power=None), (), 0.05).manifest.neighbour_power == 1.0
    with_coverage = train_model(replace(kb, coverage_power=0.5), (), 0.05).manifest
    assert with_coverage.coverage_power == 0.5
    assert train_model(kb, (), 0.05).manifest.coverage_power == 1.0  # none recorded: as before
