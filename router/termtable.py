"""Terminal tables that fit the terminal: columns carry a priority, and the least important are
dropped until the table fits the width (rather than rich squeezing every column to "10…").
`peakroute status`, `plan` and `rating` use it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

Cell = str | Text


@dataclass(slots=True)
class Column:
    header: str
    cells: list[Cell] = field(default_factory=list)
    priority: int = 0  # higher stays longer; the first column should have the highest
    justify: Literal["left", "right"] = "right"
    max_width: int | None = None  # text columns (names) are cut with an ellipsis past this
    short: str = ""  # a name for the legend of hidden columns ("SL 1h")


def _build(columns: Sequence[Column]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", padding=(0, 1), pad_edge=False)
    for c in columns:
        table.add_column(c.header, justify=c.justify, no_wrap=True, max_width=c.max_width,
                         overflow="ellipsis")
    rows = max((len(c.cells) for c in columns), default=0)
    for i in range(rows):
        table.add_row(*(c.cells[i] if i < len(c.cells) else "" for c in columns))
    return table


def width_of(table: Table, console: Console) -> int:
    """The width ``table`` takes when nothing is squeezed."""
    return Measurement.get(console, console.options.update(width=10_000), table).maximum


def fit(columns: Sequence[Column], width: int, console: Console | None = None
        ) -> tuple[Table, list[Column]]:
    """A table of the most important columns that fits ``width``; and the columns dropped.
    Ties in priority drop the rightmost first; the first column is always kept."""
    console = console or Console(width=10_000)
    shown = list(columns)
    dropped: list[Column] = []
    table = _build(shown)
    while len(shown) > 1 and width_of(table, console) > width:
        least = min(range(1, len(shown)), key=lambda i: (shown[i].priority, -i))
        dropped.append(shown.pop(least))
        table = _build(shown)
    return table, dropped
