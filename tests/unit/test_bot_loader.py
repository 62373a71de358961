"""router.bot.loader: the default model is trained once and cached; changed files are swapped
in; a broken file is reported and the old model keeps serving."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from router import metrics
from router.bot.classifier import IntentClassifier
from router.bot.errors import KnowledgeBaseError
from router.bot.loader import BrainHolder, default_model_dir, load_brain
from router.bot.trainer import train_model
from router.settings import Settings

from ._bot import SMALL_KB, small_kb, small_model


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    kb = tmp_path / "kb.yaml"
    shutil.copy(SMALL_KB, kb)
    return Settings(state_dir=tmp_path / "state", bot_kb_path=str(kb))


def touch_later(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def rewrite(path: Path, old: str, new: str) -> None:
    """Change a file and make sure its modification time moves (coarse clocks)."""
    path.write_text(path.read_text().replace(old, new) if old else new)
    touch_later(path)


def test_the_kb_model_is_trained_once_and_cached_by_digest(settings: Settings) -> None:
    brain = load_brain(settings)
    directory = default_model_dir(settings, brain.kb)
    assert brain.model_dir == directory
    assert directory.name == small_kb().digest[:16]
    assert IntentClassifier.load(directory).manifest.kb_digest == small_kb().digest
    again = load_brain(settings)
    assert again.classifier.manifest.trained_at == brain.classifier.manifest.trained_at


def test_the_threshold_setting_overrides_the_models(settings: Settings) -> None:
    brain = load_brain(settings.replace(bot_threshold=0.42))
    assert brain.config.threshold == 0.42
    assert load_brain(settings).config.threshold == brain.classifier.threshold


def test_a_model_dir_setting_serves_that_model(settings: Settings, tmp_path: Path) -> None:
    small_model().save(tmp_path / "m")
    brain = load_brain(settings.replace(bot_model_dir=str(tmp_path / "m")))
    assert brain.model_dir == tmp_path / "m"
    assert brain.classifier.manifest == small_model().manifest


def test_a_bad_kb_fails_the_first_load(settings: Settings) -> None:
    Path(settings.bot_kb_path).write_text("version: 1\n")
    with pytest.raises(KnowledgeBaseError):
        load_brain(settings)


async def test_nothing_changed_means_no_reload(settings: Settings) -> None:
    holder = BrainHolder(settings)
    holder.load()
    assert not await holder.reload_if_changed()


async def test_a_changed_kb_is_swapped_in(settings: Settings) -> None:
    holder = BrainHolder(settings)
    old = holder.load()
    rewrite(Path(settings.bot_kb_path), "大促期间包裹通常在48小时内发出", "包裹今天发出")
    assert await holder.reload_if_changed()
    assert holder.brain is not old
    assert holder.brain.kb.intents["logistics"].answer["zh"].startswith("包裹今天发出")
    assert holder.brain.kb.digest != old.kb.digest


async def test_a_broken_kb_is_reported_once_and_the_old_brain_keeps_serving(
        settings: Settings) -> None:
    holder = BrainHolder(settings)
    old = holder.load()
    failed = metrics.BOT_MODEL_RELOADS.labels("failed")
    before = failed._value.get()
    kb = Path(settings.bot_kb_path)
    good = SMALL_KB.read_text()
    rewrite(kb, "", "version: 1\nintents: {}\n")
    assert not await holder.reload_if_changed()
    assert not await holder.reload_if_changed()  # the same broken file: not retried
    assert holder.brain is old
    assert failed._value.get() == before + 1
    rewrite(kb, "", good + "\n# fixed\n")
    assert await holder.reload_if_changed()


async def test_a_retrained_model_dir_is_swapped_in(settings: Settings, tmp_path: Path) -> None:
    small_model().save(tmp_path / "m")
    s = settings.replace(bot_model_dir=str(tmp_path / "m"))
    holder = BrainHolder(s)
    old = holder.load()
    train_model(small_kb(), (), 0.2).save(tmp_path / "m")
    touch_later(tmp_path / "m" / "manifest.json")
    assert await holder.reload_if_changed()
    assert holder.brain.classifier is not old.classifier
    assert holder.brain.classifier.manifest.target_false_containment == 0.2


async def test_start_loads_in_a_thread_once(settings: Settings) -> None:
    holder = BrainHolder(settings)
    assert not holder.loaded
    brain = await holder.start()
    assert holder.loaded
    assert await holder.start() is brain
