"""Prefect flows that orchestrate the loop, the configuration and the `cxloop` CLI."""

import os

# Prefect's ephemeral server needs 20–25 s for its first start on a 2-core machine, more than
# its default start timeout; and there is no outside network for its telemetry.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
