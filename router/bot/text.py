"""Text helpers the bot shares: normalisation for matching and features, and language guessing."""

from __future__ import annotations

import re
import unicodedata

import opencc

from router.events import Language

_DIGITS = re.compile(r"\d+")
_SPACES = re.compile(r"\s+")
# CJK Unified Ideographs (and extension A): enough to tell Chinese from English text.
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
# OpenCC's character and phrase tables, Traditional to Simplified (shipped in the wheel).
_T2S = opencc.OpenCC("t2s")


def to_simplified(text: str) -> str:
    """Traditional Chinese characters (and phrases) as Simplified ones: "請問包裹什麼時候到" is
    "请问包裹什么时候到". Text without Chinese characters is returned as it is."""
    return _T2S.convert(text) if _CJK.search(text) else text


def normalize(text: str) -> str:
    """NFKC (full-width letters, digits and punctuation become ASCII), Traditional Chinese as
    Simplified, lower case, one space between words. Used by the rules, the hand-off detector
    and the classifier's features alike."""
    return to_simplified(_SPACES.sub(" ", unicodedata.normalize("NFKC", text)).strip().lower())


def features_text(text: str) -> str:
    """What the classifier sees: normalised, every run of digits replaced by one ``0`` so that
    order numbers, amounts and dates do not become features of their own."""
    return _DIGITS.sub("0", normalize(text))


def detect_language(text: str) -> Language:
    """Chinese if the text has any Chinese character, else English (for labelled CSVs and
    `peakroute bot ask` without --language; events carry their language)."""
    return Language.ZH if _CJK.search(text) else Language.EN
