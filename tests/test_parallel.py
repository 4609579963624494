"""Per-segment computations on a local Dask cluster give the same snapshots as threads."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from prefect_dask import DaskTaskRunner

from connectors.demo import DemoSource
from flows.config import example_text, load_config
from flows.rank import configured
from flows.sync import sync_source
from tasks import store


def _config(tmp_path: Path, name: str, workers: int) -> Path:
    config = yaml.safe_load(example_text())
    config["database_url"] = f"sqlite:///{tmp_path / name}.db"
    config["parallel"] = {"dask_workers": workers}
    config["hypotheses_dir"] = str(tmp_path / "none")
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    sync_source(
        store.open_store(store.database_url(config["database_url"])),
        DemoSource(customers=3_000, seed=5),
    )
    return path


@pytest.mark.prefect
def test_rank_on_a_local_dask_cluster_matches_the_threaded_run(tmp_path: Path) -> None:
    from prefect.testing.utilities import prefect_test_harness

    threads, dask = _config(tmp_path, "threads", 0), _config(tmp_path, "dask", 2)
    on_dask = configured(load_config(dask))
    assert isinstance(on_dask.task_runner, DaskTaskRunner)
    with prefect_test_harness(server_startup_timeout=180):
        ranked_threads = configured(load_config(threads))(threads)
        ranked_dask = on_dask(dask)
    assert [p["key"] for p in ranked_dask] == [p["key"] for p in ranked_threads]
    columns = ["period", "metric", "dims", "value", "n"]
    snapshots = [
        store.read_frame(
            store.open_store(f"sqlite:///{tmp_path / name}.db"), store.MetricSnapshot, columns
        ).sort_values(columns[:3], ignore_index=True)
        for name in ("threads", "dask")
    ]
    assert len(snapshots[0]) > 100
    assert snapshots[0].equals(snapshots[1])
