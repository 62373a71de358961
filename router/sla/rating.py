"""Merchant service rating (the idea of Tmall's 新灯塔): per routing domain (a merchant) a score
of 0-100 from the router's own SLA figures over one window (PEAKROUTE_RATING_WINDOW), and a tier
from thresholds in PEAKROUTE_RATING_TIERS. Pure: the snapshot (router/sla/snapshot.py) computes
it for /metrics, `peakroute status`, `peakroute rating` and the supervisor console.

Components, each in [0, 1], from the domain's queues summed over the window (docs/METRICS.md
has a worked example):

=================  ======  =====================================================================
component          weight  value
=================  ======  =====================================================================
service_level      0.35    min(1, service level / objective); the service level under
                           PEAKROUTE_SLA_FORMULA
within_target      0.15    answered within target / answered
answer_speed       0.20    max(0, 1 - mean over answered contacts of wait / its queue's target)
                           (one queue: 1 - ASA / target)
retention          0.20    1 - (abandoned - short abandoned) / (answered + abandoned - short
                           abandoned)
bot_containment    0.10    contained / arrived, the domain's books (running totals: the bot's
                           outcomes are not bucketed by minute)
=================  ======  =====================================================================

score = 100 x sum(weight x value) / sum(weight) over the components that are defined. A domain
with fewer than PEAKROUTE_RATING_MIN_CONTACTS answered + abandoned contacts in the window is
unrated (no score, tier ``unrated``): a handful of contacts says little about a merchant.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from router.errors import SettingsError
from router.sla.windows import Counts, service_level, total

if TYPE_CHECKING:
    from router.settings import Settings
    from router.sla.snapshot import DomainFigures, QueueFigures

WEIGHTS: dict[str, float] = {
    "service_level": 0.35,
    "within_target": 0.15,
    "answer_speed": 0.20,
    "retention": 0.20,
    "bot_containment": 0.10,
}
UNRATED = "unrated"
BELOW = "none"  # a score under every threshold (when no tier starts at 0)


def parse_tiers(text: str) -> list[tuple[str, float]]:
    """``gold=85,silver=70,bronze=55,basic=0`` -> [(name, lowest score)], best first."""
    tiers: list[tuple[str, float]] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        name = name.strip()
        try:
            threshold = float(value)
        except ValueError:
            threshold = float("nan")
        if not name or not name.replace("_", "").replace("-", "").isalnum() \
                or not 0 <= threshold <= 100 or name in (UNRATED, BELOW):
            raise SettingsError(
                f"PEAKROUTE_RATING_TIERS: {part!r} is not name=score (a word, and a score "
                f"0-100; {UNRATED!r} and {BELOW!r} are reserved), e.g. "
                "gold=85,silver=70,bronze=55,basic=0")
        tiers.append((name, threshold))
    if not tiers:
        raise SettingsError("PEAKROUTE_RATING_TIERS needs at least one tier, e.g. gold=85")
    if [t for _, t in tiers] != sorted((t for _, t in tiers), reverse=True) \
            or len({n for n, _ in tiers}) != len(tiers):
        raise SettingsError("PEAKROUTE_RATING_TIERS: list distinct tiers from the highest "
                            "score down, e.g. gold=85,silver=70,bronze=55,basic=0")
    return tiers


def tier_of(score: float, tiers: Sequence[tuple[str, float]]) -> str:
    return next((name for name, lowest in tiers if score >= lowest), BELOW)


@dataclass(frozen=True, slots=True)
class Rating:
    domain: str
    window: str
    score: float | None  # 0-100; None when unrated
    tier: str
    contacts: int  # answered + abandoned in the window
    components: dict[str, float | None] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"domain": self.domain, "window": self.window, "score": self.score,
                "tier": self.tier, "contacts": self.contacts,
                "components": dict(self.components)}


def components(queues: Sequence[tuple[Counts, float]], containment: float | None,
               objective: float, formula: str) -> dict[str, float | None]:
    """The five component values of a domain's queues (counts over the window, target in
    seconds), None where undefined (nothing answered, nothing arrived)."""
    c = total(counts for counts, _ in queues)
    sl = service_level(c, formula)
    handled = c.answered + c.abandoned - c.short_abandoned
    relative_wait = sum(counts.wait_sum_ms / 1000 / target for counts, target in queues
                        if target > 0)
    return {
        "service_level": min(1.0, sl / objective) if sl is not None else None,
        "within_target": c.answered_within_target / c.answered if c.answered else None,
        "answer_speed": max(0.0, 1 - relative_wait / c.answered) if c.answered else None,
        "retention": 1 - (c.abandoned - c.short_abandoned) / handled if handled > 0 else None,
        "bot_containment": containment,
    }


def rate(domain: str, window: str, queues: Sequence[tuple[Counts, float]],
         containment: float | None, objective: float, formula: str,
         tiers: Sequence[tuple[str, float]], min_contacts: int) -> Rating:
    """One domain's rating (see the module's docstring for the formula)."""
    c = total(counts for counts, _ in queues)
    contacts = c.answered + c.abandoned
    values = components(queues, containment, objective, formula)
    defined = {k: v for k, v in values.items() if v is not None}
    if contacts < min_contacts or not defined:
        return Rating(domain, window, None, UNRATED, contacts, values)
    weight = sum(WEIGHTS[k] for k in defined)
    score = round(100 * sum(WEIGHTS[k] * v for k, v in defined.items()) / weight, 1)
    return Rating(domain, window, score, tier_of(score, tiers), contacts, values)


def rate_figures(d: DomainFigures, queues: Sequence[QueueFigures], settings: Settings
                 ) -> Rating:
    """A domain of a snapshot rated under the settings' window, objective, formula and tiers."""
    window = settings.rating_window
    return rate(d.domain, window, [(q.windows[window].counts, q.target_s) for q in queues],
                d.containment, settings.sla_objective_ratio, settings.sla_formula,
                parse_tiers(settings.rating_tiers), settings.rating_min_contacts)


def ranked(ratings: Sequence[Rating]) -> list[Rating]:
    """Best score first; unrated domains last, by name."""
    return sorted(ratings, key=lambda r: (r.score is None, -(r.score or 0.0), r.domain))
