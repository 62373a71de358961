"""Rules that decide before the classifier: the customer asks for a person, is angry or
complains, says the bot's answer did not help; and the VIP policy. Pure functions.

Phrases match on normalised text (router.bot.text.normalize): a phrase with Chinese characters
matches anywhere (Chinese has no spaces between words); any other phrase matches whole words
only ("agent" is not "agents" or "reagent"). Every language's phrases apply to every message,
because customers mix languages ("我要找human").
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from router.bot.escalation import EscalationDetector
from router.bot.kb import KnowledgeBase, Rule
from router.bot.text import normalize
from router.errors import SettingsError
from router.events import Tier

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")


class VipPolicy(enum.StrEnum):
    """PEAKROUTE_BOT_VIP_POLICY: what being VIP changes."""

    NONE = "none"  # nothing
    BOOST = "boost"  # escalations get PEAKROUTE_BOT_VIP_PRIORITY_BOOST more priority
    ALWAYS_HUMAN = "always_human"  # every VIP contact goes to a person (with the boost)


def parse_vip_policy(value: str) -> VipPolicy:
    try:
        return VipPolicy(value)
    except ValueError:
        raise SettingsError(f"PEAKROUTE_BOT_VIP_POLICY={value!r}: use "
                            f"{', '.join(p.value for p in VipPolicy)}") from None


@dataclass(frozen=True, slots=True)
class PhraseMatcher:
    """One compiled pattern for a list of phrases (one regex search per message)."""

    pattern: re.Pattern[str] | None

    @classmethod
    def of(cls, phrases: Iterable[str]) -> PhraseMatcher:
        chinese: list[str] = []
        latin: list[str] = []
        for phrase in sorted({normalize(p) for p in phrases if p.strip()}, key=len, reverse=True):
            (chinese if _CJK.search(phrase) else latin).append(re.escape(phrase))
        # Latin words must stand alone; next to a Chinese character counts as standing alone.
        # The word boundaries are checked once around all Latin phrases, not around each one:
        # the same matches (the regex tries every phrase at a position before it moves on), in
        # a fraction of the time.
        parts = ["|".join(chinese)] if chinese else []
        if latin:
            parts.append(rf"(?<![a-z0-9])(?:{'|'.join(latin)})(?![a-z0-9])")
        return cls(re.compile("|".join(parts)) if parts else None)

    def matches(self, normalized_text: str) -> bool:
        return self.pattern is not None and self.pattern.search(normalized_text) is not None


@dataclass(frozen=True, slots=True)
class Rules:
    """The knowledge base's phrase lists, compiled once per knowledge base, and the learned
    hand-off detector trained on its `handoffs` examples (when the model has one): a message
    that either flags asks for a person or is angry; the phrases are the floor."""

    human_request: PhraseMatcher
    anger: PhraseMatcher
    not_helpful: PhraseMatcher
    detector: EscalationDetector | None = None

    @classmethod
    def from_kb(cls, kb: KnowledgeBase, detector: EscalationDetector | None = None) -> Rules:
        return cls(PhraseMatcher.of(kb.phrases(Rule.HUMAN_REQUEST)),
                   PhraseMatcher.of(kb.phrases(Rule.ANGER)),
                   PhraseMatcher.of(kb.phrases(Rule.NOT_HELPFUL)), detector)

    @classmethod
    def none(cls) -> Rules:
        """No rules (a model trained without a knowledge base is evaluated as a classifier)."""
        empty = PhraseMatcher(None)
        return cls(empty, empty, empty)

    def check(self, text: str) -> RuleHits:
        norm = normalize(text)
        human, anger = self.human_request.matches(norm), self.anger.matches(norm)
        if self.detector is not None and not (human or anger):
            kind = self.detector.kind(text)
            human, anger = kind == Rule.HUMAN_REQUEST, kind == Rule.ANGER
        return RuleHits(human, anger, self.not_helpful.matches(norm))

    def check_batch(self, texts: Sequence[str]) -> list[RuleHits]:
        """``check`` of each text, with the hand-off detector run once for the batch (on the
        texts no phrase flags)."""
        norms = [normalize(text) for text in texts]
        flags = [(self.human_request.matches(n), self.anger.matches(n)) for n in norms]
        if self.detector is not None:
            unflagged = [i for i, (human, anger) in enumerate(flags) if not (human or anger)]
            for i, kind in zip(unflagged, self.detector.kinds([texts[i] for i in unflagged]),
                               strict=True):
                flags[i] = (kind == Rule.HUMAN_REQUEST, kind == Rule.ANGER)
        return [RuleHits(human, anger, self.not_helpful.matches(n))
                for (human, anger), n in zip(flags, norms, strict=True)]


@dataclass(frozen=True, slots=True)
class RuleHits:
    """Which rules a message triggers."""

    human_request: bool = False
    anger: bool = False
    not_helpful: bool = False


def vip_goes_to_a_person(tier: Tier, policy: VipPolicy) -> bool:
    return tier == Tier.VIP and policy == VipPolicy.ALWAYS_HUMAN


def vip_boost(tier: Tier, policy: VipPolicy, boost: int) -> int:
    """Extra priority for a VIP escalation under the policy."""
    return boost if tier == Tier.VIP and policy != VipPolicy.NONE else 0
