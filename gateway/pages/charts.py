"""The geometry of the charts the pages draw as inline SVG: bars by quarter, bars by CPV
division, and the division x quarter heat map. Pure: figures in, shapes out; the templates
turn the shapes into SVG elements (presentation attributes only, so a strict CSP holds)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.pages.figures import Cell, division_label, quarter_label, short_pounds

# Sequential blues, light to dark, each with a text colour of at least 4.5:1 contrast on it.
HEAT_FILLS = ("#e8f1fa", "#c6dbef", "#9ecae1", "#6baed6", "#3182bd", "#08519c")
HEAT_TEXT = ("#1b1b1b", "#1b1b1b", "#1b1b1b", "#1b1b1b", "#ffffff", "#ffffff")
EMPTY_FILL = "#f7f7f7"
BAR_FILL = "#1d5fa8"


def nice_ceiling(value: float) -> float:
    """The smallest round number (1, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 x 10^n) at or above ``value``:
    an axis maximum a person can read, that leaves the largest bar most of the axis."""
    if value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        candidate = step * 10**exponent
        if candidate >= value:
            return float(candidate)
    return float(10 ** (exponent + 1))


@dataclass
class Bar:
    label: str
    title: str  # what a pointer shows, and the text alternative of the bar
    x: float
    y: float
    width: float
    height: float
    value_text: str
    withheld: bool = False
    href: str | None = None

    @property
    def label_lines(self) -> list[str]:
        """A quarter's label on two lines (``Oct-Dec`` over ``2026``) so neighbours never overlap."""
        return self.label.rsplit(" ", 1)


@dataclass
class Tick:
    position: float
    text: str


@dataclass
class BarChart:
    width: int
    height: int
    plot_left: float
    plot_top: float
    plot_width: float
    plot_height: float
    bars: list[Bar] = field(default_factory=list)
    ticks: list[Tick] = field(default_factory=list)
    horizontal: bool = False


def quarter_bars(quarters: Sequence[str], cells: dict[tuple[str, ...], Cell]) -> BarChart:
    """Vertical bars of value by quarter; a withheld quarter is a hatched column, not a bar."""
    chart = BarChart(width=760, height=310, plot_left=80, plot_top=24, plot_width=660, plot_height=216)
    values = [c.value_pence for c in cells.values() if not c.suppressed and c.value_pence is not None]
    top = nice_ceiling(max(values, default=0))
    chart.ticks = [
        Tick(chart.plot_top + chart.plot_height * (1 - i / 4), short_pounds(int(top * i / 4)))
        for i in range(5)
    ]
    slot = chart.plot_width / max(1, len(quarters))
    for n, quarter in enumerate(quarters):
        cell = cells.get((quarter,))
        x = chart.plot_left + n * slot + slot * 0.15
        width = slot * 0.7
        label = quarter_label(quarter)
        if cell is not None and cell.suppressed:
            chart.bars.append(
                Bar(
                    label,
                    f"{label}: figures withheld",
                    x,
                    chart.plot_top,
                    width,
                    chart.plot_height,
                    "withheld",
                    withheld=True,
                )
            )
            continue
        value = cell.value_pence if cell is not None and cell.value_pence is not None else 0
        height = chart.plot_height * value / top
        count = cell.count if cell is not None else 0
        chart.bars.append(
            Bar(
                label,
                f"{label}: {short_pounds(value)} across {count} opportunit{'y' if count == 1 else 'ies'}",
                x,
                chart.plot_top + chart.plot_height - height,
                width,
                height,
                short_pounds(value),
            )
        )
    return chart


def division_bars(cells: dict[tuple[str, ...], Cell], link: str) -> BarChart:
    """Horizontal bars of value by CPV division, largest first, withheld divisions last."""
    published = sorted(
        ((k[0], c) for k, c in cells.items() if not c.suppressed),
        key=lambda item: (-(item[1].value_pence or 0), item[0]),
    )
    withheld = sorted((k[0], c) for k, c in cells.items() if c.suppressed)
    rows = published + withheld
    row_height = 26
    chart = BarChart(
        width=760,
        height=40 + row_height * max(1, len(rows)),
        plot_left=330,
        plot_top=28,
        plot_width=330,
        plot_height=row_height * max(1, len(rows)),
        horizontal=True,
    )
    top = nice_ceiling(max((c.value_pence or 0 for _, c in published), default=0))
    chart.ticks = [
        Tick(chart.plot_left + chart.plot_width * i / 4, short_pounds(int(top * i / 4))) for i in range(5)
    ]
    for n, (division, cell) in enumerate(rows):
        y = chart.plot_top + n * row_height + 4
        label = division_label(division)
        href = f"{link}cpv={division}"
        if cell.suppressed:
            chart.bars.append(
                Bar(
                    label,
                    f"{label}: figures withheld",
                    chart.plot_left,
                    y,
                    chart.plot_width,
                    row_height - 8,
                    "withheld",
                    withheld=True,
                    href=href,
                )
            )
            continue
        value = cell.value_pence or 0
        chart.bars.append(
            Bar(
                label,
                f"{label}: {short_pounds(value)} across {cell.count} opportunities",
                chart.plot_left,
                y,
                chart.plot_width * value / top,
                row_height - 8,
                short_pounds(value),
                href=href,
            )
        )
    return chart


@dataclass
class HeatCell:
    x: float
    y: float
    fill: str
    text: str
    text_fill: str
    title: str
    withheld: bool = False


@dataclass
class HeatMap:
    width: int
    height: int
    label_width: int
    cell_width: int
    cell_height: int
    columns: list[tuple[float, str]] = field(default_factory=list)
    rows: list[tuple[float, str, str]] = field(default_factory=list)  # y, division, label
    cells: list[HeatCell] = field(default_factory=list)
    legend: list[tuple[str, str, str]] = field(default_factory=list)  # fill, text fill, range


def heat_map(
    divisions: Sequence[str], quarters: Sequence[str], cells: dict[tuple[str, ...], Cell]
) -> HeatMap:
    """Divisions down, quarters across; a cell's shade is its value's sixth of the largest."""
    label_width, cell_width, cell_height = 340, 88, 34
    chart = HeatMap(
        width=label_width + cell_width * len(quarters) + 10,
        height=52 + cell_height * max(1, len(divisions)),
        label_width=label_width,
        cell_width=cell_width,
        cell_height=cell_height,
    )
    top = max((c.value_pence or 0 for c in cells.values() if not c.suppressed), default=0)
    chart.columns = [
        (label_width + i * cell_width + cell_width / 2, quarter_label(q)) for i, q in enumerate(quarters)
    ]
    for r, division in enumerate(divisions):
        y = 46 + r * cell_height
        chart.rows.append((y, division, division_label(division)))
        for c, quarter in enumerate(quarters):
            x = label_width + c * cell_width
            cell = cells.get((division, quarter))
            where = f"{division_label(division)}, {quarter_label(quarter)}"
            if cell is None:
                chart.cells.append(
                    HeatCell(x, y, EMPTY_FILL, "\u2013", "#595959", f"{where}: no published demand")
                )
            elif cell.suppressed:
                chart.cells.append(
                    HeatCell(
                        x,
                        y,
                        "url(#withheld)",
                        "withheld",
                        "#1b1b1b",
                        f"{where}: figures withheld",
                        withheld=True,
                    )
                )
            else:
                value = cell.value_pence or 0
                shade = min(len(HEAT_FILLS) - 1, int(len(HEAT_FILLS) * value / top)) if top else 0
                chart.cells.append(
                    HeatCell(
                        x,
                        y,
                        HEAT_FILLS[shade],
                        short_pounds(value),
                        HEAT_TEXT[shade],
                        f"{where}: {short_pounds(value)} across {cell.count} opportunities",
                    )
                )
    for shade, fill in enumerate(HEAT_FILLS):
        low, high = top * shade / len(HEAT_FILLS), top * (shade + 1) / len(HEAT_FILLS)
        chart.legend.append(
            (fill, HEAT_TEXT[shade], f"{short_pounds(int(low))} to {short_pounds(int(high))}")
        )
    return chart
