"""Ingest flow: every configured source, stream by stream, page by page into the store."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from connectors import open_source
from flows.config import DEFAULT_CONFIG, SourceConfig, load_config
from tasks.store import database_url, open_store
from tasks.sync import sync_stream


@task(
    task_run_name="sync {source.name}",
    retries=2,
    retry_delay_seconds=[5, 30],
    cache_policy=NO_CACHE,
    tags=["ingest"],
)
def sync_source(source: SourceConfig, url: str) -> dict[str, int]:
    """Records written per stream; resumes each stream from its saved cursor."""
    logger = get_run_logger()
    engine = open_store(url)
    connector = open_source(source.name, source.kind, source.options)
    written: dict[str, int] = {}
    for stream in connector.streams():
        written[stream.name] = sync_stream(engine, source.name, stream)
        logger.info(
            "%s/%s: %s new or changed records",
            source.name,
            stream.name,
            f"{written[stream.name]:,}",
        )
    return written


@flow(name="ingest", flow_run_name="ingest {config_path}")
def ingest(config_path: Path = DEFAULT_CONFIG) -> dict[str, dict[str, int]]:
    """Records written per source and stream."""
    config = load_config(Path(config_path))
    url = database_url(config.database_url)
    return {source.name: sync_source(source, url) for source in config.sources}
