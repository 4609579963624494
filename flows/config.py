"""`cxloop.yaml` into pydantic models; errors name the file, line, key and what is expected."""

from __future__ import annotations

import os
from datetime import date
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_serializer, field_validator

from connectors.errors import ConfigError
from tasks.delivery_settings import DeliveryConfig, ReportKind
from tasks.validation import YamlDocument, read_yaml

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from tasks.hours import BusinessHours
    from tasks.text import Taxonomy

DEFAULT_CONFIG = Path("cxloop.yaml")
ENV_OVERRIDES = {
    "CXLOOP_DATABASE_URL": ("database_url",),
    "CXLOOP_HYPOTHESES_DIR": ("hypotheses_dir",),
    "CXLOOP_REPORTS_DIR": ("reports", "out_dir"),
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceConfig(Strict):
    name: str = Field(pattern=r"^[a-z0-9_-]+$")
    kind: str
    options: dict[str, Any] = {}

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

    alpha: float = Field(default=0.01, gt=0, lt=0.5)
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

    @field_validator("where")
    @classmethod
    def _known_dimensions(cls, where: dict[str, str]) -> dict[str, str]:
        from tasks.standards import dimension_problem

        if problems := [p for d in where if (p := dimension_problem(d))]:
            raise ValueError("; ".join(problems))
        return where

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

    dask_workers: int = Field(default=0, ge=0)
    dask_address: str | None = None


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class BusinessHoursConfig(Strict):
    """Working time for FRT in business hours: `start`–`end` o'clock on `weekdays`."""

    start: float = Field(default=9.0, ge=0, lt=24)
    end: float = Field(default=18.0, gt=0, le=24, validate_default=True)
    weekdays: list[Weekday] = ["mon", "tue", "wed", "thu", "fri"]
    holidays: list[date] = []

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

    ticket_topics: list[str] = []
    funnel_steps: list[str] = []
    surveys: list[str] = []


DEFAULT_JOURNEY = {
    "search": Stage(funnel_steps=["visit", "view_item"]),
    "purchase": Stage(
        funnel_steps=["add_to_cart", "begin_checkout", "purchase"], ticket_topics=["payment"]
    ),
    "delivery": Stage(ticket_topics=["delivery", "product_quality", "returns"]),
    "support": Stage(ticket_topics=["login"], surveys=["post_ticket_csat", "post_ticket_ces"]),
    "loyalty": Stage(surveys=["relationship_nps"]),
}


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
