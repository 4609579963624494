"""Where reports go: the SMTP server, Slack and Teams webhooks and the retry policy, as the
`reports.delivery` section of `cxloop.yaml` declares them (pydantic only, so `tasks.delivery`
takes them without importing `flows`)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


ReportKind = Literal["digest", "experiment"]


class SmtpConfig(Strict):
    """SMTP server; the user name and password come from the named environment variables."""

    host: str
    port: int = 587
    security: Literal["starttls", "ssl", "none"] = "starttls"
    sender: str
    username_env: str | None = "CXLOOP_SMTP_USER"
    password_env: str | None = "CXLOOP_SMTP_PASSWORD"
    timeout: float = 30.0


class WebhookConfig(Strict):
    """A Slack or Teams incoming webhook whose URL is in the environment variable `url_env`."""

    kind: Literal["slack", "teams"]
    url_env: str
    reports: list[ReportKind] = ["digest", "experiment"]


class DeliveryConfig(Strict):
    """Where reports go besides `out_dir`; e-mail recipients are `reports.recipients`."""

    directory: Path | None = None
    smtp: SmtpConfig | None = None
    webhooks: list[WebhookConfig] = []
    base_url: str | None = None
    attempts: int = Field(default=3, ge=1)
    backoff_seconds: float = Field(default=2.0, ge=0)

    @model_validator(mode="after")
    def _warn_unlinked_chat(self) -> DeliveryConfig:
        # Not an error: chat still says where the report is, it just cannot link it.
        if self.webhooks and not self.base_url:
            warnings.warn(
                "reports.delivery.webhooks: reports.delivery.base_url is not set, so Slack and "
                "Teams messages name the report's file on this machine instead of linking it; "
                "set base_url to the address where reports.out_dir is published",
                UserWarning,
                stacklevel=2,
            )
        return self
