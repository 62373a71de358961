"""The bot's errors: each names the file, the key or line, and what to do about it."""

from __future__ import annotations

from router.errors import PeakrouteError


class BotError(PeakrouteError):
    """Root of the bot's errors."""


class KnowledgeBaseError(BotError):
    """A knowledge base file is missing, is not YAML, or breaks the format (docs/BOT.md)."""


class ModelError(BotError):
    """A trained model directory is missing, incomplete, or from an incompatible scikit-learn."""


class LabelledDataError(BotError):
    """A labelled CSV (text,intent) cannot be read."""
