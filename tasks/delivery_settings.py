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

    host: str = Field(description="SMTP server host, e.g. smtp.example.com.")
    port: int = Field(587, description="SMTP port: 587 for STARTTLS, 465 for SSL.")
    security: Literal["starttls", "ssl", "none"] = Field(
        "starttls", description="How the connection is encrypted."
    )
    sender: str = Field(description="The From address, e.g. cxloop@example.com.")
    username_env: str | None = Field(
        "CXLOOP_SMTP_USER", description="Environment variable holding the SMTP user name."
    )
    password_env: str | None = Field(
        "CXLOOP_SMTP_PASSWORD", description="Environment variable holding the SMTP password."
    )
    timeout: float = Field(30.0, description="Seconds to wait for the server.")


class WebhookConfig(Strict):
    """A Slack or Teams incoming webhook whose URL is in the environment variable `url_env`."""

    kind: Literal["slack", "teams"] = Field(description="Which chat the webhook posts to.")
    url_env: str = Field(description="Environment variable holding the webhook URL.")
    reports: list[ReportKind] = Field(
        ["digest", "experiment"], description="The report kinds announced there."
    )


class DeliveryConfig(Strict):
    """Where reports go besides `out_dir`; e-mail recipients are `reports.recipients`."""

    directory: Path | None = Field(None, description="A folder the reports are copied to.")
    smtp: SmtpConfig | None = Field(None, description="SMTP server for e-mailing the reports.")
    webhooks: list[WebhookConfig] = Field([], description="Slack or Teams webhooks to notify.")
    base_url: str | None = Field(
        None, description="Where out_dir is published, so chat messages can link the reports."
    )
    attempts: int = Field(default=3, ge=1, description="Tries per send in one run.")
    backoff_seconds: float = Field(
        default=2.0, ge=0, description="Seconds before the first retry, doubling after."
    )

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
