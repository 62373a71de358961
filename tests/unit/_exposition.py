"""The code's exposition with every family present: this process's registry, with the SLA
collector exporting a snapshot that has a value for every series (what the lease holder shows)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from router import metrics
from router.settings import Settings
from router.sla.rating import rate_figures
from router.sla.snapshot import DomainFigures, QueueFigures, Snapshot, WindowFigures
from router.sla.windows import WINDOW_NAMES, Counts

ROOT = Path(__file__).resolve().parents[2]
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def sample_snapshot() -> Snapshot:
    c = Counts(offered=10, answered=8, answered_within_target=7, abandoned=2, short_abandoned=1,
               wait_sum_ms=80_000, wait_max_ms=31_000)
    windows = {w: WindowFigures(c, 7 / 9, 10.0) for w in WINDOW_NAMES}
    q = QueueFigures(domain="shop-1", queue="refunds", target_s=30.0, windows=windows, totals=c,
                     waiting=3, queued=2, oldest_wait_s=21.0, at_risk=1, agents_ready=4,
                     estimated_wait_s=12.0)
    d = DomainFigures("shop-1", {"ready": 4, "not_ready": 1}, 0.5,
                      {"arrived": 20, "contained": 10})
    rating = rate_figures(d, [q], Settings(rating_min_contacts=5))
    return Snapshot(1_800_000_000_000, "short_abandons_excluded", 0.8, [d], [q], [rating])


def exposition() -> str:
    saved = metrics.CLUSTER.snapshot, metrics.CLUSTER.exporting
    metrics.CLUSTER.snapshot, metrics.CLUSTER.exporting = sample_snapshot(), True
    try:
        return metrics.exposition().decode()
    finally:
        metrics.CLUSTER.snapshot, metrics.CLUSTER.exporting = saved


def exported_names() -> set[str]:
    """Every series name a query may use: families (from # TYPE), with their sample suffixes."""
    names = set()
    for line in exposition().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            if kind == "counter":
                names.add(name + "_total")
            if kind == "histogram":
                names.update(name + s for s in HISTOGRAM_SUFFIXES)
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def promtool() -> str:
    """promtool's path; the tests fail (never skip) without it."""
    path = shutil.which("promtool")
    assert path, ("promtool not found: `make tools` installs it (Debian package prometheus; "
                  "sudo apt-get install prometheus)")
    return path
