"""The bot's settings: defaults, and values that are refused with the variable's name."""

from __future__ import annotations

import pytest

from router.errors import SettingsError
from router.settings import Settings


def test_bot_defaults() -> None:
    s = Settings()
    assert s.bot_kb_path == ""
    assert s.bot_model_dir == ""
    assert s.bot_threshold == 0.0
    assert s.bot_vip_policy == "boost"
    assert s.bot_rephrase_max == 0
    s.validate()


def test_bot_settings_come_from_the_environment() -> None:
    s = Settings.from_env({"PEAKROUTE_BOT_THRESHOLD": "0.6",
                           "PEAKROUTE_BOT_VIP_POLICY": "always_human",
                           "PEAKROUTE_BOT_SILENCE_CLOSE_S": "30",
                           "PEAKROUTE_BOT_KB_PATH": "/etc/kb.yaml",
                           "PEAKROUTE_STATE_DIR": "/nonexistent-state"})
    assert (s.bot_threshold, s.bot_vip_policy, s.bot_silence_close_s, s.bot_kb_path) == (
        0.6, "always_human", 30.0, "/etc/kb.yaml")


@pytest.mark.parametrize(("name", "value", "message"), [
    ("bot_vip_policy", "gold", "PEAKROUTE_BOT_VIP_POLICY='gold'"),
    ("bot_threshold", 1.5, "PEAKROUTE_BOT_THRESHOLD must be in 0..1"),
    ("bot_threshold", -0.1, "PEAKROUTE_BOT_THRESHOLD must be in 0..1"),
    ("bot_target_false_containment", 0.0, "PEAKROUTE_BOT_TARGET_FALSE_CONTAINMENT"),
    ("bot_silence_close_s", 0.0, "PEAKROUTE_BOT_SILENCE_CLOSE_S must be > 0"),
    ("bot_reload_interval_s", float("nan"), "PEAKROUTE_BOT_RELOAD_INTERVAL_S must be > 0"),
    ("bot_rephrase_max", -1, "PEAKROUTE_BOT_REPHRASE_MAX"),
    ("bot_vip_priority_boost", 10, "PEAKROUTE_BOT_VIP_PRIORITY_BOOST"),
    ("bot_transcript_turns", 51, "at most 50"),
    ("bot_transcript_turn_chars", 4000, "must fit in half of PEAKROUTE_MAX_RECORD_BYTES"),
])
def test_a_bad_bot_setting_is_refused_by_name(name: str, value: object, message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace(".", r"\.")):
        Settings().replace(**{name: value}).validate()
