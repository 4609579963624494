"""A fake Yandex Metrica Reporting API for pytest-httpserver: `GET /stat/v1/data`.

Daily cells (date × device × traffic source) with visits, users, goal visits and goal reaches
(more reaches than visits: a visit may reach the goal twice), answered in Metrica's shape:
`data[].dimensions[].{name,id}` in the order of the `dimensions` asked (cells summed over the
dimensions not asked for; users too, as this fake knows no user ids), `metrics` as floats in
the order asked, `total_rows`, `sampled`, `sample_share`. `offset` is **1-based**: 0, or any
offset that does not start a page (`(offset - 1) % limit`), gets Metrica's 400
`invalid_parameter`, so a connector paging from 0 fails. `plan` scripts the answer to chosen
requests (429 quota, malformed pages).
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from werkzeug import Request, Response

from tests.fakes.loopback import PlannedAnswers, json_response

DEVICES = ("Desktop", "Smartphones")
SOURCES = (("organic", "Search engine traffic"), ("ad", "Ad traffic"), ("direct", "Direct traffic"))
DIMENSIONS = ("ym:s:date", "ym:s:deviceCategory", "ym:s:lastTrafficSource")


def dimension(name: str, value: str) -> dict[str, str]:
    """A row's `dimensions` entry: Metrica's `name` and, but for dates, its `id`."""
    if name == "ym:s:deviceCategory":
        return {"name": value, "id": str(DEVICES.index(value) + 1)}
    if name == "ym:s:lastTrafficSource":
        return {"name": dict(SOURCES)[value], "id": value}
    return {"name": value}


def metrica_error(status: int, error_type: str, message: str) -> Response:
    body = {"errors": [{"error_type": error_type, "message": message}], "code": status,
            "message": message}  # fmt: skip
    return json_response(body, status)


class FakeMetrica(PlannedAnswers[dict[str, str]]):
    """One counter on loopback; `requests` holds each request's query; `sample_share` below 1
    makes every report sampled."""

    def __init__(self, token: str, counter: str, goal: str) -> None:
        super().__init__()
        self.token, self.counter, self.goal = token, counter, goal
        self.cells: dict[tuple[str, str, str], dict[str, float]] = {}
        self.sample_share = 1.0

    def seed(self, first: date, days: int) -> None:
        for offset in range(days):
            day = (first + timedelta(days=offset)).isoformat()
            for i, device in enumerate(DEVICES):
                for j, (source, _) in enumerate(SOURCES):
                    visits = 50.0 + 10 * offset + 4 * i + j
                    self.cells[(day, device, source)] = {
                        "ym:s:visits": visits,
                        "ym:s:users": visits - 5,
                        f"ym:s:goal{self.goal}visits": visits // 10,
                        f"ym:s:goal{self.goal}reaches": visits // 10 + visits // 25,
                    }

    def handle(self, request: Request) -> Response:
        query = dict(request.args)
        planned = self.log(query)
        if planned is not None:
            return planned
        if request.headers.get("Authorization") != f"OAuth {self.token}":
            return metrica_error(403, "invalid_token", "Invalid oauth_token")
        if request.path != "/stat/v1/data" or query.get("ids") != self.counter:
            return metrica_error(400, "invalid_parameter", "Unknown counter or path")
        limit, offset = int(query.get("limit", 100)), int(query.get("offset", 1))
        if not 1 <= limit <= 100_000 or offset < 1 or (offset - 1) % limit:
            return metrica_error(400, "invalid_parameter", f"offset {offset} must be ≥ 1")
        metrics, asked = query["metrics"].split(","), query["dimensions"].split(",")
        unknown = set(asked) - set(DIMENSIONS)
        if unknown:
            return metrica_error(400, "invalid_parameter", f"Unknown dimensions {sorted(unknown)}")
        cells: dict[tuple[str, ...], list[float]] = {}
        for (day, device, source), cell in sorted(self.cells.items()):
            if query["date1"] <= day <= query["date2"]:
                named = dict(zip(DIMENSIONS, (day, device, source), strict=True))
                summed = cells.setdefault(tuple(named[d] for d in asked), [0.0] * len(metrics))
                for i, metric in enumerate(metrics):
                    summed[i] += cell[metric]
        rows = [
            {"dimensions": [dimension(d, v) for d, v in zip(asked, key, strict=True)],
             "metrics": values}
            for key, values in cells.items()
        ]  # fmt: skip
        body: dict[str, Any] = {
            "query": {"ids": [int(self.counter)], "metrics": metrics, "offset": offset},
            "data": rows[offset - 1 : offset - 1 + limit],
            "total_rows": len(rows),
            "totals": [sum(r["metrics"][i] for r in rows) for i in range(len(metrics))],
            "sampled": self.sample_share < 1,
            "sample_share": self.sample_share,
        }
        return json_response(body)
