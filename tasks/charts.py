"""Report charts drawn server-side with matplotlib's Agg and SVG canvases (no pyplot, no GUI).

Each chart comes out twice: as inline SVG for HTML reports (text stays text, so it is
searchable and selectable) and as PNG for e-mail, where it is attached and referenced by
Content-ID. Pilot and control keep the same colours in every chart.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from html import escape

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.dates import MO, DayLocator, WeekdayLocator, num2date
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter

ARM_COLOURS = {"pilot": "#e8590c", "control": "#1c7ed6"}
BAR_COLOUR = "#5c7cfa"
ALERT_COLOUR = "#c92a2a"
REFERENCE_COLOUR = "#495057"
WIDTH_INCHES = 8.0
PNG_DPI = 110
STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 10,
    "axes.titlesize": 12,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e9ecef",
    "svg.fonttype": "none",
    # Customer-provided labels (regions, topics) must never be parsed as TeX.
    "text.parse_math": False,
}


@dataclass(frozen=True)
class Chart:
    """A drawn chart: `svg` to inline in HTML, `png` to attach to e-mail as `cid:{cid}`."""

    name: str
    title: str
    svg: str
    png: bytes

    @property
    def cid(self) -> str:
        return f"{self.name}@cxloop"


def _figure(height: float) -> Figure:
    figure = Figure(figsize=(WIDTH_INCHES, height), layout="constrained")
    figure.set_facecolor("white")
    return figure


def _draw(name: str, title: str, figure: Figure) -> Chart:
    # Several SVGs share one HTML document, so their element ids must not collide.
    with mpl.rc_context({**STYLE, "svg.hashsalt": name}):
        svg_buffer, png_buffer = io.StringIO(), io.BytesIO()
        figure.savefig(svg_buffer, format="svg", metadata={"Date": None})
        figure.savefig(png_buffer, format="png", dpi=PNG_DPI)
    svg = svg_buffer.getvalue()
    svg = svg[svg.index("<svg") :]
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    svg = re.sub(r'id="([^"]+)"', rf'id="{name}-\1"', svg)
    svg = re.sub(r'(url\(#|href="#)([^)"]+)', rf"\1{name}-\2", svg)
    svg = svg.replace("<svg ", f'<svg class="chart" role="img" aria-label="{escape(title)}" ', 1)
    return Chart(name=name, title=title, svg=svg, png=png_buffer.getvalue())


def _numbers(decimal: str) -> FuncFormatter:
    """Axis numbers written with `decimal` as the decimal mark."""
    return FuncFormatter(lambda x, _: f"{x:g}".replace(".", decimal))


def arms_over_time(
    name: str,
    series: pd.DataFrame,
    title: str,
    y_label: str,
    arm_labels: dict[str, str],
    pilot_start: date,
    pilot_label: str,
    months: Sequence[str],
) -> Chart:
    """Weekly values per arm (`week`, `arm`, `value`, `ci_low`, `ci_high`), pilot start marked;
    weeks ticked by their Monday as day and month, named by `months` (January first)."""
    with mpl.rc_context(STYLE):
        figure = _figure(3.4)
        ax = figure.add_subplot()
        for arm in ("control", "pilot"):
            rows = series[series["arm"] == arm].sort_values("week")
            colour = ARM_COLOURS[arm]
            ax.fill_between(
                rows["week"], rows["ci_low"], rows["ci_high"], color=colour, alpha=0.12, lw=0
            )
            ax.plot(
                rows["week"],
                rows["value"],
                marker="o",
                ms=4,
                color=colour,
                lw=2,
                label=arm_labels[arm],
            )
        _weekly_axes(ax, pd.Timestamp(pilot_start), pilot_label, title, y_label, months,
                     series["week"].nunique())  # fmt: skip
    return _draw(name, title, figure)


def _weekly_axes(
    ax: Axes, start: pd.Timestamp, start_label: str, title: str, y_label: str,
    months: Sequence[str], weeks: int,
) -> None:  # fmt: skip
    """Titles, a legend right of the plot, the start marked and labelled, and about eight
    Monday ticks over `weeks` weeks, read as day and month."""
    ax.axvline(start, color=REFERENCE_COLOUR, ls="--", lw=1.2)
    ax.annotate(
        start_label,
        (start, 1),
        xycoords=("data", "axes fraction"),
        xytext=(4, -12),
        textcoords="offset points",
        color=REFERENCE_COLOUR,
    )
    ax.set_title(title, loc="left")
    ax.set_ylabel(y_label)
    ax.legend(loc="upper left", bbox_to_anchor=(1, 1), frameon=False)
    ax.xaxis.set_major_locator(WeekdayLocator(MO, interval=max(1, -(-weeks // 8))))
    ax.xaxis.set_major_formatter(
        FuncFormatter(lambda x, _: f"{num2date(x).day} {months[num2date(x).month - 1]}")
    )


def bars(
    name: str,
    labels: Sequence[str],
    values: Sequence[float],
    title: str,
    x_label: str,
    ci: tuple[Sequence[float], Sequence[float]] | None = None,
    highlight: Sequence[bool] | None = None,
    reference: tuple[float, str] | None = None,
    decimal: str = ".",
) -> Chart:
    """Horizontal bars, first label on top, optional 95% CI whiskers and a reference line.

    Highlighted bars (for example a region significantly below the overall value) are red;
    bar values and axis numbers use `decimal` as the decimal mark (`,` in Russian).
    """
    values = np.asarray(values, dtype=float)
    marked = np.asarray(highlight if highlight is not None else [False] * len(values))
    with mpl.rc_context(STYLE):
        figure = _figure(0.9 + 0.36 * max(len(values), 1))
        ax = figure.add_subplot()
        y = np.arange(len(values))[::-1]
        colours = np.where(marked, ALERT_COLOUR, BAR_COLOUR)
        ax.barh(y, np.nan_to_num(values), color=colours, height=0.62)
        if ci is not None:
            low, high = np.asarray(ci[0], dtype=float), np.asarray(ci[1], dtype=float)
            ax.errorbar(
                values,
                y,
                xerr=[values - low, high - values],
                fmt="none",
                ecolor="#343a40",
                capsize=3,
                lw=1,
            )
        for position, value in zip(y, values, strict=True):
            if not np.isnan(value):
                ax.annotate(
                    f"{value:.1f}".replace(".", decimal),
                    (0, position),
                    xytext=(4 if value >= 0 else -4, 0),
                    textcoords="offset points",
                    ha="left" if value >= 0 else "right",
                    va="center",
                    color="white",
                    fontweight="bold",
                )
        if reference is not None:
            ax.axvline(reference[0], color=REFERENCE_COLOUR, ls="--", lw=1.2)
            ax.annotate(
                reference[1],
                (reference[0], 1),
                xycoords=("data", "axes fraction"),
                xytext=(4, 2),
                textcoords="offset points",
                color=REFERENCE_COLOUR,
            )
        ax.set_yticks(y, labels)
        ax.xaxis.set_major_formatter(_numbers(decimal))
        ax.grid(axis="y", visible=False)
        ax.set_xlabel(x_label)
        ax.set_title(title, loc="left")
    return _draw(name, title, figure)


def load_heatmap(
    name: str,
    counts: pd.DataFrame,
    title: str,
    weekdays: Sequence[str],
    hour_label: str,
    count_label: str,
    decimal: str = ".",
) -> Chart:
    """Counts per weekday (rows 0–6) × hour (columns 0–23), the busiest cell outlined; the
    colour scale's numbers use `decimal` as the decimal mark."""
    grid = counts.reindex(index=range(7), columns=range(24), fill_value=0).to_numpy()
    with mpl.rc_context({**STYLE, "axes.grid": False}):
        figure = _figure(3.3)
        ax = figure.add_subplot()
        image = ax.imshow(grid, aspect="auto", cmap="YlOrRd", interpolation="nearest")
        row, column = np.unravel_index(np.argmax(grid), grid.shape)
        ax.add_patch(Rectangle((column - 0.5, row - 0.5), 1, 1, fill=False, ec="#212529", lw=2))
        ax.set_yticks(range(7), list(weekdays))
        ax.set_xticks(range(0, 24, 2), [f"{h:02d}" for h in range(0, 24, 2)])
        ax.set_xlabel(hour_label)
        ax.set_title(title, loc="left")
        scale = figure.colorbar(image, ax=ax, label=count_label, pad=0.01)
        scale.ax.yaxis.set_major_formatter(_numbers(decimal))
    return _draw(name, title, figure)


def trend(
    name: str,
    series: pd.DataFrame,
    title: str,
    y_label: str,
    marks: Sequence[tuple[date, str]],
    months: Sequence[str],
    decimal: str = ".",
) -> Chart:
    """Monthly values (`period` as each month's first day, `value`, `ci_low`, `ci_high`) as a
    line with its 95% CI band where it has one; each of `marks` (day, label: a pilot start)
    is a dashed line. Months are ticked by `months` (January first)."""
    series = series.sort_values("period")
    with mpl.rc_context(STYLE):
        figure = _figure(2.6)
        ax = figure.add_subplot()
        ax.fill_between(series["period"], series["ci_low"], series["ci_high"],
                        color=BAR_COLOUR, alpha=0.15, lw=0)  # fmt: skip
        ax.plot(series["period"], series["value"], marker="o", ms=4, color=BAR_COLOUR, lw=2)
        for day, label in marks:
            at = pd.Timestamp(day)
            ax.axvline(at, color=REFERENCE_COLOUR, ls="--", lw=1)
            ax.annotate(label, (at, 1), xycoords=("data", "axes fraction"), xytext=(3, -11),
                        textcoords="offset points", color=REFERENCE_COLOUR)  # fmt: skip
        ax.set_title(title, loc="left")
        ax.set_ylabel(y_label)
        ax.set_xticks(series["period"])
        ax.set_xticklabels([months[p.month - 1] for p in series["period"]])
        ax.yaxis.set_major_formatter(_numbers(decimal))
    return _draw(name, title, figure)


def intervals(
    name: str, rows: Sequence[dict], title: str, margin_label: str, decimal: str = "."
) -> Chart:
    """One panel per metric (`rows`: `label`, `estimate`, `ci_low`, `ci_high`, `unit`,
    optional `margin`), each on its own scale: the estimate with its 95% CI, zero, and a
    guardrail's margin as a red dashed line."""
    with mpl.rc_context(STYLE):
        figure = _figure(0.7 + 0.95 * max(len(rows), 1))
        axes = figure.subplots(max(len(rows), 1), 1, squeeze=False)[:, 0]
        figure.suptitle(title, x=0, ha="left", fontsize=STYLE["axes.titlesize"],
                        fontweight="bold")  # fmt: skip
        for ax, row in zip(axes, rows, strict=False):
            value, low, high = row["estimate"], row["ci_low"], row["ci_high"]
            ax.errorbar([value], [0], xerr=[[value - low], [high - value]], fmt="o", lw=1.5,
                        color=ARM_COLOURS["pilot"], ecolor="#343a40", capsize=4)  # fmt: skip
            ax.axvline(0, color=REFERENCE_COLOUR, lw=1)
            margin = row.get("margin")
            if margin is not None:
                ax.axvline(margin, color=ALERT_COLOUR, ls="--", lw=1.2, label=margin_label)
                ax.legend(loc="upper left", bbox_to_anchor=(1, 1.1), frameon=False)
            ax.set_yticks([])
            ax.set_title(f"{row['label']}, {row['unit']}", loc="left", fontsize=STYLE["font.size"])
            ax.xaxis.set_major_formatter(_numbers(decimal))
            ax.grid(axis="y", visible=False)
    return _draw(name, title, figure)


def treated_against_counterfactual(
    name: str,
    series: pd.DataFrame,
    title: str,
    y_label: str,
    line_labels: tuple[str, str],
    pilot_start: date,
    pilot_label: str,
    months: Sequence[str],
) -> Chart:
    """A unit pilot's treated series against its counterfactual (`period`, `treated`,
    `counterfactual`: synthetic control or DiD path), the gap after the start shaded and the
    start marked; `line_labels` names the two lines, periods ticked as in `arms_over_time`."""
    series = series.assign(period=pd.to_datetime(series["period"])).sort_values("period")
    with mpl.rc_context(STYLE):
        figure = _figure(3.4)
        ax = figure.add_subplot()
        ax.plot(
            series["period"],
            series["counterfactual"],
            color=ARM_COLOURS["control"],
            lw=2,
            ls="--",
            label=line_labels[1],
        )
        ax.plot(
            series["period"],
            series["treated"],
            color=ARM_COLOURS["pilot"],
            lw=2,
            marker="o",
            ms=4,
            label=line_labels[0],
        )
        start = pd.Timestamp(pilot_start)
        after = series["period"] >= start
        ax.fill_between(
            series["period"],
            series["treated"],
            series["counterfactual"],
            where=after.to_numpy(),
            color=ARM_COLOURS["pilot"],
            alpha=0.15,
            lw=0,
        )
        _weekly_axes(ax, start, pilot_label, title, y_label, months, len(series))
    return _draw(name, title, figure)


def cumulative(
    name: str,
    points: pd.DataFrame,
    title: str,
    y_label: str,
    expected: tuple[float, str] | None,
    months: Sequence[str],
    decimal: str = ".",
) -> Chart:
    """An estimate recomputed on the data up to each day (`day`, `estimate`, `ci_low`,
    `ci_high`) as a line in its interval band, zero drawn, and the `expected` effect (value,
    label) as a dashed line; about eight day ticks read as day and month (`months`, January
    first), axis numbers with `decimal` as the decimal mark."""
    points = points.assign(day=pd.to_datetime(points["day"])).sort_values("day")
    with mpl.rc_context(STYLE):
        figure = _figure(3.0)
        ax = figure.add_subplot()
        colour = ARM_COLOURS["pilot"]
        ax.fill_between(points["day"], points["ci_low"], points["ci_high"], color=colour,
                        alpha=0.15, lw=0)  # fmt: skip
        ax.plot(points["day"], points["estimate"], color=colour, lw=2, marker="o", ms=3)
        ax.axhline(0, color=REFERENCE_COLOUR, lw=1)
        if expected is not None:
            ax.axhline(expected[0], color=REFERENCE_COLOUR, ls="--", lw=1.2)
            ax.annotate(expected[1], (0, expected[0]), xycoords=("axes fraction", "data"),
                        xytext=(4, 3), textcoords="offset points",
                        color=REFERENCE_COLOUR)  # fmt: skip
        span = max(1, (points["day"].max() - points["day"].min()).days) if len(points) else 1
        ax.xaxis.set_major_locator(DayLocator(interval=max(1, -(-span // 7))))
        ax.xaxis.set_major_formatter(
            FuncFormatter(lambda x, _: f"{num2date(x).day} {months[num2date(x).month - 1]}")
        )
        ax.yaxis.set_major_formatter(_numbers(decimal))
        ax.set_title(title, loc="left")
        ax.set_ylabel(y_label)
    return _draw(name, title, figure)
