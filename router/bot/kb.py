"""The knowledge base: intents with example utterances and answers per language, whether the bot
may close each one, where hand-offs go, and the rules' phrase lists, read from YAML and
validated. The format is documented in docs/BOT.md; errors name the file, the key and the fix.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from router.bot.errors import KnowledgeBaseError
from router.bot.text import normalize
from router.decode import ID_RE, LEVEL_RANGE, MAX_LEVELS, PRIORITY_RANGE, Limits
from router.events import Language

FORMAT_VERSION = 1
INTENT_RE = re.compile(r"[a-z0-9_]{1,64}")
MIN_EXAMPLES_PER_LANGUAGE = 3  # below this a classifier cannot learn an intent at all
MAX_ANSWER_CHARS = Limits().max_text_chars  # a reply must fit the gateway's text limit
# Labels the bot uses itself; an intent may not take them.
RESERVED_INTENTS = frozenset({"oos", "unknown", "human_request"})
OUT_OF_SCOPE = "oos"  # the label of the knowledge base's out-of-scope examples


class Rule(enum.StrEnum):
    """Phrase lists that decide before the classifier (see router.bot.rules)."""

    HUMAN_REQUEST = "human_request"  # the customer asks for a person
    ANGER = "anger"  # anger or a complaint
    NOT_HELPFUL = "not_helpful"  # after a bot answer: "that did not help"


class Message(enum.StrEnum):
    """What the bot says outside of an intent's answer."""

    HANDOFF = "handoff"  # when escalating for a rule or out of scope
    NOT_UNDERSTOOD = "not_understood"  # asks the customer to rephrase
    CLOSED = "closed"  # when a contact closes after silence


class Escalation(enum.StrEnum):
    """Escalations that do not come from an intent; each has a route (queue, priority)."""

    HUMAN_REQUEST = "human_request"
    ANGER = "anger"
    NOT_UNDERSTOOD = "not_understood"
    VIP = "vip"


@dataclass(frozen=True, slots=True)
class Route:
    """Where an escalation goes: a routing-policy queue and a priority 0..9."""

    queue: str
    priority: int = 0


# Used when the knowledge base has no `escalations` section (or leaves one out).
DEFAULT_ROUTES: Mapping[Escalation, Route] = {
    Escalation.HUMAN_REQUEST: Route("general"),
    Escalation.ANGER: Route("complaints", 1),
    Escalation.NOT_UNDERSTOOD: Route("general"),
    Escalation.VIP: Route("general"),
}


@dataclass(frozen=True, slots=True)
class Intent:
    name: str
    containable: bool  # the bot may answer and close it
    queue: str  # the routing-policy queue when it goes to a person
    skills: Mapping[str, int]  # extra skill levels beyond the queue's own
    priority: int
    answer: Mapping[Language, str]  # the reply, or for a hand-off the hand-off notice
    examples: Mapping[Language, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class KnowledgeBase:
    name: str
    languages: tuple[Language, ...]
    rules: Mapping[Rule, Mapping[Language, tuple[str, ...]]]
    messages: Mapping[Message, Mapping[Language, str]]
    intents: Mapping[str, Intent]
    routes: Mapping[Escalation, Route] = field(default_factory=lambda: dict(DEFAULT_ROUTES))
    threshold: float | None = None  # for its own model; None = the one chosen at training
    # Questions the bot must not answer (trained as the class ``oos``), per language.
    out_of_scope: Mapping[Language, tuple[str, ...]] = field(default_factory=dict)
    # Messages that must reach a person, per kind (human_request, anger) and language: the
    # hand-off detector's training examples (router.bot.escalation).
    handoffs: Mapping[Rule, Mapping[Language, tuple[str, ...]]] = field(default_factory=dict)
    source: str = ""
    digest: str = ""  # sha256 of the file's bytes: keys the cached default model
    # With `threshold`: the neighbours' power and each language's own threshold, as the trainer
    # chose them with it (router.bot.classifier).
    neighbour_power: float | None = None
    coverage_power: float | None = None
    language_thresholds: Mapping[str, float] = field(default_factory=dict)

    def examples(self) -> list[tuple[str, str]]:
        """(text, intent) for every example in every language, in file order, then the
        out-of-scope examples as (text, ``oos``)."""
        return [(text, intent.name) for intent in self.intents.values()
                for texts in intent.examples.values() for text in texts] + [
            (text, OUT_OF_SCOPE) for texts in self.out_of_scope.values() for text in texts]

    def handoff_examples(self) -> list[tuple[str, str]]:
        """(text, kind) for every hand-off example, kind a ``Rule`` value."""
        return [(text, kind.value) for kind, by_language in self.handoffs.items()
                for texts in by_language.values() for text in texts]

    def language(self, language: Language) -> Language:
        """The language to answer in: the customer's if the KB has it, else the KB's first."""
        return language if language in self.languages else self.languages[0]

    def message(self, message: Message, language: Language) -> str:
        return self.messages[message][self.language(language)]

    def answer(self, intent: str, language: Language) -> str:
        return self.intents[intent].answer[self.language(language)]

    def phrases(self, rule: Rule) -> tuple[str, ...]:
        """A rule's phrases in every language (customers mix languages)."""
        return tuple(p for lang in self.languages for p in self.rules[rule][lang])


def default_kb_path() -> Path:
    """The packaged knowledge base, router/bot/kb/default.yaml."""
    return Path(str(resources.files("router.bot").joinpath("kb", "default.yaml")))


def resolve_kb_path(configured: str) -> Path:
    """PEAKROUTE_BOT_KB_PATH, or the packaged default when it is empty."""
    return Path(configured) if configured else default_kb_path()


def load_kb(path: Path) -> KnowledgeBase:
    """Read and validate a knowledge base file; raises KnowledgeBaseError saying what to fix."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise KnowledgeBaseError(
            f"{path}: no such file; set PEAKROUTE_BOT_KB_PATH to a knowledge base YAML file, "
            "or leave it empty for the packaged default") from None
    except OSError as exc:
        raise KnowledgeBaseError(f"{path}: cannot be read ({exc.strerror})") from None
    return parse_kb(raw, str(path))


def parse_kb(raw: bytes, source: str) -> KnowledgeBase:
    """Validate a knowledge base given as YAML bytes (``source`` names it in errors)."""
    try:
        data = yaml.load(raw.decode("utf-8"), Loader=_UniqueKeyLoader)  # a SafeLoader
    except UnicodeDecodeError:
        raise KnowledgeBaseError(f"{source}: not UTF-8; save the file as UTF-8") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise KnowledgeBaseError(f"{source}: not valid YAML{line}: {problem}") from None
    kb = _Parser(source).knowledge_base(data)
    return _with_digest(kb, hashlib.sha256(raw).hexdigest())


def _with_digest(kb: KnowledgeBase, digest: str) -> KnowledgeBase:
    return replace(kb, digest=digest)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML keeps the last)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class _Parser:
    """Walks the YAML data; every error names the dotted key that is wrong."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.languages: tuple[Language, ...] = ()

    def fail(self, key: str, problem: str, fix: str) -> KnowledgeBaseError:
        return KnowledgeBaseError(f"{self.source}: {key}: {problem}; {fix}")

    def mapping(self, key: str, value: Any, allowed: set[str] | None = None,
                required: set[str] | None = None) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a mapping, found {_kind(value)}",
                            "write `name: value` lines indented under it")
        for k in value:
            if not isinstance(k, str):
                raise self.fail(key, f"key {k!r} is not text", "quote it")
        if allowed is not None:
            unknown = sorted(set(value) - allowed)
            if unknown:
                raise self.fail(f"{key}.{unknown[0]}" if key else unknown[0], "unknown key",
                                f"use one of: {', '.join(sorted(allowed))} (docs/BOT.md)")
        missing = sorted((required or set()) - set(value))
        if missing:
            raise self.fail(f"{key}.{missing[0]}" if key else missing[0], "missing",
                            "add it (see docs/BOT.md for the format)")
        return value

    def text(self, key: str, value: Any, max_chars: int | None = None) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"expected non-empty text, found {_kind(value)}",
                            "write the text (quote it if YAML reads it as a number or yes/no)")
        if max_chars is not None and len(value) > max_chars:
            raise self.fail(key, f"{len(value)} characters, at most {max_chars}", "shorten it")
        return value

    def per_language(self, key: str, value: Any) -> dict[Language, Any]:
        names = {lang.value for lang in self.languages}
        data = self.mapping(key, value, allowed=names, required=names)
        return {Language(k): v for k, v in data.items()}

    def texts(self, key: str, value: Any, minimum: int = 1) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.fail(key, f"expected a list, found {_kind(value)}",
                            'write a YAML list: ["...", "..."]')
        items = tuple(self.text(f"{key}[{i}]", v) for i, v in enumerate(value))
        if len(items) < minimum:
            raise self.fail(key, f"{len(items)} entries, at least {minimum} needed",
                            "add more")
        return items

    def integer(self, key: str, value: Any, lo: int, hi: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"expected a whole number, found {_kind(value)}",
                            f"write a number in {lo}..{hi}")
        if not lo <= value <= hi:
            raise self.fail(key, f"{value} is outside {lo}..{hi}", f"use {lo}..{hi}")
        return value

    def queue(self, key: str, value: Any) -> str:
        name = self.text(key, value)
        if not ID_RE.fullmatch(name):
            raise self.fail(key, f"{name!r} is not a queue name",
                            "use 1-64 of A-Z a-z 0-9 . _ : @ - (a queue of the routing policy)")
        return name

    def knowledge_base(self, data: Any) -> KnowledgeBase:
        top = self.mapping("", data, allowed={"version", "name", "languages", "threshold",
                                              "neighbour_power", "coverage_power",
                                              "language_thresholds",
                                              "rules", "messages", "intents", "escalations",
                                              "out_of_scope", "handoffs"},
                           required={"version", "languages", "rules", "messages", "intents"})
        if top["version"] != FORMAT_VERSION:
            raise self.fail("version", f"{top['version']!r} is not supported",
                            f"write `version: {FORMAT_VERSION}`")
        name = self.text("name", top.get("name", "knowledge base"))
        self.languages = self.language_list(top["languages"])
        rules_data = self.mapping("rules", top["rules"], allowed={r.value for r in Rule},
                                  required={r.value for r in Rule})
        rules = {Rule(r): {lang: self.texts(f"rules.{r}.{lang}", v)
                           for lang, v in self.per_language(f"rules.{r}", d).items()}
                 for r, d in rules_data.items()}
        messages_data = self.mapping("messages", top["messages"],
                                     allowed={m.value for m in Message},
                                     required={m.value for m in Message})
        messages = {Message(m): {lang: self.text(f"messages.{m}.{lang}", v, MAX_ANSWER_CHARS)
                                 for lang, v in self.per_language(f"messages.{m}", d).items()}
                    for m, d in messages_data.items()}
        intents = self.intents(self.mapping("intents", top["intents"]))
        routes = dict(DEFAULT_ROUTES)
        if "escalations" in top:
            esc = self.mapping("escalations", top["escalations"],
                               allowed={e.value for e in Escalation})
            for e, d in esc.items():
                routes[Escalation(e)] = self.route(f"escalations.{e}", d)
        threshold = self.threshold(top["threshold"]) if "threshold" in top else None
        out_of_scope = self.out_of_scope(top["out_of_scope"], intents) \
            if "out_of_scope" in top else {}
        handoffs = self.handoffs(top["handoffs"], intents, out_of_scope) \
            if "handoffs" in top else {}
        power = None
        if "neighbour_power" in top:
            power = self.threshold(top["neighbour_power"], "neighbour_power", closed=True)
        coverage = None
        if "coverage_power" in top:
            coverage = self.threshold(top["coverage_power"], "coverage_power", closed=True)
        own: dict[str, float] = {}
        if "language_thresholds" in top:
            given = self.per_language("language_thresholds", top["language_thresholds"])
            own = {lang.value: self.threshold(v, f"language_thresholds.{lang.value}")
                   for lang, v in given.items()}
        return KnowledgeBase(name, self.languages, rules, messages, intents, routes, threshold,
                             out_of_scope, handoffs, self.source, neighbour_power=power,
                             coverage_power=coverage, language_thresholds=own)

    def handoffs(self, value: Any, intents: Mapping[str, Intent],
                 out_of_scope: Mapping[Language, tuple[str, ...]]
                 ) -> dict[Rule, dict[Language, tuple[str, ...]]]:
        """Hand-off examples per kind (human_request, anger) and language; none of them may be
        an intent's example or an out-of-scope one (the detector learns them apart)."""
        kinds = {Rule.HUMAN_REQUEST.value, Rule.ANGER.value}
        given = self.mapping("handoffs", value, allowed=kinds)
        owner = {normalize(t): f"intents.{i.name}" for i in intents.values()
                 for texts in i.examples.values() for t in texts}
        owner.update({normalize(t): "out_of_scope" for texts in out_of_scope.values()
                      for t in texts})
        out: dict[Rule, dict[Language, tuple[str, ...]]] = {}
        for kind, d in given.items():
            out[Rule(kind)] = {}
            for lang, v in self.per_language(f"handoffs.{kind}", d).items():
                key = f"handoffs.{kind}.{lang}"
                texts = self.texts(key, v, MIN_EXAMPLES_PER_LANGUAGE)
                for i, text in enumerate(texts):
                    if normalize(text) in owner:
                        raise self.fail(f"{key}[{i}]", f"{text!r} is also in "
                                        f"{owner[normalize(text)]}",
                                        "keep it in one place (or reword one of them)")
                out[Rule(kind)][lang] = texts
        return out

    def out_of_scope(self, value: Any, intents: Mapping[str, Intent]
                     ) -> dict[Language, tuple[str, ...]]:
        """Questions the bot must not answer; none of them may be an intent's example."""
        given = self.per_language("out_of_scope", value)
        out = {lang: self.texts(f"out_of_scope.{lang}", given[lang]) for lang in self.languages}
        owner = {normalize(t): i.name for i in intents.values()
                 for texts in i.examples.values() for t in texts}
        for lang, texts in out.items():
            for i, text in enumerate(texts):
                if normalize(text) in owner:
                    raise self.fail(f"out_of_scope.{lang}[{i}]", f"{text!r} is also an example "
                                    f"of intents.{owner[normalize(text)]}",
                                    "keep it in one place (or reword one of them)")
        return out

    def threshold(self, value: Any, key: str = "threshold", closed: bool = False) -> float:
        """A number between 0 and 1 (``closed``: 0 and 1 allowed)."""
        number = not isinstance(value, bool) and isinstance(value, int | float)
        if not number or not (0 <= value <= 1 if closed else 0 < value < 1):
            raise self.fail(key, f"expected a number between 0 and 1, found "
                            f"{_kind(value)}", f"copy it from `peakroute bot train`'s manifest "
                            f"(or `peakroute bot eval`'s sweep), e.g. `{key}: 0.5`, or remove "
                            "the key")
        return float(value)

    def language_list(self, value: Any) -> tuple[Language, ...]:
        allowed = ", ".join(lang.value for lang in Language)
        if not isinstance(value, list) or not value:
            raise self.fail("languages", f"expected a non-empty list, found {_kind(value)}",
                            f"write e.g. `languages: [zh, en]` (from: {allowed})")
        out: list[Language] = []
        for i, v in enumerate(value):
            if v not in Language._value2member_map_:
                raise self.fail(f"languages[{i}]", f"{v!r} is not a supported language",
                                f"use {allowed}")
            if Language(v) in out:
                raise self.fail(f"languages[{i}]", f"{v!r} is listed twice", "list it once")
            out.append(Language(v))
        return tuple(out)

    def route(self, key: str, value: Any) -> Route:
        d = self.mapping(key, value, allowed={"queue", "priority"}, required={"queue"})
        return Route(self.queue(f"{key}.queue", d["queue"]),
                     self.integer(f"{key}.priority", d.get("priority", 0), *PRIORITY_RANGE))

    def intents(self, data: dict[str, Any]) -> dict[str, Intent]:
        if not data:
            raise self.fail("intents", "no intents", "add at least one intent")
        intents: dict[str, Intent] = {}
        owner: dict[str, str] = {}  # normalised example -> intent, to catch contradictions
        for name, value in data.items():
            key = f"intents.{name}"
            if not INTENT_RE.fullmatch(name):
                raise self.fail(key, "not a valid intent id",
                                "use 1-64 of lower-case a-z, 0-9 and _")
            if name in RESERVED_INTENTS:
                raise self.fail(key, "this name is reserved for the bot's own labels",
                                f"rename it (reserved: {', '.join(sorted(RESERVED_INTENTS))})")
            intent = self.intent(key, name, value)
            for texts in intent.examples.values():
                for text in texts:
                    other = owner.setdefault(normalize(text), name)
                    if other != name:
                        raise self.fail(f"{key}.examples", f"{text!r} is also an example of "
                                        f"intents.{other}",
                                        "keep it under one intent (or reword one of them)")
            intents[name] = intent
        return intents

    def intent(self, key: str, name: str, value: Any) -> Intent:
        d = self.mapping(key, value, allowed={"containable", "queue", "skills", "priority",
                                              "answer", "examples"},
                         required={"containable", "queue", "answer", "examples"})
        if not isinstance(d["containable"], bool):
            raise self.fail(f"{key}.containable", f"expected true or false, found "
                            f"{_kind(d['containable'])}",
                            "write `containable: true` (the bot may close it) or false")
        skills_data = self.mapping(f"{key}.skills", d.get("skills") or {})
        if len(skills_data) > MAX_LEVELS:
            raise self.fail(f"{key}.skills", f"{len(skills_data)} skills, at most {MAX_LEVELS}",
                            "keep the ones that matter")
        skills: dict[str, int] = {}
        for skill, level in skills_data.items():
            if not ID_RE.fullmatch(skill):
                raise self.fail(f"{key}.skills.{skill}", "not a valid skill name",
                                "use 1-64 of A-Z a-z 0-9 . _ : @ -")
            skills[skill] = self.integer(f"{key}.skills.{skill}", level, *LEVEL_RANGE)
        answer = {lang: self.text(f"{key}.answer.{lang}", v, MAX_ANSWER_CHARS)
                  for lang, v in self.per_language(f"{key}.answer", d["answer"]).items()}
        examples = {lang: self.texts(f"{key}.examples.{lang}", v, MIN_EXAMPLES_PER_LANGUAGE)
                    for lang, v in self.per_language(f"{key}.examples", d["examples"]).items()}
        return Intent(name, d["containable"], self.queue(f"{key}.queue", d["queue"]), skills,
                      self.integer(f"{key}.priority", d.get("priority", 0), *PRIORITY_RANGE),
                      answer, examples)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"the boolean {value}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return "text" if value.strip() else "empty text"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__
