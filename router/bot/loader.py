"""Which knowledge base and model a worker serves: loaded (or trained from the knowledge base and
cached under the state dir) on start, and swapped whole when the files change on disk.

A swap replaces one reference, so a batch always sees one consistent knowledge base, rules,
classifier and threshold. A file that fails to load is logged and the old model keeps serving.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

from router import logs, metrics
from router.bot.classifier import MANIFEST_FILE, IntentClassifier
from router.bot.errors import BotError, ModelError
from router.bot.kb import KnowledgeBase, load_kb, resolve_kb_path
from router.bot.policy import PolicyConfig
from router.bot.rules import Rules, parse_vip_policy
from router.bot.trainer import train_model
from router.settings import Settings

log = logs.get("bot")
MODELS_DIR = "bot-models"  # under state_dir: default models, one per knowledge-base digest
DIGEST_CHARS = 16

Stamp = tuple[str, int, int]  # path, mtime_ns, size (size -1: missing)


@dataclass(frozen=True, slots=True)
class Brain:
    """Everything the bot stage decides with, from one knowledge base and one model."""

    kb: KnowledgeBase
    rules: Rules
    classifier: IntentClassifier
    config: PolicyConfig
    model_dir: Path
    stamps: tuple[Stamp, ...]


def policy_config(settings: Settings, classifier: IntentClassifier) -> PolicyConfig:
    """PEAKROUTE_BOT_THRESHOLD if set, else the model's own (its manifest's)."""
    return PolicyConfig(
        threshold=settings.bot_threshold or classifier.threshold,
        vip_policy=parse_vip_policy(settings.bot_vip_policy),
        vip_boost=settings.bot_vip_priority_boost,
        rephrase_max=settings.bot_rephrase_max,
    )


def default_model_dir(settings: Settings, kb: KnowledgeBase) -> Path:
    return settings.state_dir / MODELS_DIR / kb.digest[:DIGEST_CHARS]


def kb_model(settings: Settings, kb: KnowledgeBase) -> tuple[IntentClassifier, Path]:
    """The knowledge base's own model: the cached one for this digest, else trained now (a few
    seconds) and cached, so the next worker starts fast."""
    directory = default_model_dir(settings, kb)
    try:
        return IntentClassifier.load(directory), directory
    except ModelError:
        pass  # not trained yet for this knowledge base, or from another scikit-learn
    classifier = train_model(kb, (), settings.bot_target_false_containment)
    try:
        classifier.save(directory)
    except OSError as exc:  # a read-only state dir costs a retrain per start, nothing more
        log.warning("bot_model_not_cached", extra=logs.fields(dir=str(directory),
                                                                 error=exc.strerror))
    log.info("bot_model_trained", extra=logs.fields(
        dir=str(directory), intents=len(classifier.intents), threshold=classifier.threshold))
    return classifier, directory


def stamps(settings: Settings) -> tuple[Stamp, ...]:
    """What the reload check compares: the knowledge base file and the model manifest."""
    paths = [resolve_kb_path(settings.bot_kb_path)]
    if settings.bot_model_dir:
        paths.append(Path(settings.bot_model_dir) / MANIFEST_FILE)
    return tuple(_stamp(p) for p in paths)


def _stamp(path: Path) -> Stamp:
    try:
        st = os.stat(path)
    except OSError:
        return (str(path), 0, -1)
    return (str(path), st.st_mtime_ns, st.st_size)


def load_brain(settings: Settings, previous: Brain | None = None) -> Brain:
    """Load (or train) what the settings name; blocking (run it in a thread in a worker)."""
    seen = stamps(settings)
    kb = load_kb(resolve_kb_path(settings.bot_kb_path))
    if settings.bot_model_dir:
        model_dir = Path(settings.bot_model_dir)
        if previous is not None and previous.stamps[1:] == seen[1:]:
            classifier = previous.classifier  # only the knowledge base changed
        else:
            classifier = IntentClassifier.load(model_dir)
        missing = set(classifier.intents) - set(kb.intents)
        if missing:  # the policy hands these off: it has no answer for them
            log.warning("bot_model_intents_not_in_kb", extra=logs.fields(
                model=str(model_dir), intents=sorted(missing)[:20]))
    elif previous is not None and previous.kb.digest == kb.digest:
        classifier, model_dir = previous.classifier, previous.model_dir
    else:
        classifier, model_dir = kb_model(settings, kb)
    return Brain(kb, Rules.from_kb(kb, classifier.detector), classifier,
                 policy_config(settings, classifier),
                 model_dir, seen)


class BrainHolder:
    """The worker's current Brain; ``reload_if_changed`` swaps it when its files change."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._brain: Brain | None = None
        self._failed: tuple[Stamp, ...] = ()

    def load(self) -> Brain:
        """Load now (blocking: training a new knowledge base's model takes seconds)."""
        if self._brain is None:
            self._brain = load_brain(self.settings)
            self._log_loaded("bot_model_loaded", self._brain)
        return self._brain

    @property
    def brain(self) -> Brain:
        return self._brain if self._brain is not None else self.load()

    @property
    def loaded(self) -> bool:
        return self._brain is not None

    async def start(self) -> Brain:
        """Load in a thread, so a first training does not block the event loop."""
        if self._brain is None:
            brain = await asyncio.to_thread(load_brain, self.settings)
            if self._brain is None:
                self._brain = brain
                self._log_loaded("bot_model_loaded", brain)
        return self._brain

    async def reload_if_changed(self) -> bool:
        """Swap in a new Brain if the knowledge base or model files changed; True if swapped.
        A broken file is reported once (until it changes again) and the old Brain stays."""
        current = await self.start()
        seen = stamps(self.settings)
        if seen == current.stamps or seen == self._failed:
            return False
        try:
            brain = await asyncio.to_thread(load_brain, self.settings, current)
        except (BotError, OSError) as exc:
            self._failed = seen
            metrics.BOT_MODEL_RELOADS.labels("failed").inc()
            log.warning("bot_model_reload_failed", extra=logs.fields(
                error=str(exc)[:500], kept_model=str(current.model_dir)))
            return False
        self._brain = brain
        self._failed = ()
        metrics.BOT_MODEL_RELOADS.labels("loaded").inc()
        self._log_loaded("bot_model_reloaded", brain)
        return True

    def _log_loaded(self, event: str, brain: Brain) -> None:
        log.info(event, extra=logs.fields(
            kb=brain.kb.source, kb_digest=brain.kb.digest[:DIGEST_CHARS],
            model=str(brain.model_dir), intents=len(brain.classifier.intents),
            threshold=brain.config.threshold))
