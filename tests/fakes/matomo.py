"""A fake Matomo Reporting API for pytest-httpserver: `POST /index.php?module=API&method=…`.

It keeps one site's daily numbers (VisitsSummary.get), goal conversions per goal (Goals.get,
all goals summed without `idGoal`) and funnel step tables (Funnels.getFunnelFlow), and answers
as Matomo does for `period=day` over a date range: an object keyed by every date, `[]` for a
day without data, errors with HTTP 200 as `{"result": "error", "message": …}`,
`API.getBulkRequest` as a list of answers. Like a token created for secure requests only, it
takes `token_auth` from the POST form alone and refuses it in the URL. Step tables honour
`filter_limit` (Matomo's default 100) and `filter_offset`. A `segment` of `deviceType==X` answers
that device type's share of every number (`DEVICE_SHARES`), `deviceType!=X;deviceType!=Y…` the
rest. `plan` scripts the answer to chosen requests (5xx, error bodies, malformed pages).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date, timedelta
from typing import Any
from urllib.parse import parse_qsl

from werkzeug import Request, Response

from tests.fakes.loopback import PlannedAnswers, json_response

STEPS = ("Product page", "Cart", "Checkout", "Thank you")
# Share of each day's numbers per device type; the rest goes to other types (e.g. phablet).
DEVICE_SHARES = {"desktop": 0.5, "smartphone": 0.3, "tablet": 0.15}


def matomo_error(message: str) -> Response:
    """Matomo's error answer: HTTP 200 with `{"result": "error", "message": …}`."""
    return json_response({"result": "error", "message": message})


class FakeMatomo(PlannedAnswers[dict[str, dict[str, str]]]):
    """One Matomo site on loopback; `requests` holds each request's URL query and form."""

    def __init__(self, token: str, site_id: str = "1") -> None:
        super().__init__()
        self.token = token
        self.site_id = site_id
        self.visits: dict[str, dict[str, Any]] = {}
        self.conversions: dict[str, dict[str, dict[str, float]]] = {}
        self.funnels: dict[str, dict[str, list[dict[str, Any]]]] = {}
        self.calls: list[dict[str, str]] = []

    def seed(self, first: date, days: int, empty: Iterable[int] = (), funnel: str = "1") -> None:
        """Deterministic data for `days` days from `first`; days numbered in `empty` have none."""
        skipped = set(empty)
        for offset in range(days):
            day = (first + timedelta(days=offset)).isoformat()
            if offset in skipped:
                continue
            visits = 200 + 10 * offset
            self.visits[day] = {
                "nb_uniq_visitors": visits - 40,
                "nb_visits": visits,
                "nb_users": 0,
                "nb_actions": 3 * visits,
                "max_actions": 40,
                "bounce_count": visits // 4,
                "sum_visit_length": 95 * visits,
                "nb_visits_converted": visits // 20,
                "bounce_rate": "25%",
                "nb_actions_per_visit": 3,
                "avg_time_on_site": 95,
            }
            self.conversions[day] = {
                "1": {"nb_conversions": offset + 3, "nb_visits_converted": offset + 2,
                      "revenue": 0},
                "4": {"nb_conversions": offset + 1, "nb_visits_converted": offset + 1,
                      "revenue": 1500.5 * (offset + 1)},
            }  # fmt: skip
            entering = visits // 2
            self.funnels.setdefault(funnel, {})[day] = [
                {
                    "label": label,
                    "step_position": str(position),
                    "step_nb_visits": entering // (position + 1),
                    "step_nb_visits_actual": entering // (position + 1),
                    "step_nb_proceeded": entering // (position + 2),
                    "step_nb_exits": entering // (position + 1) - entering // (position + 2),
                    "step_proceeded_rate": f"{100 * (position + 1) // (position + 2)}%",
                    "step_definition": f"Pattern: Path starts with /{label.lower()}",
                }
                for position, label in enumerate(STEPS, start=1)
            ]

    def handle(self, request: Request) -> Response:
        query, form = dict(request.args), dict(request.form)
        planned = self.log({"query": query, "form": form})
        if planned is not None:
            return planned
        if request.path != "/index.php":
            return Response("<html>Not Found</html>", 404, content_type="text/html")
        if "token_auth" in query or request.method != "POST":
            return matomo_error(
                "This token can only be used in a secure way: send token_auth as a POST "
                "parameter, not in the URL."
            )
        if form.get("token_auth") != self.token:
            return matomo_error(
                "You can't access this resource as it requires 'view' access for the website "
                f"id = {query.get('idSite', form.get('idSite'))}."
            )
        params = query | {k: v for k, v in form.items() if k != "token_auth"}
        if params.get("module") != "API" or params.get("format", "").lower() != "json":
            return matomo_error("Please set module=API and format=JSON.")
        if params.get("method") == "API.getBulkRequest":
            urls = sorted((k for k in params if k.startswith("urls[")), key=lambda k: int(k[5:-1]))
            return json_response([self._call(dict(parse_qsl(params[k]))) for k in urls])
        return json_response(self._call(params))

    def _call(self, params: dict[str, str]) -> Any:
        self.calls.append(params)
        if params.get("idSite") != self.site_id:
            return {
                "result": "error",
                "message": f"The website id {params.get('idSite')} is unknown.",
            }
        if params.get("period") != "day":
            return {"result": "error", "message": "This fake answers period=day only."}
        try:
            first, last = (date.fromisoformat(d) for d in params["date"].split(","))
        except (KeyError, ValueError):
            return {"result": "error", "message": f"Date {params.get('date')!r} is not a range."}
        days = [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]
        share = device_share(params.get("segment", ""))
        if share is None:
            return {"result": "error", "message": f"Segment {params['segment']!r} is not valid."}
        return _scaled(self._answer(params, days), share)

    def _answer(self, params: dict[str, str], days: list[str]) -> Any:
        method = params.get("method")
        if method == "VisitsSummary.get":
            return {day: self.visits.get(day, []) for day in days}
        if method == "Goals.get":
            return self._goals(days, params.get("idGoal"))
        if method == "Funnels.getFunnelFlow":
            funnel = self.funnels.get(params.get("idFunnel", ""))
            if funnel is None:
                return {"result": "error", "message": "The requested funnel does not exist."}
            limit, offset = (
                int(params.get("filter_limit", 100)),
                int(params.get("filter_offset", 0)),
            )
            end = None if limit == -1 else offset + limit
            return {day: funnel.get(day, [])[offset:end] for day in days}
        return {
            "result": "error",
            "message": f"The method '{method}' does not exist or is not available.",
        }

    def _goals(self, days: list[str], goal: str | None) -> Any:
        known = {g for per_day in self.conversions.values() for g in per_day}
        if goal is not None and goal not in known:
            return {"result": "error", "message": f"The goal id {goal} couldn't be found."}
        out: dict[str, Any] = {}
        for day in days:
            goals = self.conversions.get(day, {})
            chosen = [goals[goal]] if goal in goals else ([] if goal else list(goals.values()))
            if not chosen:
                out[day] = []
                continue
            total = {m: sum(g[m] for g in chosen) for m in chosen[0]}
            visits = self.visits.get(day, {}).get("nb_visits", 0)
            rate = 100 * total["nb_visits_converted"] / visits if visits else 0
            out[day] = total | {"conversion_rate": f"{rate:.1f}%"}
        return out


def device_share(segment: str) -> Callable[[float], float] | None:
    """The part of a number a segment keeps (all of it without one); None for a segment this
    fake does not understand."""
    if not segment:
        return lambda whole: whole
    kept, parts = segment.removeprefix("deviceType=="), segment.split(";")
    if kept in DEVICE_SHARES:
        return lambda whole: type(whole)(whole * DEVICE_SHARES[kept])
    if {part.removeprefix("deviceType!=") for part in parts} == set(DEVICE_SHARES):
        return lambda whole: whole - sum(type(whole)(whole * s) for s in DEVICE_SHARES.values())
    return None


def _scaled(answer: Any, part: Callable[[float], float]) -> Any:
    """`answer` with every number replaced by `part` of it (labels and rates are strings)."""
    if isinstance(answer, dict):
        return {key: _scaled(value, part) for key, value in answer.items()}
    if isinstance(answer, list):
        return [_scaled(value, part) for value in answer]
    if isinstance(answer, int | float) and not isinstance(answer, bool):
        return part(answer)
    return answer
