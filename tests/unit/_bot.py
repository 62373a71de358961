"""Shared by the bot's unit tests: the small test knowledge base and a model trained on it once."""

from __future__ import annotations

import functools
from pathlib import Path

from router.bot.classifier import IntentClassifier
from router.bot.kb import KnowledgeBase, default_kb_path, load_kb
from router.bot.trainer import train_model

DATA = Path(__file__).resolve().parent.parent / "data"
SMALL_KB = DATA / "bot_kb_small.yaml"
TARGET = 0.05


@functools.cache
def small_kb() -> KnowledgeBase:
    return load_kb(SMALL_KB)


@functools.cache
def small_model() -> IntentClassifier:
    return train_model(small_kb(), (), TARGET)


@functools.cache
def shipped() -> KnowledgeBase:
    """The packaged knowledge base, router/bot/kb/default.yaml."""
    return load_kb(default_kb_path())


@functools.cache
def shipped_model() -> IntentClassifier:
    """Its own model, as a worker trains it (its threshold from the file): once per session."""
    return train_model(shipped(), (), TARGET)
