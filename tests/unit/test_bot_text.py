"""router.bot.text: normalisation (width, case, spaces, Traditional -> Simplified, digits)."""

from __future__ import annotations

from router.bot.text import features_text, normalize, to_simplified


def test_traditional_characters_become_simplified() -> None:
    assert to_simplified("請問我的包裹什麼時候到") == "请问我的包裹什么时候到"
    assert to_simplified("發票怎麼開") == "发票怎么开"


def test_simplified_and_latin_text_is_left_as_it_is() -> None:
    assert to_simplified("我的快递到哪了") == "我的快递到哪了"
    assert to_simplified("Where is my parcel") == "Where is my parcel"


def test_normalize_folds_width_case_spaces_and_script() -> None:
    assert normalize("  ＷＨＥＲＥ   is 我的包裹  ") == "where is 我的包裹"
    assert normalize("轉人工") == normalize("转人工") == "转人工"


def test_features_text_replaces_every_run_of_digits() -> None:
    assert features_text("訂單 123456 到哪了") == "订单 0 到哪了"
