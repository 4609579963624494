"""The baseline: the cycle's headline numbers by hand, DuckDB SQL over the same Parquet files.

No Prefect, no ORM, no cxloop imports: what a data engineer would write in an afternoon.
Arms come from the same hash as cxloop's (`pandas.util.hash_pandas_object` of `salt:id`),
since a pilot's assignment is an input, not something to reinvent, or from the `segment`
filters of a region pilot (a ticket `scope` filters its ticket metrics); the pilots are read
from the same `hypotheses/*.yaml`. Only point estimates are computed, with the analysis cxloop
picks (regression adjustment on customer means for a hash split, else DiD solved from cell
sums; a relative effect as a ratio of means), not cxloop's clustered or always-valid
intervals; customers in an earlier concurrent pilot are not excluded, as valid hypothesis
files cannot overlap.
"""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import yaml

from benchmarks.rss import Timed, timed

TABLES = ("customers", "tickets", "survey_responses", "orders", "web_metrics")
HOUR_US = 3_600_000_000

KPIS = """
WITH obs AS (
    SELECT c.segment, 'nps' AS metric,
           CASE WHEN r.score >= 9 THEN 100.0 WHEN r.score <= 6 THEN -100.0 ELSE 0.0 END AS v
    FROM survey_responses r LEFT JOIN customers c ON c.source_id = r.customer_id
    WHERE r.kind = 'nps'
    UNION ALL
    SELECT c.segment, 'csat_top2', CASE WHEN r.score >= $csat_top THEN 100.0 ELSE 0.0 END
    FROM survey_responses r LEFT JOIN customers c ON c.source_id = r.customer_id
    WHERE r.kind = 'csat'
    UNION ALL
    SELECT c.segment, 'frt_hours',
           date_diff('microsecond', t.created_at, t.first_response_at) / 3600e6
    FROM tickets t LEFT JOIN customers c ON c.source_id = t.customer_id
    WHERE t.first_response_at IS NOT NULL
)
SELECT CASE WHEN grouping(segment) = 1 THEN 'all' ELSE segment END AS segment, metric,
       CASE WHEN metric = 'frt_hours' THEN median(v) ELSE avg(v) END AS value,
       count(*) AS n
FROM obs
GROUP BY GROUPING SETS ((segment, metric), (metric))
HAVING grouping(segment) = 1 OR segment IS NOT NULL
ORDER BY segment, metric
"""

# Each NPS respondent's latest answer in points, with the segment and region to adjust for.
RESPONDENTS = """
SELECT l.customer_id, l.pts, c.segment, c.region
FROM (
    SELECT customer_id,
           CASE WHEN score >= 9 THEN 100.0 WHEN score <= 6 THEN -100.0 ELSE 0.0 END AS pts
    FROM survey_responses WHERE kind = 'nps' AND customer_id IS NOT NULL
    QUALIFY row_number() OVER (PARTITION BY customer_id ORDER BY submitted_at DESC) = 1
) l
LEFT JOIN (SELECT DISTINCT ON (source_id) source_id, segment, region FROM customers) c
       ON c.source_id = l.customer_id
ORDER BY l.customer_id
"""
CONTACTS = "SELECT DISTINCT customer_id, topic FROM tickets WHERE customer_id IS NOT NULL"
Z95 = 1.959963984540054


def pain_points(con: duckdb.DuckDBPyConnection, efforts: dict) -> pd.DataFrame:
    """Ticket topics by reach × impact × confidence / effort, the impact being what a topic
    costs a respondent of the same segment and region who contacted support anyway: minus
    its coefficient in an OLS of NPS points on topic indicators, a contacted-support
    indicator and segment and region dummies, with HC1 errors solved by hand in numpy."""
    people = con.execute(RESPONDENTS).df()
    contacts = con.execute(CONTACTS).df()
    tagged = contacts.dropna(subset=["topic"])
    topics = sorted(tagged["topic"].unique())
    columns = {"const": np.ones(len(people))}
    for topic in topics:
        hit = set(tagged.loc[tagged["topic"] == topic, "customer_id"])
        columns[topic] = people["customer_id"].isin(hit).to_numpy(float)
    columns["contacted"] = people["customer_id"].isin(set(contacts["customer_id"])).to_numpy(float)
    for name in ("segment", "region"):
        for value in sorted(people[name].dropna().unique())[1:]:
            columns[f"{name}={value}"] = (people[name] == value).to_numpy(float)
    names = list(columns)
    x = np.column_stack([columns[n] for n in names])
    kept = []
    for j in range(x.shape[1]):  # keep a column only if it adds a dimension to those before
        if np.linalg.matrix_rank(x[:, [*kept, j]]) == len(kept) + 1:
            kept.append(j)
    x, names = x[:, kept], [names[j] for j in kept]
    y = people["pts"].to_numpy(float)
    inverse = np.linalg.inv(x.T @ x)
    beta = inverse @ x.T @ y
    residual = y - x @ beta
    meat = (x * residual[:, None] ** 2).T @ x
    se = np.sqrt(np.diag(inverse @ meat @ inverse) * len(y) / (len(y) - x.shape[1]))
    total = con.execute("SELECT count(DISTINCT source_id) FROM customers").fetchone()[0]
    rows = []
    for topic in topics:
        if topic not in names or topic == "const":
            continue
        j = names.index(topic)
        impact, half = -beta[j], Z95 * se[j]
        members = set(tagged.loc[tagged["topic"] == topic, "customer_id"])
        respondents = int(people["customer_id"].isin(members).sum())
        sure = min(max(1 - half / impact, 0), 1) if impact > 0 and respondents >= 30 else 0.0
        effort = float(efforts.get(f"ticket:{topic}", efforts.get("default", 2.0)))
        score = len(members) / total * 100 * max(impact, 0) * sure / effort
        rows.append({"topic": f"ticket:{topic}", "reach": len(members), "impact": impact,
                     "score": score})  # fmt: skip
    return pd.DataFrame(rows).sort_values(["score", "reach"], ascending=False, ignore_index=True)


OBSERVATIONS = {
    "nps": "SELECT customer_id, submitted_at AS at, survey, channel, NULL AS topic, "
    "CASE WHEN score >= 9 THEN 100.0 WHEN score <= 6 THEN -100.0 ELSE 0.0 END AS v "
    "FROM survey_responses WHERE kind = 'nps'",
    "csat": "SELECT customer_id, submitted_at AS at, survey, channel, NULL AS topic, score AS v "
    "FROM survey_responses WHERE kind = 'csat'",
    "ces": "SELECT customer_id, submitted_at AS at, survey, channel, NULL AS topic, score AS v "
    "FROM survey_responses WHERE kind = 'ces'",
    "frt_hours": "SELECT customer_id, created_at AS at, NULL AS survey, channel, topic, "
    "date_diff('microsecond', created_at, first_response_at) / 3600e6 AS v "
    "FROM tickets WHERE first_response_at IS NOT NULL",
}
SURVEY_METRICS = ("nps", "csat", "ces")

# Every regressor of the DiD (arm, period, fixed effects) is constant within a cell, so the
# normal equations need only each cell's count and sum: X'X = Σ n·x·x', X'y = Σ (Σy)·x.
DID_CELLS = """
SELECT a.arm = 'pilot' AS treated, o.at >= $pilot_start AS post{covariates},
       count(*) AS n, sum(o.v) AS sy
FROM ({observations}) o JOIN arms a USING (customer_id)
WHERE (o.at >= $base_start AND o.at < $base_end) OR (o.at >= $pilot_start AND o.at < $pilot_end)
GROUP BY ALL
"""

# Each customer's mean in the baseline (x) and in the pilot period (y).
CUSTOMER_MEANS = """
SELECT a.arm = 'pilot' AS treated,
       avg(o.v) FILTER (WHERE o.at >= $base_start AND o.at < $base_end) AS x,
       avg(o.v) FILTER (WHERE o.at >= $pilot_start AND o.at < $pilot_end) AS y
FROM ({observations}) o JOIN arms a USING (customer_id)
GROUP BY o.customer_id, a.arm
HAVING y IS NOT NULL
"""


def did(cells: pd.DataFrame, covariates: list[str], relative: bool) -> float:
    """The treated × post coefficient of OLS on cell counts and sums, each covariate's levels
    as fixed effects (first level dropped); `relative`: over the treated pilot-period cells'
    fitted mean without it."""
    fixed = (
        pd.get_dummies(cells[covariates], drop_first=True, dtype=float).to_numpy()
        if covariates
        else np.empty((len(cells), 0))
    )
    treated, post = cells["treated"].to_numpy(float), cells["post"].to_numpy(float)
    x = np.column_stack([np.ones(len(cells)), treated, post, treated * post, fixed])
    n = cells["n"].to_numpy(float)
    b = np.linalg.solve((x * n[:, None]).T @ x, x.T @ cells["sy"].to_numpy())
    if not relative:
        return float(b[3])
    hit = treated * post == 1
    fitted = (x[hit] * n[hit, None]).sum(axis=0) / n[hit].sum() @ b
    return float(b[3] / (fitted - b[3]))


def adjusted(means: pd.DataFrame, relative: bool) -> float:
    """Pilot minus control pilot-period mean, each less θ × its baseline mean (θ pooled over
    both arms; a missing baseline is the mean one); `relative`: over the control's mean."""
    x = means["x"].fillna(means["x"].mean()).fillna(0.0)
    theta = np.cov(x, means["y"])[0, 1] / x.var() if x.var() > 0 else 0.0
    arm = means["treated"].astype(bool)
    y_pilot, y_control = means.loc[arm, "y"].mean(), means.loc[~arm, "y"].mean()
    diff = (y_pilot - theta * x[arm].mean()) - (y_control - theta * x[~arm].mean())
    return float(diff / y_control if relative else diff)


def arms(customers: pd.DataFrame, salt: str, share: float) -> pd.DataFrame:
    """`customer_id`, `arm` by the 64-bit hash of `salt:id` against `share` of 2⁶⁴."""
    keys = salt + ":" + customers["source_id"].astype(str)
    buckets = pd.util.hash_pandas_object(keys, index=False).to_numpy(dtype=np.uint64)
    arm = np.where(buckets < np.uint64(share * 2.0**64), "pilot", "control")
    return pd.DataFrame({"customer_id": customers["source_id"].to_numpy(), "arm": arm})


def segment_arms(customers: pd.DataFrame, pilot: dict, control: dict) -> pd.DataFrame:
    """`customer_id`, `arm` of the customers matching every `pilot` (or `control`) filter
    (column: value or list of values); the others take no part."""
    picked = {}
    for arm, filters in (("pilot", pilot), ("control", control)):
        mask = np.ones(len(customers), dtype=bool)
        for column, values in filters.items():
            values = [values] if isinstance(values, str) else values
            mask &= customers[column].isin(values).to_numpy()
        picked[arm] = customers.loc[mask, "source_id"]
    return pd.concat(
        [pd.DataFrame({"customer_id": ids.to_numpy(), "arm": arm}) for arm, ids in picked.items()],
        ignore_index=True,
    )


def _quoted(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def pilot_metrics(pilot: dict) -> list[tuple[str, bool]]:
    """(metric, relative) for the primary, secondary and guardrail metrics of a hypothesis."""
    targets = [pilot["metric"], *pilot.get("secondary_metrics", [])]
    found = [(t["name"], str(t["expected_effect"]).strip().endswith("%")) for t in targets]
    found += [(g["metric"], False) for g in pilot.get("guardrails", [])]
    return list(dict.fromkeys(found))


def run(data_dir: Path, database: Path, hypotheses_dir: Path, config: dict) -> dict:
    """Timed stages and the headline numbers: KPIs by segment, pain points, pilot DiD."""
    database.unlink(missing_ok=True)
    timings: dict[str, Timed] = {}
    out: dict[str, list[dict]] = {}
    start = time.perf_counter()
    con = duckdb.connect(str(database))
    with timed() as timings["ingest"]:
        for table in TABLES:
            path = data_dir / f"{table}.parquet"
            con.execute(f"CREATE TABLE {table} AS SELECT * FROM read_parquet('{path}')")
    with timed() as timings["metrics"]:
        kpis = con.execute(KPIS, {"csat_top": config.get("csat_scale", 5) - 1}).df()
        out["kpis"] = kpis.to_dict("records")
    with timed() as timings["ranking"]:
        efforts = config.get("efforts", {"default": 2.0})
        pain = pain_points(con, efforts)
        pain["rank"] = np.arange(1, len(pain) + 1)
        out["pain_points"] = pain.to_dict("records")
    with timed() as timings["experiments"]:
        out["pilots"] = _pilots(con, hypotheses_dir)
    with timed() as timings["report"]:
        _write_report(database.with_suffix(".html"), out)
    con.close()
    cycle = Timed(seconds=time.perf_counter() - start)
    cycle.peak_mib = max(t.peak_mib for t in timings.values())
    timings["cycle"] = cycle
    return {"timings": timings, "headline": out}


def _pilots(con: duckdb.DuckDBPyConnection, hypotheses_dir: Path) -> list[dict]:
    customers = con.execute("SELECT source_id, segment, region, channel FROM customers").df()
    rows = []
    for path in sorted(hypotheses_dir.glob("*.yaml")):
        pilot = yaml.safe_load(path.read_text(encoding="utf-8"))
        if pilot.get("status") not in ("running", "concluded"):
            continue
        eligible = customers
        for column, values in (pilot.get("population") or {}).items():
            values = [values] if isinstance(values, str) else values
            eligible = eligible[eligible[column].isin(values)]
        split = pilot["assignment"]
        if split["method"] == "hash":
            con.register("arms", arms(eligible, split["salt"], split["pilot_share"]))
        else:  # segment: the arms are whole regions, segments or channels
            con.register("arms", segment_arms(eligible, split["pilot"], split["control"]))
        ticket_filters = ((pilot.get("scope") or {}).get("tickets") or {}).items()
        window = {
            "base_start": pd.Timestamp(pilot["schedule"]["baseline"]["start"]),
            "base_end": pd.Timestamp(pilot["schedule"]["baseline"]["end"]) + pd.Timedelta(days=1),
            "pilot_start": pd.Timestamp(pilot["schedule"]["pilot"]["start"]),
            "pilot_end": pd.Timestamp(pilot["schedule"]["pilot"]["end"]) + pd.Timedelta(days=1),
        }
        decision = pilot.get("decision") or {}
        adjust = decision.get("adjust_for", [])
        analysis = decision.get("analysis") or ("cuped" if split["method"] == "hash" else "did")
        for metric, relative in pilot_metrics(pilot):
            available = ("survey", "channel") if metric in SURVEY_METRICS else ("channel", "topic")
            covariates = [c for c in adjust if c in available]
            observations = OBSERVATIONS[metric]
            if metric not in SURVEY_METRICS and ticket_filters:
                observations = f"SELECT * FROM ({observations}) WHERE " + " AND ".join(
                    f"{column} IN ({', '.join(_quoted(v) for v in values)})"
                    for column, values in ticket_filters
                )
            means = con.execute(CUSTOMER_MEANS.format(observations=observations), window).df()
            if analysis == "cuped":
                effect = adjusted(means, relative)
            else:
                sql = DID_CELLS.format(
                    observations=observations,
                    covariates="".join(f", o.{c}" for c in covariates),
                )
                effect = did(con.execute(sql, window).df(), covariates, relative)
            observed = means.groupby("treated").size()
            rows.append(
                {
                    "hypothesis_id": pilot["id"],
                    "metric": metric,
                    "estimate": effect,
                    "n_pilot": int(observed.get(True, 0)),
                    "n_control": int(observed.get(False, 0)),
                }
            )
        con.unregister("arms")
    return rows


def _write_report(path: Path, out: dict[str, list[dict]]) -> None:
    sections = [f"<h2>{name}</h2>{pd.DataFrame(rows).to_html(index=False)}"
                for name, rows in out.items()]  # fmt: skip
    path.write_text("<html><body>" + "".join(sections) + "</body></html>", encoding="utf-8")
