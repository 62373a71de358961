"""A Double-11 question mix in Chinese and English: ``questions()`` gives (language, text,
weight) drawn from the knowledge base's own examples (the packaged one unless another is given).

Most questions are simple and high-frequency (intents the bot may close weigh more); some need
a person (hand-off intents); a few ask for a person outright (the human-request phrases).
Chinese outweighs English about four to one, as on a Chinese marketplace at a peak.
"""

from __future__ import annotations

from pathlib import Path

from router.bot.kb import Rule, default_kb_path, load_kb

LANGUAGE_WEIGHT = {"zh": 4, "en": 1}
CONTAINABLE_WEIGHT = 3  # per example of an intent the bot may close
HANDOFF_WEIGHT = 1  # per example of an intent that needs a person
HUMAN_REQUEST_WEIGHT = 1  # per phrase of the human-request rule


def questions(kb_path: Path | None = None) -> tuple[tuple[str, str, int], ...]:
    """(language, text, weight) for every example of the knowledge base's intents and every
    phrase asking for a person."""
    kb = load_kb(kb_path or default_kb_path())
    mix: list[tuple[str, str, int]] = []
    for intent in kb.intents.values():
        weight = CONTAINABLE_WEIGHT if intent.containable else HANDOFF_WEIGHT
        for language, texts in intent.examples.items():
            mix.extend((language.value, t, weight * LANGUAGE_WEIGHT.get(language.value, 1))
                       for t in texts)
    for language, phrases in kb.rules[Rule.HUMAN_REQUEST].items():
        mix.extend((language.value, p, HUMAN_REQUEST_WEIGHT * LANGUAGE_WEIGHT.get(
            language.value, 1)) for p in phrases)
    return tuple(mix)
