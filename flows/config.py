"""`cxloop.yaml` into pydantic models; errors name the file, line, key and what is expected."""

from __future__ import annotations

import difflib
import os
from datetime import date
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_serializer, field_validator

from connectors.canonical import DIMENSION_NAME, TABLES
from connectors.errors import ConfigError
from tasks.delivery_settings import DeliveryConfig, ReportKind
from tasks.validation import YamlDocument, read_yaml

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from tasks.holdout import Holdout
    from tasks.hours import BusinessHours
    from tasks.text import Taxonomy

DEFAULT_CONFIG = Path("cxloop.yaml")
# Names a declared dimension may not take: the customer's own columns and the cuts cxloop has.
RESERVED_CUTS = frozenset(
    {*TABLES["customer"].columns, "email", "customer_id", "acquisition", "topic", "survey"}
    | {"stage", "hour", "weekday", "period", "ticket_topic", "ticket_channel", "agent", "team"}
    | {"churn_risk"}
)
ENV_OVERRIDES = {
    "CXLOOP_DATABASE_URL": ("database_url",),
    "CXLOOP_HYPOTHESES_DIR": ("hypotheses_dir",),
    "CXLOOP_REPORTS_DIR": ("reports", "out_dir"),
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceConfig(Strict):
    name: str = Field(
        pattern=r"^[a-z0-9_-]+$", description="The source's name in the store, e.g. crm."
    )
    kind: str = Field(description="The connector: demo, hubspot, typeform, files, sql, …")
    options: dict[str, Any] = Field(
        {}, description="The connector's options (see the README's section on it)."
    )

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        from connectors import SOURCE_KINDS

        if kind not in SOURCE_KINDS:
            raise ValueError(f"unknown source kind; use one of {', '.join(SOURCE_KINDS)}")
        return kind


class ReportConfig(Strict):
    """Where reports land, their language, optional own templates, PDF and delivery."""

    out_dir: Path = Field(Path("reports/out"), description="Folder the reports are written to.")
    language: Literal["en", "ru"] = Field("en", description="Language of the reports.")
    template_dir: Path | None = Field(
        None, description="Own Jinja2 templates and labels.yaml, used before the shipped ones."
    )
    pdf: bool = Field(False, description="Also print each report to PDF (headless Chromium).")
    breakdowns: list[str] = Field(
        ["segment", "region", "channel"],
        description="Cuts the digest breaks the KPIs down by, and the pilot reports the effect "
        "by: customer columns or dimensions.",
    )
    paper: Literal["a4", "letter"] = Field("a4", description="PDF paper size.")
    chromium: str = Field("chromium", description="Chromium executable that prints the PDFs.")
    recipients: dict[ReportKind, list[str]] = Field(
        {}, description="E-mail addresses per report kind (digest, experiment)."
    )
    delivery: DeliveryConfig = Field(
        DeliveryConfig(), description="Where reports go besides out_dir: SMTP, Slack, Teams."
    )


class AlertConfig(Strict):
    """How sure and how large a change must be to raise an alert."""

    q: float = Field(
        default=0.05,
        gt=0,
        lt=0.5,
        description="False discovery rate across all of a run's alert tests (Benjamini–Hochberg).",
    )
    min_growth: float = Field(default=1.3, gt=1, description="Ticket volume growth per day.")


class StandardConfig(Strict):
    """A service standard: `metric` should be `direction` (above/below) `target` within the
    cut `where` (dimension → value), e.g. FRT in chat below 0.033 h."""

    metric: str = Field(description="The metric, e.g. nps, fcr, frt_hours.")
    target: float = Field(description="The value the metric should reach, in its own unit.")
    where: dict[str, str] = Field({}, description="Cut: dimension → value, e.g. {channel: chat}.")
    direction: Literal["above", "below"] | None = Field(
        None, description="Better above or below the target; by the metric when left out."
    )

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, metric: str) -> str:
        from tasks.standards import metric_problem

        if problem := metric_problem(metric):
            raise ValueError(problem)
        return metric

    @field_validator("target")
    @classmethod
    def _in_range(cls, target: float, info: ValidationInfo) -> float:
        from tasks.standards import target_problem

        metric = info.data.get("metric")
        if metric is not None and (problem := target_problem(metric, target)):
            raise ValueError(problem)
        return target


class ParallelConfig(Strict):
    """Where heavy per-segment computations run: threads by default, or a Dask cluster
    (`pip install cxloop[dask]`): a local one with `dask_workers` processes, or an
    existing scheduler at `dask_address`."""

    dask_workers: int = Field(
        default=0, ge=0, description="Processes of a local Dask cluster (0: threads)."
    )
    dask_address: str | None = Field(
        None, description="Address of an existing Dask scheduler, e.g. tcp://10.0.0.5:8786."
    )


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class BusinessHoursConfig(Strict):
    """Working time for FRT in business hours: `start`–`end` o'clock on `weekdays`."""

    start: float = Field(default=9.0, ge=0, lt=24, description="Opening hour, e.g. 9 or 8.5.")
    end: float = Field(
        default=18.0, gt=0, le=24, validate_default=True, description="Closing hour, e.g. 18."
    )
    weekdays: list[Weekday] = Field(
        ["mon", "tue", "wed", "thu", "fri"], description="Working days."
    )
    holidays: list[date] = Field([], description="Days off, e.g. [2026-01-01, 2026-01-07].")

    @field_validator("end")
    @classmethod
    def _after_start(cls, end: float, info: ValidationInfo) -> float:
        start = info.data.get("start")
        if start is not None and end <= start:
            raise ValueError(
                f"the working day ends at {end:g}, not after it starts at {start:g}; make "
                "`end` later than `start` (hours of the day, 0–24)"
            )
        return end

    def calendar(self) -> BusinessHours:
        from tasks.hours import BusinessHours

        days = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
        return BusinessHours(
            start=self.start,
            end=self.end,
            weekdays="".join("1" if day in self.weekdays else "0" for day in days),
            holidays=tuple(d.isoformat() for d in self.holidays),
        )


class ChurnConfig(Strict):
    """The at-risk model: churn is no order in `horizon_days`; probabilities at or above
    `high` band a customer high-risk, at or above `medium` medium."""

    enabled: bool = Field(False, description="Train the churn model in the rank flow.")
    horizon_days: int = Field(90, ge=7, le=730, description="Days without an order = churned.")
    high: float = Field(0.5, gt=0, lt=1, description="Probability from which risk is high.")
    medium: float = Field(
        0.2, gt=0, lt=1, validate_default=True, description="Probability from which medium."
    )
    model: Literal["logistic", "boosting"] = Field(
        "logistic", description="Regularised logistic regression, or gradient boosting."
    )

    @field_validator("medium")
    @classmethod
    def _below_high(cls, medium: float, info: ValidationInfo) -> float:
        high = info.data.get("high")
        if high is not None and medium >= high:
            raise ValueError(
                f"the medium cut-off {medium:g} is not below the high one {high:g}; make "
                "`medium` smaller than `high` (probabilities, 0–1)"
            )
        return medium


class Stage(Strict):
    """The touchpoints that make up one journey stage."""

    ticket_topics: list[str] = Field([], description="Ticket topics raised at this stage.")
    funnel_steps: list[str] = Field([], description="Web funnel steps of this stage, in order.")
    surveys: list[str] = Field([], description="Surveys asked at this stage.")
    source: str | None = Field(
        None, description="The web source its funnel steps come from (default: each source's)."
    )


DEFAULT_JOURNEY = {
    "search": Stage(funnel_steps=["visit", "view_item"]),
    "purchase": Stage(
        funnel_steps=["add_to_cart", "begin_checkout", "purchase"], ticket_topics=["payment"]
    ),
    "delivery": Stage(ticket_topics=["delivery", "product_quality", "returns"]),
    "support": Stage(ticket_topics=["login"], surveys=["post_ticket_csat", "post_ticket_ces"]),
    "loyalty": Stage(surveys=["relationship_nps"]),
}


class HoldoutConfig(Strict):
    """A long-term holdout: customers kept out of every pilot and every adopted change, so
    the cumulative effect of all of them can be measured against them."""

    share: float = Field(
        gt=0, le=0.5, description="Share of all customers held out, e.g. 0.05 (at most 0.5)."
    )
    salt: str = Field(
        "holdout", min_length=1, description="Seed of the draw; change it only to redraw."
    )
    since: date = Field(description="The day the holdout was set aside, e.g. 2026-01-01.")

    def holdout(self) -> Holdout:
        """The holdout as the analyses take it."""
        from tasks.holdout import Holdout

        return Holdout(self.share, self.salt, self.since)


class RankingConfig(Strict):
    """What the pain-point ranking orders by."""

    by: Literal["nps", "revenue"] = Field(
        "nps",
        description="`nps`: by points at stake; `revenue`: by revenue at stake (needs orders "
        "or a published churn model).",
    )
    value_per_point: float | None = Field(
        None,
        gt=0,
        description="Revenue one NPS point is worth per customer; by default it is taken from "
        "the orders of promoters and detractors.",
    )


class FcrConfig(Strict):
    """How first-contact resolution is counted."""

    repeat_days: int = Field(
        7,
        ge=0,
        le=90,
        description="A resolved ticket is not first-contact resolved when the customer writes "
        "again within this many days (0: only a reopening counts).",
    )


class Config(Strict):
    """The whole configuration of one cxloop installation."""

    database_url: str | None = Field(
        None,
        description="Store URL: sqlite:///.cxloop/cxloop.db by default, postgresql://… for "
        "teams; CXLOOP_DATABASE_URL wins.",
    )
    sources: list[SourceConfig] = Field(
        min_length=1, description="Where data comes from: {name, kind, options} each."
    )
    segments: list[str] = Field(
        ["new", "loyal", "premium", "b2b"], description="Customer segments to report on."
    )
    dimensions: list[str] = Field(
        [],
        description="CRM properties kept per customer as cuts, e.g. [device, plan]; a field "
        "map may map a vendor field to one.",
    )
    holdout: HoldoutConfig | None = Field(
        None, description="A long-term holdout: {share, salt, since}; none by default."
    )
    fcr: FcrConfig = Field(
        FcrConfig(), description="First-contact resolution: the repeat-contact window."
    )

    @field_validator("dimensions")
    @classmethod
    def _new_dimension_names(cls, dimensions: list[str]) -> list[str]:
        for name in dimensions:
            if not DIMENSION_NAME.fullmatch(name):
                raise ValueError(
                    f"dimension {name!r}: use lower-case letters, digits and _, e.g. device"
                )
            if name in RESERVED_CUTS:
                raise ValueError(
                    f"dimension {name!r} is already a column or cut of cxloop; map the vendor "
                    f"field to {name!r} directly, or declare another name"
                )
        if len(set(dimensions)) < len(dimensions):
            raise ValueError("a dimension is declared twice")
        return dimensions

    csat_scale: int = Field(
        default=5, ge=3, le=10, description="Top of the CSAT scale (5: answers 1–5)."
    )
    ces_scale: int = Field(default=7, ge=3, le=10, description="Top of the CES scale.")
    csi: dict[str, float] = Field(
        {"nps": 0.4, "csat_top2": 0.3, "ces": 0.3},
        description="Weights of the KPIs in the CSI index.",
    )
    topics: dict[str, dict[str, list[str]]] = Field(
        {}, description="Own comment topics: name → {en: [keywords], ru: [keywords]}."
    )
    efforts: dict[str, float] = Field(
        {"default": 2.0},
        description="Person-weeks to fix a pain point, by key or kind; `default` otherwise.",
    )
    alerts: AlertConfig = Field(AlertConfig(), description="How sure and large alerts must be.")
    parallel: ParallelConfig = Field(
        ParallelConfig(), description="Threads, or a Dask cluster, for the heavy cuts."
    )
    journey: dict[str, Stage] = Field(
        DEFAULT_JOURNEY, description="Journey stages: their ticket topics, funnel steps, surveys."
    )
    business_hours: BusinessHoursConfig = Field(
        BusinessHoursConfig(), description="Working time for FRT in business hours."
    )
    timezone: str = Field("UTC", description="The company's IANA time zone, e.g. Europe/Moscow.")
    hypotheses_dir: Path = Field(
        Path("hypotheses"), description="Folder of hypothesis files; CXLOOP_HYPOTHESES_DIR wins."
    )
    reports: ReportConfig = Field(
        ReportConfig(), description="Reports: folder, language, PDF, recipients, delivery."
    )
    standards: list[StandardConfig] = Field(
        [], description="Service standards: {metric, target, where, direction} each."
    )
    churn: ChurnConfig = Field(
        ChurnConfig(), description="At-risk customers: churn horizon, risk cut-offs, model."
    )
    ranking: RankingConfig = Field(
        RankingConfig(), description="Pain-point ranking: by NPS points or by revenue."
    )

    @property
    def touchpoint_stages(self) -> dict[str, str]:
        """The journey stage of each ticket topic and survey."""
        return {
            touchpoint: name
            for name, stage in self.journey.items()
            for touchpoint in [*stage.ticket_topics, *stage.surveys]
        }

    @property
    def funnel_steps(self) -> list[str]:
        """The funnel's steps in journey order."""
        return [step for stage in self.journey.values() for step in stage.funnel_steps]

    @property
    def funnel_source(self) -> str | None:
        """The web source the funnel's pain points come from: the first one a stage with
        funnel steps names (`journey.<stage>.source`), else None (the main source)."""
        named = [s.source for s in self.journey.values() if s.funnel_steps and s.source]
        return named[0] if named else None

    @property
    def store_url(self) -> str:
        """The store's SQLAlchemy URL (`database_url`, else local SQLite)."""
        from tasks.store import database_url

        return database_url(self.database_url)

    def store(self) -> Engine:
        """The opened store, its tables created (one engine per URL and process)."""
        from tasks.store import open_store

        return open_store(self.store_url)

    @property
    def taxonomy(self) -> Taxonomy:
        """The shipped comment-topic taxonomy with the configured `topics` added."""
        from tasks.text import Taxonomy

        return Taxonomy.default(self.topics)

    @field_serializer("database_url", when_used="json")
    def _redacted(self, url: str | None) -> str | None:
        # A subflow's parameters are stored by Prefect; the password must not be.
        from tasks.store import redact_url

        return redact_url(url) if url else url

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, name: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {name!r}; use an IANA name such as Europe/Moscow"
            ) from None
        return name

    @field_validator("topics")
    @classmethod
    def _valid_topics(cls, topics: dict) -> dict:
        from tasks.text import Taxonomy

        if topics:
            try:
                Taxonomy.from_dict(topics)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return topics

    @field_validator("csi")
    @classmethod
    def _known_csi_components(cls, weights: dict[str, float]) -> dict[str, float]:
        from tasks.metrics import CSI_RANGES

        known = [*CSI_RANGES, "ces"]
        unknown = [name for name in weights if name not in known]
        if unknown:
            raise ValueError(f"unknown CSI component {unknown[0]!r}; use {', '.join(known)}")
        if not weights or any(w <= 0 for w in weights.values()):
            raise ValueError("CSI weights must be positive numbers, at least one")
        return weights

    @field_validator("efforts")
    @classmethod
    def _positive_efforts(cls, efforts: dict[str, float]) -> dict[str, float]:
        bad = [key for key, weeks in efforts.items() if weeks <= 0]
        if bad:
            raise ValueError(f"efforts must be positive person-weeks; fix {', '.join(bad)}")
        return efforts


def example_text() -> str:
    """The commented example configuration that `cxloop init` writes."""
    return files("flows").joinpath("cxloop.example.yaml").read_text(encoding="utf-8")


def load_config(path: Path = DEFAULT_CONFIG, *, sources_checked: bool = True) -> Config:
    """The configuration in `path` with environment overrides applied.

    Every source's options are checked too (without opening the source), so a misspelt
    option stops a command before the store is touched; `sources_checked=False` leaves that
    to the source itself (`sources inspect` opens a source whose questions are not chosen yet).
    """
    if not path.exists():
        raise ConfigError(f"{path}: no such file; run `cxloop init` to write a commented example.")
    document = read_yaml(path, ConfigError)
    config = document.validate(Config, ConfigError)
    data = config.model_dump()
    for variable, keys in ENV_OVERRIDES.items():
        if os.environ.get(variable):
            target = data
            for key in keys[:-1]:
                target = target[key]
            target[keys[-1]] = os.environ[variable]
    config = Config.model_validate(data)
    _check_dimensions(document, config)
    if sources_checked:
        _check_sources(document, config)
    return config


def given_or_loaded(config_path: Path, config: Config | None) -> Config:
    """`config` when a caller already loaded it (a subflow of the cycle), else the file's."""
    return config if config is not None else load_config(Path(config_path))


def _check_sources(document: YamlDocument, config: Config) -> None:
    """`ConfigError` listing every source option its connector would refuse, at its line."""
    from connectors import option_problems

    problems = [
        f"{document.where(('sources', i, 'options', *([p.option] if p.option else [])))}: "
        f"{p.message}"
        for i, source in enumerate(config.sources)
        for p in option_problems(source.name, source.kind, source.options)
    ]
    if problems:
        raise ConfigError("\n".join(problems))


def _check_dimensions(document: YamlDocument, config: Config) -> None:
    """`ConfigError` listing, at their lines, field-map targets that are neither canonical
    columns nor declared `dimensions`, and breakdowns or standard cuts on no known dimension."""
    from connectors import field_map_table
    from tasks.standards import dimension_problem

    declared = config.dimensions
    problems = [
        f"{document.where(loc)}: source {source.name}: {problem}"
        for i, source in enumerate(config.sources)
        for loc, problem in _target_problems(
            ("sources", i, "options"), source.options, declared, field_map_table(source.kind)
        )
    ]
    for i, standard in enumerate(config.standards):
        for name in standard.where:
            if problem := dimension_problem(name, declared):
                where = document.where(("standards", i, "where", name))
                problems.append(f"{where}: `standards.{i}.where`: {problem}")
    scored = [*declared, *(["churn_risk"] if config.churn.enabled else [])]
    for i, name in enumerate(config.reports.breakdowns):
        if problem := dimension_problem(name, scored):
            where = document.where(("reports", "breakdowns", i))
            problems.append(f"{where}: `reports.breakdowns`: {problem}")
    if problems:
        raise ConfigError("\n".join(problems))


def _allowed(table: str | None, declared: list[str]) -> set[str]:
    """The targets a field map filling `table` may name: its columns, and the declared
    dimensions where it fills customers; with no one table (a map per object), the columns of
    every table an object can fill (any but the web's daily aggregates) and the dimensions."""
    if table is not None:
        columns = TABLES[table]
        return columns.targets | (set(declared) if "attributes" in columns.columns else set())
    objects = [t.targets for name, t in TABLES.items() if name != "web_metric"]
    return set().union(*objects, declared)


def _target_problems(
    loc: tuple, options: Any, declared: list[str], flat: str | None
) -> list[tuple[tuple, str]]:
    """Where a source's `field_map` (`flat`: the one table a flat map fills) or a `files`/`sql`
    entry's `columns` maps to a column that is neither one of its table's nor a declared
    dimension (customers only), and why."""
    if isinstance(options, list):
        return [
            problem
            for i, item in enumerate(options)
            for problem in _target_problems((*loc, i), item, declared, flat)
        ]
    if not isinstance(options, dict):
        return []
    found = []
    for key, value in options.items():
        if key == "field_map":
            found += _leaf_problems((*loc, key), value, _allowed(flat, declared))
        elif key == "columns" and isinstance(value, dict) and options.get("table") in TABLES:
            found += _leaf_problems((*loc, key), value, _allowed(options["table"], declared))
        else:
            found += _target_problems((*loc, key), value, declared, flat)
    return found


def _leaf_problems(loc: tuple, mapping: Any, allowed: set[str]) -> list[tuple[tuple, str]]:
    if isinstance(mapping, dict):
        return [p for k, v in mapping.items() for p in _leaf_problems((*loc, k), v, allowed)]
    if not isinstance(mapping, str) or mapping in allowed:
        return []
    hint = difflib.get_close_matches(mapping, sorted(allowed), n=1)
    field = ".".join(map(str, loc[2:]))
    return [
        (
            loc,
            f"{field} maps `{loc[-1]}` to `{mapping}`, which is neither a canonical column "
            f"nor a declared dimension{f' (did you mean `{hint[0]}`?)' if hint else ''}; add "
            f"`{mapping}` to `dimensions:` to keep it per customer, or map the field to a "
            "canonical column",
        )
    ]
