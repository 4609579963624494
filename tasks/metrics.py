"""CX metrics (NPS, CSAT, CES, FRT, ART, FCR, reopen rate) by any dimension, with n and CI."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from tasks.hours import BusinessHours
from tasks.identity import is_in, lookup
from tasks.moments import Z95, Moments, moments_table, normal_ci
from tasks.text import sentiment

if TYPE_CHECKING:  # `tasks.loader` builds `CxData` with this module's ticket measures
    from tasks.loader import CxData

REPEAT_WINDOW = pd.Timedelta(days=7)
# FCR's default repeat-contact window (`fcr.repeat_days` in the config).
REPEAT_DAYS = 7
SLA_HOURS = 24.0


def nps_points(scores: pd.Series) -> pd.Series:
    """Each 0–10 score as NPS points: +100 promoter (9–10), −100 detractor (0–6), else 0;
    NaN where there is no score (an unanswered question is no passive)."""
    points = np.select([scores >= 9, scores <= 6], [100.0, -100.0], 0.0)
    return pd.Series(points, index=scores.index).mask(scores.isna())


def csat_top2(scores: pd.Series, csat_scale: int = 5) -> pd.Series:
    """Each CSAT score as 100 in the top two boxes of `csat_scale` (4–5 of 5), else 0; NaN
    where there is no score."""
    return ((scores >= csat_scale - 1) * 100.0).mask(scores.isna())


def ticket_clock(tickets: pd.DataFrame) -> pd.Timestamp:
    """The newest ticket event (created, first response, resolved): how far the ticket data
    reaches, the "now" of every ticket measure (NaT without tickets)."""
    return tickets[["created_at", "first_response_at", "resolved_at"]].max().max()


def with_ticket_measures(
    tickets: pd.DataFrame,
    business_hours: BusinessHours = BusinessHours(),
    repeat_days: int = REPEAT_DAYS,
) -> pd.DataFrame:
    """Tickets plus their measures as of `ticket_clock`; shares are 0/100, NaN while pending.

    `frt_hours`, `frt_business_hours` (working hours only) and `art_hours`, NaN while
    unanswered or unresolved; `frt_waited_hours` and `frt_business_waited_hours`: how long an
    unanswered ticket has waited by the clock (NaN once answered), where FRT medians censor
    it. `repeat`: the same customer again within `REPEAT_WINDOW` of the ticket, pending until
    that window has passed. `fcr`: resolved, not reopened, and no contact of the same customer
    within `repeat_days` of the ticket (0: reopening alone decides); pending until
    `repeat_days` after its resolution (after its creation while unresolved, which then
    counts as no FCR). `reopen_rate`: reopened, per resolved ticket (NaN while unresolved).
    `sla_breach`: FRT over `SLA_HOURS`, or no reply `SLA_HOURS` after the ticket; pending
    while a ticket waits within the SLA. `escalation`: escalated; NaN where unknown.
    """
    tickets = tickets.sort_values(["customer_id", "created_at"], kind="stable")
    hours = pd.Timedelta(hours=1)
    created, resolved = tickets["created_at"], tickets["resolved_at"]
    next_contact = tickets.groupby("customer_id", sort=False)["created_at"].shift(-1)
    gap = next_contact - created
    again = gap <= REPEAT_WINDOW
    window = pd.Timedelta(days=repeat_days)
    # A window of 0 days checks no repeat contact at all (not one opened the same instant).
    repeated = gap <= window if repeat_days > 0 else pd.Series(False, index=tickets.index)
    reopened = tickets["reopened"]
    fcr = resolved.notna() & ~reopened.astype(bool) & ~repeated
    frt = (tickets["first_response_at"] - created) / hours
    escalated = tickets["escalated"] if "escalated" in tickets else pd.Series(np.nan, tickets.index)
    now = ticket_clock(tickets)
    unanswered = tickets["first_response_at"].isna()
    waited = ((now - created) / hours).where(unanswered)
    breach = (frt > SLA_HOURS) | (waited > SLA_HOURS)
    waiting = created[unanswered]
    return tickets.assign(
        frt_hours=frt,
        frt_business_hours=business_hours.elapsed(created, tickets["first_response_at"]),
        frt_waited_hours=waited,
        frt_business_waited_hours=business_hours.elapsed(
            waiting, pd.Series(now, index=waiting.index)
        ).reindex(tickets.index),
        art_hours=(resolved - created) / hours,
        repeat=(again * 100.0).mask(created + REPEAT_WINDOW > now),
        fcr=(fcr * 100.0).mask(resolved.fillna(created) + window > now),
        reopen_rate=(pd.to_numeric(reopened, errors="coerce") * 100.0).where(resolved.notna()),
        sla_breach=(breach * 100.0).mask(unanswered & ~breach),
        escalation=escalated.astype(float) * 100,
    ).sort_index()


def observations(
    metric: str, data: CxData, csat_scale: int = 5, pending: bool = False
) -> pd.DataFrame:
    """Unit-level values of `metric`: `customer_id`, `at`, `value` and the unit's own dimensions.

    Survey metrics give one row per scored response (NPS in points −100/0/+100, CSAT and CES
    as scored, `csat_top2` as 0/100) with `survey` and `channel`; comment metrics one row per
    comment (0/100: its sentiment is negative, or positive); ticket metrics one row per
    ticket (hours, or 0/100 for FCR, repeat contact, reopening, SLA breach, escalation) with
    `channel`, `topic`. Tickets whose outcome is still open are left out, unless `pending`
    keeps them with `value` NaN (the `PENDING_METRICS`); FRT's then carry, as `waited`, the
    hours they have waited unanswered.
    """
    if metric in COMMENT_METRICS:
        said = data.responses[data.responses["comment"].notna()]
        label = sentiment(said["comment"])["label"]
        return pd.DataFrame(
            {
                "customer_id": said["customer_id"],
                "at": said["submitted_at"],
                "value": (label == metric.removesuffix("_comments")) * 100.0,
                "survey": said["survey"],
                "channel": said["channel"],
            }
        )
    if metric in SURVEY_METRICS:
        kind = metric.removesuffix("_top2")
        used = ["customer_id", "submitted_at", "score", "survey", "channel"]
        responses = data.responses
        answers = responses.loc[(responses["kind"] == kind) & responses["score"].notna(), used]
        score = answers["score"]
        if metric == "nps":
            value = nps_points(score)
        elif metric == "csat_top2":
            value = csat_top2(score, csat_scale)
        else:
            value = score
        return pd.DataFrame(
            {
                "customer_id": answers["customer_id"],
                "at": answers["submitted_at"],
                "value": value,
                "survey": answers["survey"],
                "channel": answers["channel"],
            }
        )
    if metric in TICKET_METRICS:
        tickets = data.tickets
        rows = pd.DataFrame(
            {
                "customer_id": tickets["customer_id"],
                "at": tickets["created_at"],
                "value": tickets[metric],
                "channel": tickets["channel"],
                "topic": tickets["topic"],
            }
        )
        if not (pending and metric in PENDING_METRICS):
            return rows.dropna(subset=["value"])
        if metric in WAITED:
            rows["waited"] = tickets[WAITED[metric]]
        return rows
    raise KeyError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")


SURVEY_METRICS = ("nps", "csat", "csat_top2", "ces")
COMMENT_METRICS = ("negative_comments", "positive_comments")
TICKET_METRICS = (
    "frt_hours", "frt_business_hours", "art_hours", "fcr", "repeat", "reopen_rate", "sla_breach",
    "escalation",
)  # fmt: skip
METRICS = SURVEY_METRICS + COMMENT_METRICS + TICKET_METRICS
# The table each metric's observations are rows of (they keep its index).
SOURCES = dict.fromkeys(SURVEY_METRICS + COMMENT_METRICS, "responses") | dict.fromkeys(
    TICKET_METRICS, "tickets"
)
MEDIAN_METRICS = ("frt_hours", "frt_business_hours", "art_hours")
# 0/100 per unit: a share in %, with a Wilson CI.
SHARE_METRICS = (
    "csat_top2", *COMMENT_METRICS, "fcr", "repeat", "reopen_rate", "sla_breach", "escalation"
)  # fmt: skip
# Ticket metrics whose outcome a recent ticket may not have yet (see `with_ticket_measures`).
PENDING_METRICS = ("frt_hours", "frt_business_hours", "fcr", "repeat", "reopen_rate", "sla_breach")
# FRT's censoring time: how long a still unanswered ticket has waited.
WAITED = {"frt_hours": "frt_waited_hours", "frt_business_hours": "frt_business_waited_hours"}
# Customer cuts whose name is not their column's; declared dimensions are cut by their name.
CUSTOMER_DIMENSIONS = {"segment": "segment", "region": "region", "acquisition": "channel"}
UNIT_DIMENSIONS = ("channel", "topic", "survey", "stage", "hour", "weekday")
# Cuts by the ticket's columns: a ticket's own, or the linked ticket of a survey answer.
TICKET_CUTS = {"ticket_topic": "topic", "ticket_channel": "channel", "agent": "agent",
               "team": "team"}  # fmt: skip
# The fixed cuts; the customers' declared dimensions (`customer_cuts`) come on top.
DIMENSIONS = (*CUSTOMER_DIMENSIONS, *UNIT_DIMENSIONS, *TICKET_CUTS)
# Customers columns that identify or hold raw data, never a dimension.
NOT_DIMENSIONS = ("customer_id", "email_hash", "attributes", "id", "source", "source_id")
PERIODS = {"day": "D", "week": "W", "month": "M", "quarter": "Q"}


def dimension_columns(customers: pd.DataFrame) -> list[str]:
    """The customers' columns that are dimensions: the text (or category, boolean) ones other
    than ids and raw attributes: segment, region, channel, language and every declared one.

    Decided on the dtype alone, so it costs nothing at millions of customers.
    """
    types = pd.api.types
    return [
        c
        for c, dtype in customers.dtypes.items()
        if c not in NOT_DIMENSIONS
        and (
            types.is_string_dtype(dtype)
            or isinstance(dtype, pd.CategoricalDtype)
            or types.is_bool_dtype(dtype)
        )
    ]


def customer_cuts(customers: pd.DataFrame) -> dict[str, str]:
    """Each customer cut's name → its `customers` column: `CUSTOMER_DIMENSIONS`, plus every
    other dimension column (`dimension_columns`: the declared ones) under its own name."""
    taken = {*DIMENSIONS, *CUSTOMER_DIMENSIONS.values()}
    declared = {c: c for c in dimension_columns(customers) if c not in taken}
    return CUSTOMER_DIMENSIONS | declared


def known_cuts(data: CxData) -> tuple[str, ...]:
    """Every cut `metric_table` takes for `data`: `DIMENSIONS` and the declared dimensions."""
    return (*dict.fromkeys([*DIMENSIONS, *customer_cuts(data.customers)]),)


def check_cuts(by: Sequence[str], known: Sequence[str]) -> None:
    """`KeyError` naming the first of `by` not in `known`, the closest known cut and all."""
    for dim in by:
        if dim not in known:
            close = difflib.get_close_matches(dim, list(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise KeyError(f"unknown dimension {dim!r}{hint}; known: {', '.join(known)}")


def metric_table(
    data: CxData,
    metrics: Sequence[str],
    by: Sequence[str] = (),
    period: str | None = None,
    csat_scale: int = 5,
    stages: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Each metric per cell of `by` (see `known_cuts`) and `period`, with `n` and 95% CI.

    Long format: the `by` columns, `period` (`all` without one), `metric`, `value`, `n`,
    `pending`, `se`, `ci_low`, `ci_high`. Shares (`SHARE_METRICS`, in %) have a Wilson CI,
    other means a normal one; `se` is the mean's standard error. `pending` counts the
    tickets whose outcome is still open at `ticket_clock`: FCR, repeat, reopen rate and SLA
    breach leave them out of `n` and `value`. FRT's `value` is the Kaplan–Meier median
    (`km_median_by`), unanswered tickets censored at the clock and counted in `n` and
    `pending`; its `mean` is over answered tickets only. ART gives its median and mean of
    resolved tickets. A median's CI is Brookmeyer–Crowley's (`km_median_by`): `ci_high` is
    inf where the data bound it from below only, both NaN where they bound it not at all;
    `se` is NaN. Dimensions a metric does not have (e.g. `topic` for NPS) leave that metric
    out. `stage` is the journey stage `stages` maps a ticket's topic or a response's survey
    to. Customer cuts (segment, region, acquisition, declared dimensions) are the unit's
    customer's; ticket cuts (`TICKET_CUTS`) are a ticket's own and, for survey and comment
    metrics, those of the answer's linked ticket (answers with none are left out of the cut:
    `CxData.unmatched` counts them).
    """
    check_cuts(by, known_cuts(data))
    customer = customer_cuts(data.customers)
    if period is not None and period not in PERIODS:
        raise KeyError(f"unknown period {period!r}; known: {', '.join(PERIODS)}")
    frames = []
    for metric in metrics:
        obs = observations(metric, data, csat_scale, pending=True)
        for dim in by:
            cut = _cut_column(data, SOURCES[metric], dim, customer)
            if cut is not None:
                obs[dim] = cut.reindex(obs.index)
        if "stage" in by:
            touchpoint = obs["topic"] if "topic" in obs else obs["survey"]
            obs["stage"] = lookup(touchpoint, pd.Series(stages or {}, dtype=object))
        if "hour" in by:
            obs["hour"] = obs["at"].dt.hour
        if "weekday" in by:
            obs["weekday"] = obs["at"].dt.day_name()
        if any(d not in obs.columns for d in by):
            continue
        obs["period"] = period_labels(obs["at"], PERIODS[period]) if period else "all"
        keys = [*by, "period"]
        measured = ["value", "waited"] if "waited" in obs else ["value"]
        cells = obs[[*keys, *measured]].dropna(subset=list(by))
        frames.append(_cells(metric, cells, keys).assign(metric=metric).reset_index())
    if not frames:
        return pd.DataFrame(columns=[*by, "period", "metric", *TABLE_COLUMNS])
    return pd.concat(frames, ignore_index=True)


def _cut_column(
    data: CxData, table: str, dim: str, customer: Mapping[str, str]
) -> pd.Series | None:
    """The value of customer or ticket cut `dim` for each row of `table`, aligned with it;
    None when `dim` is a unit cut or a column the data lacks."""
    if dim in UNIT_DIMENSIONS:
        return None
    if dim in TICKET_CUTS:
        column = TICKET_CUTS[dim]
        if column not in data.tickets.columns:
            return None
        return data.tickets[column] if table == "tickets" else data.ticket_column(column)
    if customer[dim] not in data.customers.columns:
        return None
    return data.customer_column(table, customer[dim])


TABLE_COLUMNS = ("value", "n", "pending", "se", "ci_low", "ci_high")


def _cells(metric: str, cells: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """`metric_table`'s columns for `metric` per group of `keys` of its observations (whose
    NaN values are the pending tickets)."""
    sums = moments_table(cells, keys)
    table = _normal_ci(Moments.from_frame(sums))
    if metric in SHARE_METRICS:
        table = _wilson_ci(table)
    table["pending"] = sums["rows"] - sums["n"]
    if metric not in MEDIAN_METRICS:
        return table
    table = table.rename(columns={"value": "mean"}).assign(se=np.nan)
    if metric not in WAITED:  # ART: of resolved tickets, none censored
        spells = cells[keys].assign(time=cells["value"], observed=True)
        return table.assign(**km_median_by(spells, keys))
    answered = cells["value"].notna()
    spells = cells[keys].assign(time=cells["value"].fillna(cells["waited"]), observed=answered)
    return table.assign(**km_median_by(spells, keys), n=table["n"] + table["pending"])


def period_labels(at: pd.Series, freq: str) -> pd.Series:
    """Each timestamp's period as text (`2026-05` for `M`), each distinct period formatted once."""
    codes, periods = pd.factorize(at.dt.to_period(freq), use_na_sentinel=False)
    return pd.Series(periods.astype(str).take(codes), index=at.index)


def mean_ci_by(frame: pd.DataFrame, by: list[str], value: str = "value") -> pd.DataFrame:
    """Mean of `value` per group with `n`, its standard error `se` and a normal 95% CI
    (`ci_low`, `ci_high`); NaN values are left out of all of them."""
    return _normal_ci(Moments.by(frame, by, value))


def share_ci_by(frame: pd.DataFrame, by: list[str], value: str = "value") -> pd.DataFrame:
    """`mean_ci_by` for a 0/100 `value`: the share in % per group, its CI the 95% Wilson
    interval, which stays inside 0–100 (a normal one leaves it near 0%, 100% or small n)."""
    return _wilson_ci(mean_ci_by(frame, by, value))


def _normal_ci(moments: Moments) -> pd.DataFrame:
    mean, se = moments.mean, moments.se
    low, high = normal_ci(mean, se)
    return pd.DataFrame(
        {"value": mean, "n": moments.n.astype(int), "se": se, "ci_low": low, "ci_high": high}
    )


def _wilson_ci(table: pd.DataFrame) -> pd.DataFrame:
    low, high = wilson_interval(table["value"] / 100, table["n"])
    return table.assign(ci_low=100 * low, ci_high=100 * high)


def wilson_interval(share: ArrayLike, n: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """95% Wilson score interval (low, high) of proportions `share` (0–1) of `n` trials,
    as statsmodels' `proportion_confint(method="wilson")`; NaN where `n` is 0 or `share`
    is not a proportion."""
    p, n = np.asarray(share, dtype=float), np.asarray(n, dtype=float)
    valid = (n > 0) & (p >= 0) & (p <= 1)
    p, n = np.where(valid, p, np.nan), np.where(valid, n, np.nan)
    z2 = Z95**2
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * np.sqrt(p * (1 - p) / n + z2 / (4 * n**2)) / (1 + z2 / n)
    return np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)


def difference_ci(now: pd.DataFrame, before: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """95% CI (low, high) of `now.value − before.value` from each side's own 95% CI
    (`ci_low`, `ci_high`) by the square-and-add rule (MOVER, independent samples).

    With symmetric normal CIs it is the usual normal interval of a difference; with Wilson
    CIs it is Newcombe's hybrid score interval (statsmodels' `confint_proportions_2indep`,
    `method="newcomb"`), which stays right where a share sits at 0% or 100%.
    """
    change = now["value"] - before["value"]
    low = np.hypot(now["value"] - now["ci_low"], before["ci_high"] - before["value"])
    high = np.hypot(now["ci_high"] - now["value"], before["value"] - before["ci_low"])
    return change - low, change + high


# Survival within this of 1/2 counts as exactly 1/2 (the curve's rounding error is far less).
HALF_TOLERANCE = 1e-9
MEDIAN_COLUMNS = ("value", "ci_low", "ci_high")


def km_median_by(spells: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Kaplan–Meier median of `time` per group of `by` (`value`) with its 95% CI (`ci_low`,
    `ci_high`), where `observed` is False for a time that is censored (the event has not
    happened by then).

    The median is the first time the survival curve falls to 1/2 or below, or the midpoint
    to the next event where it rests at exactly 1/2, so without censoring it is the ordinary
    median; NaN where survival stays above 1/2. Off that tie it equals statsmodels'
    `SurvfuncRight(...).quantile(0.5)`. The CI is Brookmeyer–Crowley's, as statsmodels'
    `quantile_ci(0.5, method="cloglog")`: from the first event time whose survival is
    within 1.96 Greenwood standard errors of 1/2 (on the log(−log) scale) to the event time
    after the last such one; `ci_high` is inf when that last one is the group's last event,
    and both are NaN when no event time qualifies.
    """
    spells = spells.dropna(subset=["time", *by])
    grouped = spells.groupby(by, observed=True)
    table = pd.DataFrame(np.nan, index=grouped.size().index, columns=list(MEDIAN_COLUMNS))
    if spells.empty:
        return table
    curve = _km_curve(
        grouped.ngroup().to_numpy(),
        spells["time"].to_numpy(float),
        spells["observed"].to_numpy(bool),
    )
    if curve.empty:
        return table
    group, time, survival = (curve[c].to_numpy() for c in ("group", "time", "survival"))
    first = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    reached = _first_time(time, survival <= 0.5 + HALF_TOLERANCE, first)
    below = _first_time(time, survival < 0.5 - HALF_TOLERANCE, first)
    low, high = _median_ci(curve, first)
    table.iloc[group[first]] = np.column_stack(
        [(reached + np.where(np.isnan(below), reached, below)) / 2, low, high]
    )
    return table


def _km_curve(group: np.ndarray, time: np.ndarray, observed: np.ndarray) -> pd.DataFrame:
    """The Kaplan–Meier curve at each event time of each group (codes 0…): `group`, `time`,
    `survival` and its Greenwood standard error `se` (NaN once the curve reaches 0), sorted
    by group and time. Step for step as statsmodels' `SurvfuncRight`, so that which event
    times fall in the median's CI never differs from it by a rounding."""
    order = np.lexsort((time, group))
    group, time, observed = group[order], time[order], observed[order]
    tie = np.flatnonzero(np.r_[True, (group[1:] != group[:-1]) | (time[1:] != time[:-1])])
    first = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    size = np.diff(np.r_[first, len(group)])
    # At risk just before a tie: the group's rows from the tie's first one on.
    starts = np.repeat(first + size, size)[tie]
    at_risk = (starts - tie).astype(float)
    events = np.add.reduceat(observed.astype(float), tie)
    kept = events > 0
    group, time, at_risk, events = group[tie][kept], time[tie][kept], at_risk[kept], events[kept]
    factor = 1 - events / at_risk
    emptied = factor < 1e-16
    log_survival = pd.Series(np.log(np.where(emptied, 1e-16, factor))).groupby(group).cumsum()
    survival = np.where(emptied, 0.0, np.exp(log_survival.to_numpy()))
    # Greenwood's sum; where a tie empties the risk set, the variance is undefined from there.
    term = events / np.clip(at_risk * (at_risk - events), 1e-12, np.inf)
    variance = pd.Series(np.where(emptied, np.inf, term)).groupby(group).cumsum().to_numpy()
    se = np.sqrt(np.where(np.isinf(variance), np.nan, variance)) * survival
    return pd.DataFrame({"group": group, "time": time, "survival": survival, "se": se})


def _median_ci(curve: pd.DataFrame, first: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Brookmeyer–Crowley 95% CI (low, high) of the median for each run of `curve`'s rows
    starting at `first` (see `km_median_by`)."""
    survival, se, time = (curve[c].to_numpy() for c in ("survival", "se", "time"))
    # statsmodels' default transform; where survival is 0 the test is NaN, never in the set.
    with np.errstate(divide="ignore", invalid="ignore"):
        log_log = np.log(-np.log(survival))
        slope = -1 / (survival * np.log(survival))
        r = (log_log - np.log(-np.log(0.5))) / (slope * se)
    inside = np.abs(r) <= Z95
    position = np.arange(len(curve))
    start = np.minimum.reduceat(np.where(inside, position, len(curve)), first)
    end = np.maximum.reduceat(np.where(inside, position, -1), first)
    found = end >= 0
    last = np.r_[first[1:], len(curve)] - 1
    low = np.where(found, time[np.minimum(start, len(curve) - 1)], np.nan)
    high = np.where(end < last, time[np.minimum(end + 1, len(curve) - 1)], np.inf)
    return low, np.where(found, high, np.nan)


def _first_time(time: np.ndarray, where: np.ndarray, first: np.ndarray) -> np.ndarray:
    """The smallest `time` with `where` in each run of rows starting at `first`, NaN if none."""
    smallest = np.minimum.reduceat(np.where(where, time, np.inf), first)
    return np.where(np.isinf(smallest), np.nan, smallest)


KPIS = ("nps", "csat_top2", "ces", "frt_hours", "fcr")

# Each CSI component's (worst, best) value; CSAT and CES run from 1 to their scale's top.
CSI_RANGES = {
    "nps": (-100.0, 100.0),
    "csat_top2": (0.0, 100.0),
    "fcr": (0.0, 100.0),
    "reopen_rate": (100.0, 0.0),
    "sla_breach": (100.0, 0.0),
    "repeat": (100.0, 0.0),
    "escalation": (100.0, 0.0),
}


def csi(
    table: pd.DataFrame, weights: dict[str, float], csat_scale: int = 5, ces_scale: int = 7
) -> pd.DataFrame:
    """Customer satisfaction index per cell of a `metric_table`: 0–100, the `weights`-weighted
    mean of its components, each rescaled so 0 is its worst and 100 its best value.

    Same columns as `table`, `metric` = `csi`, `n` the smallest component's; cells missing a
    component are left out. The CI is normal, from the components' standard errors (`se`)
    taken as independent.
    """
    ranges = CSI_RANGES | {"csat": (1.0, float(csat_scale)), "ces": (1.0, float(ces_scale))}
    parts = table[table["metric"].isin(list(weights))]
    worst = parts["metric"].map({m: low for m, (low, _) in ranges.items()})
    span = parts["metric"].map({m: high - low for m, (low, high) in ranges.items()})
    weight = parts["metric"].map(weights)
    score = 100 * (parts["value"] - worst) / span
    error = 100 * parts["se"] / span.abs()
    keys = [c for c in table.columns if c not in ("metric", "mean", *TABLE_COLUMNS)]
    cells = (
        parts.assign(ws=weight * score, wse2=(weight * error) ** 2, w=weight)
        .groupby(keys, observed=True)
        .agg(
            ws=("ws", "sum"), wse2=("wse2", "sum"), w=("w", "sum"), n=("n", "min"), k=("w", "size")
        )
    )
    cells = cells[cells["k"] == len(weights)]
    value = cells["ws"] / cells["w"]
    se = np.sqrt(cells["wse2"]) / cells["w"]
    low, high = normal_ci(value, se)
    return pd.DataFrame(
        {"metric": "csi", "value": value, "n": cells["n"], "se": se, "ci_low": low, "ci_high": high}
    ).reset_index()


def kpis_by(
    data: CxData, by: str, csat_scale: int = 5, metrics: Sequence[str] = KPIS
) -> pd.DataFrame:
    """Headline KPIs per value of `by` plus an `all` row: `by`, `metric`, `value`, `n`,
    `pending`, `ci_low`, `ci_high` (see `metric_table`).

    Named as the reports name them: `csat` is the top-2-box share in %.
    """
    cells = metric_table(data, metrics, [by], csat_scale=csat_scale)
    overall = metric_table(data, metrics, csat_scale=csat_scale).assign(**{by: "all"})
    table = pd.concat([cells, overall], ignore_index=True)
    table["metric"] = table["metric"].replace({"csat_top2": "csat"})
    return table[[by, "metric", "value", "n", "pending", "ci_low", "ci_high"]]


def retention(
    orders: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp, window_days: int = 90
) -> tuple[int, int]:
    """(active at `start`, of them still active at `end`); active = ordered in the prior window.

    Retention rate is the second over the first (400 of 1,000 is 40%); churn is its complement.
    """
    window = pd.Timedelta(days=window_days)
    at = orders["created_at"]
    before_start = pd.Index(orders.loc[(at >= start - window) & (at < start), "customer_id"])
    before_end = orders.loc[(at >= end - window) & (at < end), "customer_id"]
    active = before_start.unique()
    return len(active), int(is_in(active, before_end).sum())


def churn(
    orders: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp, window_days: int = 90
) -> pd.DataFrame:
    """Churn in % of customers active at `start` no longer active at `end` (see `retention`).

    One row: `value`, `n` (active at start), `ci_low`, `ci_high` (95% Wilson interval).
    """
    active, kept = retention(orders, start, end, window_days)
    share = 1 - kept / active if active else np.nan
    low, high = wilson_interval([share], [active])
    return pd.DataFrame(
        {"value": [100 * share], "n": [active], "ci_low": 100 * low, "ci_high": 100 * high}
    )


def lifetime_value(aov: float, purchases_per_year: float, lifetime_years: float) -> float:
    """LTV = average order value × purchase frequency × lifetime (2,000 × 12/yr × 1 yr = 24,000)."""
    return aov * purchases_per_year * lifetime_years


def customer_value(orders: pd.DataFrame, customers: pd.DataFrame, by: str) -> pd.DataFrame:
    """Per value of `by`: AOV, purchases per customer per year, annual churn, lifetime, LTV.

    Each group is measured from its own first order (a segment of newcomers has no history
    before they came) to the newest order: churn compares the first and last 90 days of
    that span and is annualised; lifetime is 1 / annual churn (capped at 10 years).
    """
    frame = orders.assign(
        group=lookup(orders["customer_id"], customers.set_index("customer_id")[by])
    )
    end = frame["created_at"].max()
    rows = []
    for group, part in frame.groupby("group"):
        start = part["created_at"].min()
        years = max((end - start).days, 1) / 365.25
        active, kept = retention(part, start + pd.Timedelta(days=90), end)
        span = max((end - start).days - 90, 1) / 365.25
        churn = 1 - (kept / active) ** (1 / span) if active else np.nan
        aov = part["amount"].mean()
        frequency = len(part) / part["customer_id"].nunique() / years
        lifetime = min(1 / churn, 10.0) if churn and churn > 0 else 10.0
        rows.append(
            {
                by: group,
                "aov": aov,
                "purchases_per_year": frequency,
                "annual_churn": churn,
                "lifetime_years": lifetime,
                "ltv": lifetime_value(aov, frequency, lifetime),
                "customers": part["customer_id"].nunique(),
            }
        )
    return pd.DataFrame(rows)


def response_rates(data: CxData, by: str = "segment") -> pd.DataFrame:
    """Per value of `by`: customers, NPS respondents and the response rate in %.

    Shows who the survey hears from; silent groups are the ones a raw NPS under-represents.
    """
    respondents = data.responses.loc[data.responses["kind"] == "nps", "customer_id"].unique()
    customers = data.customers.assign(answered=is_in(data.customers["customer_id"], respondents))
    table = customers.groupby(by)["answered"].agg(customers="size", respondents="sum")
    table["response_rate"] = 100 * table["respondents"] / table["customers"]
    return table.reset_index()


def post_stratified_nps(data: CxData, by: str = "segment") -> dict[str, float]:
    """NPS of each respondent's latest scored answer, raw and weighted to the base's mix of
    `by`.

    Each stratum's NPS is weighted by its share of all customers rather than of respondents;
    the CI is the stratified one, Σ W²·s²/n over strata (NaN if a stratum has one respondent).
    """
    responses = data.responses
    answers = responses[(responses["kind"] == "nps") & responses["score"].notna()]
    latest = answers.sort_values("submitted_at").groupby("customer_id").tail(1)
    strata = latest["customer_id"].map(data.customers.set_index("customer_id")[by])
    points = pd.DataFrame({"stratum": strata, "value": nps_points(latest["score"])}).dropna()
    cells = Moments.by(points, "stratum")
    share = data.customers[by].value_counts(normalize=True).reindex(cells.n.index).fillna(0)
    share = share / share.sum()
    weighted = float((share * cells.mean).sum())
    # A one-respondent stratum has no variance to add: the CI is then unknown, not narrower.
    spread = (share**2 * cells.variance / cells.n).sum(min_count=len(cells.n))
    half = Z95 * float(np.sqrt(spread))
    return {
        "raw": float(points["value"].mean()),
        "weighted": weighted,
        "ci_low": weighted - half,
        "ci_high": weighted + half,
        "n": len(points),
    }
