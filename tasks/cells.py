"""Two-way cells worse than their halves explain, with the false discovery rate controlled.

A cell is the units (respondents, tickets, sessions) that have a row value (a ticket topic, a
device) and a column value (a region, a segment) at once. It splits the units in four:

    A  row and column (the cell)     B  row, other columns
    C  column, other rows            D  neither

The cell's *interaction loss* is (B + C) − (A + D) in outcome means: how much worse the cell
is than the sum of its row's and its column's effects predicts (a difference in
differences); 0 when the two halves add up. Each quadrant's mean has its own variance, so
the standard error is √(Σ s²/n) over the four, and the one-sided p-value asks whether the
cell is worse. Outcomes are "higher is better" (NPS points, conversion in %).

Across the whole family of cells, Benjamini–Hochberg at `Q_FDR` keeps the expected share of
noise among the flagged cells at 5%; under no planted pain at all, that bounds the chance
that anything is flagged by 5% too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from tasks.funnels import funnel_rows
from tasks.moments import Moments, normal_ci

Q_FDR = 0.05
MIN_QUADRANT = 20  # units per quadrant below which a cell's variance is too thin to test


def unit_cells(y: pd.Series, rows: pd.DataFrame, dims: pd.DataFrame) -> pd.DataFrame:
    """Interaction contrasts of every (row, dimension, value) cell of per-unit outcomes.

    `y` is one outcome per unit (index: unit id). `rows` pairs units with row values
    (`unit`, `row`); a unit may have several rows (a customer with tickets on two topics).
    `dims` gives each unit one value per dimension (index: unit id, one column per
    dimension; NaN leaves the unit out of that dimension). Returns `cell_frame` columns.
    """
    return CellGrid.of(y.index, rows, dims).table(y.to_numpy(dtype=float))


@dataclass(frozen=True)
class CellGrid:
    """Units coded once (rows and dimension values as integers), so the cells of any
    outcome over them are a few `np.bincount`s: cheap enough to recompute while peeling."""

    row_names: np.ndarray
    pair_unit: np.ndarray  # position of each (unit, row) pair's unit
    pair_row: np.ndarray  # code of its row
    codes: dict[str, tuple[np.ndarray, np.ndarray]]  # dimension -> (code per unit, names)

    @classmethod
    def of(cls, units: pd.Index, rows: pd.DataFrame, dims: pd.DataFrame) -> CellGrid:
        """The grid of `unit_cells`' arguments, on the units `units` (in that order)."""
        pairs = rows[["unit", "row"]].drop_duplicates()
        position = pd.Index(units).get_indexer(pairs["unit"])
        pairs = pairs[position >= 0]
        row_code, row_names = pd.factorize(pairs["row"], sort=True)
        codes = {}
        for dim in dims.columns:
            code, names = pd.factorize(dims[dim].reindex(units), sort=True)
            codes[dim] = (code, np.asarray(names, dtype=object))
        return cls(np.asarray(row_names, dtype=object), position[position >= 0], row_code, codes)

    def table(self, y: np.ndarray) -> pd.DataFrame:
        """`cell_frame` columns for every cell of every dimension, for outcomes `y` (one per
        unit, in the grid's unit order)."""
        tables = []
        rows = len(self.row_names)
        for dim, (code, names) in self.codes.items():
            known = code >= 0
            pair_col = code[self.pair_unit]
            inside = pair_col >= 0
            values = y[self.pair_unit][inside]
            flat = self.pair_row[inside] * len(names) + pair_col[inside]
            size = rows * len(names)
            cell = _counted(flat, values, size)
            row = _counted(self.pair_row[inside], values, rows)
            col = _counted(code[known], y[known], len(names))
            present = np.flatnonzero(cell[0] > 0)
            if not len(present):
                continue
            r, c = present // len(names), present % len(names)
            index = pd.MultiIndex.from_arrays([self.row_names[r], names[c]], names=["row", "col"])

            grand = Moments(float(known.sum()), float(y[known].sum()), float((y[known] ** 2).sum()))
            parts = [_on(sums, at) for sums, at in ((cell, present), (row, r), (col, c))]
            frame = cell_frame(*parts, grand, index)
            tables.append(frame.assign(dimension=dim))
        if not tables:
            return pd.DataFrame(columns=CELL_COLUMNS)
        return pd.concat(tables, ignore_index=True)[CELL_COLUMNS]

    def in_cell(self, row: str, dim: str, value: object) -> np.ndarray:
        """Which units are in the cell (`row`, `dim` = `value`), as a boolean mask."""
        code, names = self.codes[dim]
        row_code = int(np.flatnonzero(self.row_names == row)[0])
        col_code = int(np.flatnonzero(names == value)[0])
        mask = np.zeros(len(code), dtype=bool)
        mask[self.pair_unit[self.pair_row == row_code]] = True
        return mask & (code == col_code)


def peeled(grid: CellGrid, y: np.ndarray, q: float = Q_FDR, most: int = 10) -> pd.DataFrame:
    """Cells found one at a time, each removed before the next is looked for.

    A strong cell makes every cell sharing its other quadrants look like an interaction too
    (Moscow's login customers seem worse than Siberia's once Siberia's delivery customers
    are in the comparison). So the most significant cell is taken when its p-value passes
    Benjamini–Hochberg's step for the k-th discovery (q·k/m), its interaction is added back
    to its units' outcomes, and the cells are cut again, up to `most` cells. Returns the
    taken cells as found, then the last cut's other cells (none significant), so the family
    still counts every cell tested.
    """
    y = y.astype(float).copy()

    def remove(cell: pd.Series) -> None:
        y[grid.in_cell(cell["row"], cell["dimension"], cell["value"])] += cell["interaction"]

    return _peel(lambda: grid.table(y), remove, q, most)


def _peel(
    cut: Callable[[], pd.DataFrame],
    remove: Callable[[pd.Series], None],
    q: float,
    most: int,
) -> pd.DataFrame:
    """`peeled`'s loop: `cut()` tabulates the cells, `remove(cell)` adds a taken cell's
    interaction back to its units before the next cut."""
    taken: list[pd.DataFrame] = []
    table = cut()
    while len(taken) < most and len(table):
        best = table.loc[[table["interaction_p"].idxmin()]]
        if not best["interaction_p"].iloc[0] <= q * (len(taken) + 1) / len(table):
            break
        taken.append(best)
        remove(best.iloc[0])
        table = cut()
    keys = ["row", "dimension", "value"]
    found = pd.concat(taken, ignore_index=True) if taken else table.iloc[:0]
    rest = table.merge(found[keys], on=keys, how="left", indicator=True)
    rest = rest[rest["_merge"] == "left_only"].drop(columns="_merge")
    return pd.concat([found, rest], ignore_index=True)


def _on(sums: tuple[np.ndarray, ...], at: np.ndarray) -> Moments:
    """The moments `sums` (count, sum, sum of squares arrays) taken at positions `at`."""
    return Moments(*(v[at] for v in sums))


def _counted(codes: np.ndarray, values: np.ndarray, size: int) -> tuple[np.ndarray, ...]:
    """Count, sum and sum of squares of `values` per integer code in 0..size-1."""
    return (
        np.bincount(codes, minlength=size).astype(float),
        np.bincount(codes, weights=values, minlength=size),
        np.bincount(codes, weights=values**2, minlength=size),
    )


def funnel_cells(
    web: pd.DataFrame, steps: Sequence[str], source: str | None = None
) -> pd.DataFrame:
    """Interaction contrasts of step conversion for every (step, device, segment) cell,
    peeled as `peeled` peels customer cells.

    Rows are `step:device`, the dimension `segment`; each step's sessions are the units, the
    outcome 100 if they went on from the step before, else 0. Margins sum within the step.
    The sessions are one web source's (`funnels.funnel_rows`: `source`, else the one with the
    most funnel entrants), as sources count sessions their own way.
    """
    needed = {"step", "device", "segment", "value"}
    if len(steps) < 2 or not needed <= set(web.columns) or web.empty:
        return pd.DataFrame(columns=CELL_COLUMNS)
    known = funnel_rows(web, steps, source).dropna(subset=["device", "segment"])
    sessions = known.groupby(["device", "segment", "step"])["value"]
    table = sessions.sum().unstack("step").reindex(columns=list(steps)).fillna(0.0)
    before = table.iloc[:, :-1].to_numpy()
    went_on = np.minimum(table.iloc[:, 1:].to_numpy(), before)
    long = pd.DataFrame(
        {
            "step": np.tile(list(steps[1:]), len(table)),
            "device": table.index.get_level_values("device").repeat(len(steps) - 1),
            "col": table.index.get_level_values("segment").repeat(len(steps) - 1),
            "n": before.ravel(),
            "sum": 100.0 * went_on.ravel(),
            "sum_sq": 100.0**2 * went_on.ravel(),
        }
    )
    long = long[long["n"] > 0].reset_index(drop=True)
    long["row"] = long["step"] + ":" + long["device"]

    def cut() -> pd.DataFrame:
        cell = Moments.from_frame(long.set_index(["step", "row", "col"]))
        index = cell.n.index

        def margin(by: list[str]) -> Moments:
            sums = long.groupby(by)[["n", "sum", "sum_sq"]].transform("sum").set_index(index)
            return Moments.from_frame(sums)

        frame = cell_frame(cell, margin(["row"]), margin(["step", "col"]), margin(["step"]))
        return frame.assign(dimension="segment")[CELL_COLUMNS].reset_index(drop=True)

    def remove(cell: pd.Series) -> None:
        hit = (long["row"] == cell["row"]) & (long["col"] == cell["value"])
        shift, n, total = cell["interaction"], long.loc[hit, "n"], long.loc[hit, "sum"]
        long.loc[hit, "sum_sq"] += 2 * shift * total + n * shift**2
        long.loc[hit, "sum"] = total + shift * n

    return _peel(cut, remove, Q_FDR, 10)


CELL_COLUMNS = [
    "row",
    "dimension",
    "value",
    "n_cell",
    "n_row_rest",
    "n_col_rest",
    "n_rest",
    "mean_cell",
    "mean_row_rest",
    "mean_col_rest",
    "mean_rest",
    "interaction",
    "interaction_se",
    "interaction_p",
    "gap",
    "gap_ci_low",
    "gap_ci_high",
    "row_outside",
    "row_outside_p",
    "col_outside",
    "col_outside_p",
]


def cell_frame(
    cell: Moments, row: Moments, col: Moments, grand: Moments, index: pd.Index | None = None
) -> pd.DataFrame:
    """The four quadrants of each cell and its contrasts, from the cell's, its row's, its
    column's and everyone's moments (Series aligned on the cell index, levels `row` and
    `col`, or arrays in the order of `index`; `grand` may be scalar).

    `gap` is the column's other units' mean minus the cell's (what the row costs within the
    column, against comparable units) with a normal 95% CI. `row_outside` is the row's loss
    outside the column (D − B), `col_outside` the column's loss without the row (D − C):
    where one is not significant, the cell explains that marginal. Cells with a quadrant of
    fewer than `MIN_QUADRANT` units are left out.
    """
    a, b, c = cell, row - cell, col - cell
    d = grand - row - col + cell
    interaction = b.mean + c.mean - a.mean - d.mean
    se = np.sqrt(a.se**2 + b.se**2 + c.se**2 + d.se**2)
    gap, gap_se = c.mean - a.mean, np.sqrt(a.se**2 + c.se**2)
    gap_low, gap_high = normal_ci(gap, gap_se)
    row_outside, row_se = d.mean - b.mean, np.sqrt(b.se**2 + d.se**2)
    col_outside, col_se = d.mean - c.mean, np.sqrt(c.se**2 + d.se**2)
    index = cell.n.index if index is None else index
    frame = pd.DataFrame(
        {
            "row": index.get_level_values("row"),
            "value": index.get_level_values("col"),
            "n_cell": _values(a.n),
            "n_row_rest": _values(b.n),
            "n_col_rest": _values(c.n),
            "n_rest": _values(d.n),
            "mean_cell": _values(a.mean),
            "mean_row_rest": _values(b.mean),
            "mean_col_rest": _values(c.mean),
            "mean_rest": _values(d.mean),
            "interaction": _values(interaction),
            "interaction_se": _values(se),
            "interaction_p": _values(_worse_p(interaction, se)),
            "gap": _values(gap),
            "gap_ci_low": _values(gap_low),
            "gap_ci_high": _values(gap_high),
            "row_outside": _values(row_outside),
            "row_outside_p": _values(_worse_p(row_outside, row_se)),
            "col_outside": _values(col_outside),
            "col_outside_p": _values(_worse_p(col_outside, col_se)),
        }
    )
    thick = frame[["n_cell", "n_row_rest", "n_col_rest", "n_rest"]].min(axis=1) >= MIN_QUADRANT
    return frame[thick & frame["interaction_se"].gt(0)].reset_index(drop=True)


def q_values(p: pd.Series) -> pd.Series:
    """Benjamini–Hochberg adjusted p-values of a family (NaN stays NaN, not counted)."""
    known = p.dropna()
    adjusted = stats.false_discovery_control(known.to_numpy(), method="bh") if len(known) else []
    return pd.Series(adjusted, index=known.index, dtype=float).reindex(p.index)


def _values(values: pd.Series | np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=float)


def _worse_p(loss: pd.Series | np.ndarray, se: pd.Series | np.ndarray) -> np.ndarray:
    """One-sided p-value that `loss` > 0 (the group is worse), normal approximation."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return stats.norm.sf(_values(loss) / _values(se))
