"""At-risk customers: a churn model on the store's frames, validated on a time split.

Churn is defined from orders only. At a cut-off `t`, the population is the customers with
at least one order in the `horizon_days` before `t`; a customer has churned when they place
no order in the `horizon_days` after `t`. Features are computed from what was known at `t`.

Three cut-offs a horizon apart, ending one horizon before the newest order: the model is
fitted at the first, calibrated (Platt) at the second, validated at the third, so every
step only sees the future of the one before it. Customers active in the last horizon are
then scored as of the newest order and banded high / medium / low.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from connectors.errors import CxloopError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from tasks.loader import CxData

MIN_AUC = 0.6  # below it the segment is not published
MIN_ROWS = 200  # active customers per window; a tenth of it of each outcome
DIMENSIONS = ("segment", "region", "channel")
SURVEY_KINDS = ("nps", "csat", "ces")
TOP_TOPICS = 8
BINS = 10
DAY = pd.Timedelta(days=1)


class ChurnSettings(Protocol):
    """What the model needs of `churn:` (flows.config.ChurnConfig)."""

    horizon_days: int
    high: float
    medium: float
    model: Literal["logistic", "boosting"]


class ChurnError(CxloopError):
    """The churn model cannot be trained on this data (too little history)."""


@dataclass
class ChurnRun:
    """One model run: its validation, whether `churn_risk` is published, and the scores."""

    model: str
    horizon_days: int
    published: bool
    reason: str
    cutoffs: dict[str, str] = field(default_factory=dict)
    n_train: int = 0
    n_validation: int = 0
    base_rate: float | None = None
    auc: float | None = None
    ece: float | None = None
    top_decile_lift: float | None = None
    calibration: list[dict] = field(default_factory=list)
    coefficients: dict[str, float] = field(default_factory=dict)
    scores: pd.DataFrame = field(default_factory=pd.DataFrame)
    expected_revenue_lost: float = 0.0


def features(data: CxData, cutoff: pd.Timestamp, horizon: pd.Timedelta) -> pd.DataFrame:
    """One row per customer active in the `horizon` before `cutoff` (indexed by customer_id):
    order recency/frequency/value, tickets by topic, unresolved and reopened, mean FRT, latest
    survey scores and their change, tenure and dimensions, all as known at `cutoff`."""
    orders = data.orders[data.orders["created_at"] < cutoff]
    recent = orders[orders["created_at"] >= cutoff - horizon]
    active = pd.Index(recent["customer_id"].dropna().unique(), name="customer_id")
    by = orders.groupby("customer_id")
    frame = pd.DataFrame(
        {
            "recency_days": (cutoff - by["created_at"].max()) / DAY,
            "orders": by.size(),
            "log_value": np.log1p(by["amount"].sum()),
            "recent_value": recent.groupby("customer_id")["amount"].sum(),
        }
    ).reindex(active)
    frame = frame.join(_ticket_features(data.tickets, cutoff)).join(
        _survey_features(data.responses, cutoff)
    )
    customers = data.customers.set_index("customer_id")
    tenure = (cutoff - customers["created_at"]) / DAY
    frame["tenure_days"] = tenure.reindex(active)
    for dim in DIMENSIONS:
        frame[dim] = customers[dim].reindex(active).astype(object).fillna("unknown")
    counts = [c for c in frame.columns if c.startswith(("tickets_", "unresolved_", "reopened"))]
    frame[counts] = frame[counts].fillna(0)
    return frame


def _ticket_features(tickets: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
    """Tickets, and unresolved ones as of `cutoff`, per top topic; reopenings; mean FRT."""
    tickets = tickets[tickets["created_at"] < cutoff]
    open_then = tickets["resolved_at"].isna() | (tickets["resolved_at"] >= cutoff)
    topic = tickets["topic"].fillna("other")
    top = topic.value_counts().index[:TOP_TOPICS]
    topic = topic.where(topic.isin(top), "other")
    ids = tickets["customer_id"]
    frt = tickets["frt_hours"].where(tickets["first_response_at"] < cutoff)
    parts = [
        pd.crosstab(ids, topic).add_prefix("tickets_"),
        pd.crosstab(ids[open_then], topic[open_then]).add_prefix("unresolved_"),
        tickets["reopened"].astype(float).groupby(ids).sum().rename("reopened"),
        frt.groupby(ids).mean().rename("mean_frt_hours"),
    ]
    return pd.concat(parts, axis=1)


def _survey_features(responses: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
    """Latest score per survey kind and its change from the one before (NaN if none)."""
    answers = responses[
        (responses["submitted_at"] < cutoff) & responses["kind"].isin(SURVEY_KINDS)
    ].sort_values("submitted_at", kind="stable")
    by = answers.groupby(["customer_id", "kind"])["score"]
    last = by.nth(-1).groupby([answers["customer_id"], answers["kind"]]).first()
    before = by.nth(-2).groupby([answers["customer_id"], answers["kind"]]).first()
    latest = last.unstack().add_prefix("latest_")
    trend = (last - before).unstack().add_prefix("trend_")
    return pd.concat([latest, trend], axis=1)


def labels(data: CxData, population: pd.Index, cutoff: pd.Timestamp, horizon) -> pd.Series:
    """1 where a customer of `population` orders nothing in the `horizon` after `cutoff`."""
    orders = data.orders
    after = orders[(orders["created_at"] >= cutoff) & (orders["created_at"] < cutoff + horizon)]
    return pd.Series(~population.isin(after["customer_id"]), index=population).astype(int)


def _model(kind: str, numeric: list[str], categorical: list[str]) -> Pipeline:
    prepare = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(add_indicator=True), StandardScaler()), numeric),
            ("dim", OneHotEncoder(handle_unknown="ignore", drop="first"), categorical),
        ],
        verbose_feature_names_out=False,
    )
    if kind == "boosting":
        return Pipeline([("prepare", prepare), ("fit", HistGradientBoostingClassifier())])
    return Pipeline([("prepare", prepare), ("fit", LogisticRegression(C=1.0, max_iter=1000))])


def calibration_table(y: np.ndarray, p: np.ndarray) -> tuple[list[dict], float]:
    """Reliability curve over `BINS` equal-width bins and its expected calibration error."""
    bins = np.minimum((p * BINS).astype(int), BINS - 1)
    frame = pd.DataFrame({"bin": bins, "y": y, "p": p}).groupby("bin")
    table = frame.agg(n=("y", "size"), observed=("y", "mean"), predicted=("p", "mean"))
    ece = float((table["n"] * (table["observed"] - table["predicted"]).abs()).sum() / len(y))
    rows = table.reset_index().assign(bin=lambda t: t["bin"] / BINS)
    return rows.rename(columns={"bin": "low"}).to_dict("records"), ece


def top_decile_lift(y: np.ndarray, p: np.ndarray) -> float:
    """Churn rate of the highest-scored tenth over the base rate."""
    top = np.argsort(-p, kind="stable")[: max(1, len(p) // 10)]
    return float(y[top].mean() / y.mean())


def run_churn(data: CxData, settings: ChurnSettings) -> ChurnRun:
    """A trained, calibrated, validated model and the current customers' scores.

    No orders: a skipped run saying so. Too little history or too few rows: `ChurnError`.
    """
    run = ChurnRun(settings.model, settings.horizon_days, False, "")
    if data.orders.empty:
        run.reason = "no orders in the store: the churn model needs them and was skipped"
        return run
    horizon = pd.Timedelta(days=settings.horizon_days)
    first, end = data.orders["created_at"].min(), data.orders["created_at"].max()
    cuts = [end - horizon * k for k in (3, 2, 1)]
    if cuts[0] - horizon < first:
        days = (end - first) / DAY
        raise ChurnError(
            f"churn: orders span {days:.0f} days, but a {settings.horizon_days}-day horizon "
            f"needs {4 * settings.horizon_days} (fit, calibrate, validate and one horizon of "
            "history); lower `churn.horizon_days` or ingest more order history"
        )
    windows = [_window(data, cut, horizon) for cut in cuts]
    (x_fit, y_fit), (x_cal, y_cal), (x_val, y_val) = windows
    numeric = [c for c in x_fit.columns if c not in DIMENSIONS and c != "recent_value"]
    columns = [*numeric, *DIMENSIONS]
    fitted = _model(settings.model, numeric, list(DIMENSIONS)).fit(x_fit[columns], y_fit)
    calibrated = CalibratedClassifierCV(FrozenEstimator(fitted), method="sigmoid")
    calibrated.fit(x_cal.reindex(columns=columns), y_cal)
    p_val = calibrated.predict_proba(x_val.reindex(columns=columns))[:, 1]
    y = y_val.to_numpy()
    run.cutoffs = dict(
        zip(("fit", "calibrate", "validate"), (f"{c:%Y-%m-%d}" for c in cuts), strict=True)
    )
    run.n_train, run.n_validation = len(y_fit), len(y)
    run.base_rate = float(y.mean())
    run.auc = float(roc_auc_score(y, p_val))
    run.calibration, run.ece = calibration_table(y, p_val)
    run.top_decile_lift = top_decile_lift(y, p_val)
    run.coefficients = _coefficients(fitted)
    run.published = run.auc >= MIN_AUC
    run.reason = (
        f"validated on {len(y):,} customers after {run.cutoffs['validate']}: AUC {run.auc:.2f}"
        if run.published
        else f"not published: validation AUC {run.auc:.2f} is below {MIN_AUC}, so the model "
        "ranks customers little better than chance"
    )
    now = features(data, end + pd.Timedelta(seconds=1), horizon)
    p_now = calibrated.predict_proba(now.reindex(columns=columns))[:, 1]
    run.scores = _scores(now, p_now, settings)
    high = run.scores["churn_risk"] == "high"
    run.expected_revenue_lost = float(run.scores.loc[high, "expected_loss"].sum())
    return run


def _window(data: CxData, cutoff: pd.Timestamp, horizon) -> tuple[pd.DataFrame, pd.Series]:
    """Features at `cutoff` and their churn labels; `ChurnError` when too few to learn."""
    x = features(data, cutoff, horizon)
    y = labels(data, x.index, cutoff, horizon)
    if len(y) < MIN_ROWS or min(y.sum(), len(y) - y.sum()) < MIN_ROWS // 10:
        raise ChurnError(
            f"churn: at the cut-off {cutoff:%Y-%m-%d} only {len(y):,} active customers, "
            f"{int(y.sum()):,} of them churned; the model needs {MIN_ROWS} and "
            f"{MIN_ROWS // 10} of each outcome; ingest more orders or lengthen "
            "`churn.horizon_days`"
        )
    return x, y


def _coefficients(fitted: Pipeline) -> dict[str, float]:
    """Coefficients per standardised feature (logistic); empty for boosting, which has none."""
    model = fitted.named_steps["fit"]
    if not hasattr(model, "coef_"):
        return {}
    names = fitted.named_steps["prepare"].get_feature_names_out()
    return {str(n): float(c) for n, c in zip(names, model.coef_[0], strict=True)}


def _scores(now: pd.DataFrame, p: np.ndarray, settings: ChurnSettings) -> pd.DataFrame:
    """customer_id, probability, band, value (last horizon's revenue) and expected loss."""
    band = np.select([p >= settings.high, p >= settings.medium], ["high", "medium"], default="low")
    value = now["recent_value"].fillna(0).to_numpy()
    return pd.DataFrame(
        {
            "customer_id": now.index.astype(str),
            "probability": p,
            "churn_risk": band,
            "value": value,
            "expected_loss": p * value,
        }
    )


def digest_context(run: ChurnRun, drivers: int = 5) -> dict:
    """The digest's at-risk block: published or why not, validation numbers, band sizes, the
    expected revenue lost from high-risk customers, and the `drivers` largest coefficients
    (`feature`, `coefficient` per standardised unit; none for boosting)."""
    bands = run.scores["churn_risk"].value_counts() if not run.scores.empty else pd.Series()
    largest = sorted(run.coefficients.items(), key=lambda item: -abs(item[1]))[:drivers]
    return {
        "published": run.published,
        "reason": run.reason,
        "model": run.model,
        "horizon_days": run.horizon_days,
        "cutoffs": run.cutoffs,
        "n_validation": run.n_validation,
        "auc": run.auc,
        "ece": run.ece,
        "top_decile_lift": run.top_decile_lift,
        "base_rate": run.base_rate,
        "bands": {b: int(bands.get(b, 0)) for b in ("high", "medium", "low")},
        "expected_revenue_lost": run.expected_revenue_lost if run.published else None,
        "drivers": [{"feature": name, "coefficient": value} for name, value in largest],
    }


def save_churn(engine: Engine, run: ChurnRun) -> None:
    """Store the run and replace the per-customer scores: all of them when it is published,
    none when not, so `churn_risk` never outlives the model that justified it."""
    from sqlmodel import delete

    from tasks import store

    at = store.now_utc()
    row = {k: v for k, v in vars(run).items() if k != "scores"}
    with engine.begin() as conn:
        store.upsert(conn, store.ChurnModelRun, pd.DataFrame([{**row, "run_at": at}]), ["run_at"])
        conn.execute(delete(store.CustomerChurnRisk))
        if run.published and not run.scores.empty:
            scores = run.scores.assign(run_at=at)
            store.upsert(conn, store.CustomerChurnRisk, scores, ["customer_id"])
