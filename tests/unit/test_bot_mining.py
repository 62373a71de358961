"""router.bot.mining and `peakroute bot mine`: questions the bot did not close, clustered into
candidate intents ready for the knowledge base."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import yaml

from router.bot.errors import LabelledDataError
from router.bot.mine_source import question_of, read_csv_questions
from router.bot.mining import mine, purity, to_yaml
from router.cli import main
from router.events import RoutingRequested, Speaker, Turn

GROUPS = {
    "invoice": ["how do i get an invoice", "invoice for my order please", "need an invoice",
                "can you send the invoice", "where is the invoice", "invoice not received"],
    "parcel": ["where is my parcel", "my parcel is late", "parcel still not here",
               "when does my parcel arrive", "parcel tracking stuck", "lost parcel?"],
    "points": ["会员积分怎么用", "积分过期了吗", "积分能换什么", "我的积分在哪看", "积分怎么算",
               "积分兑换"],
}


def questions() -> tuple[list[str], list[str]]:
    texts = [t for g in GROUPS.values() for t in g]
    truth = [name for name, g in GROUPS.items() for _ in g]
    return texts, truth


def test_clearly_separate_topics_become_pure_clusters() -> None:
    texts, truth = questions()
    mined = mine(texts, k=3)
    assert len(mined.clusters) == 3
    assert purity(mined.assignments, truth) == 1.0
    assert sorted(c.count for c in mined.clusters) == [6, 6, 6]
    invoice = next(c for c in mined.clusters if "invoice" in c.terms)
    assert invoice.name.startswith("candidate_")
    assert "invoice" in invoice.name
    assert set(invoice.examples) <= set(GROUPS["invoice"])


def test_the_number_of_clusters_is_chosen_when_not_given() -> None:
    groups = {
        "invoice": ["invoice receipt needed", "invoice receipt please", "send invoice receipt",
                    "invoice receipt missing", "need an invoice receipt", "invoice and receipt"],
        "parcel": ["parcel delivery late", "parcel delivery stuck", "parcel delivery when",
                   "late parcel delivery", "parcel delivery status", "parcel delivery tracking"],
        "points": GROUPS["points"]}
    texts = [t for g in groups.values() for t in g]
    mined = mine(texts)
    assert len(mined.clusters) == 3
    assert purity(mined.assignments, [n for n, g in groups.items() for _ in g]) == 1.0


def test_repeats_are_counted_and_small_clusters_left_out() -> None:
    texts = ["where is my parcel"] * 5 + ["how do i get an invoice"]
    mined = mine(texts, k=2, min_size=2)
    assert [c.count for c in mined.clusters] == [5]
    assert mined.unclustered == 1
    assert mined.assignments[-1] == -1


def test_purity_counts_the_unclustered_as_one_cluster() -> None:
    assert purity([0, 0, -1, -1], ["a", "a", "b", "c"]) == 0.75


def test_the_yaml_is_ready_to_paste_under_intents() -> None:
    texts, _ = questions()
    data = yaml.safe_load(to_yaml(mine(texts, k=3)))
    intents = data["intents"]
    assert len(intents) == 3
    for intent in intents.values():
        assert set(intent) == {"containable", "queue", "answer", "examples"}
        assert all(len(v) >= 1 for v in intent["examples"].values())


def test_csv_questions_keep_only_not_understood_rows_when_there_is_a_reason(
        tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_text("text,reason\nwhere is my parcel,not_understood\nhuman,human_requested\n"
                    " ,not_understood\n", encoding="utf-8")
    assert read_csv_questions(path) == ["where is my parcel"]
    path.write_text("intent\nx\n", encoding="utf-8")
    with pytest.raises(LabelledDataError, match="no column text"):
        read_csv_questions(path)


def test_an_escalations_question_is_the_last_customer_turn() -> None:
    event = RoutingRequested(event_id="e1", ts_ms=1, contact_id="c1", domain="d", transcript=(
        Turn(Speaker.CUSTOMER, "hi", 1), Turn(Speaker.BOT, "hello", 2),
        Turn(Speaker.CUSTOMER, "where is my parcel", 3), Turn(Speaker.BOT, "sorry?", 4)))
    assert question_of(event) == "where is my parcel"
    assert question_of(RoutingRequested(event_id="e2", ts_ms=1, contact_id="c", domain="d")) == ""


def test_the_cli_prints_yaml_or_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    texts, _ = questions()
    path = tmp_path / "q.csv"
    path.write_text("text\n" + "\n".join(texts) + "\n", encoding="utf-8")
    assert main(["bot", "mine", str(path), "--clusters", "3"]) == 0
    assert "intents" in yaml.safe_load(capsys.readouterr().out)
    assert main(["bot", "mine", str(path), "--clusters", "3", "--json"]) == 0
    data = orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert data["questions"] == len(texts)
    assert sum(c["count"] for c in data["clusters"]) + data["unclustered"] == len(texts)
    assert main(["bot", "mine"]) == 2
