"""The demo company written to Parquet once, and a source that reads those files back in pages.

Both cxloop's ingest and the baseline start from the same files, so neither is charged for
generating the company.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from connectors.base import BULK_PAGE_ROWS, Page
from connectors.demo import STREAM_TABLES, generate


def parse_scale(text: str) -> int:
    """Customers from `10k`, `1m` or `2500`."""
    text = text.strip().lower()
    factor = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text.rstrip("km")) * factor)


def label(customers: int) -> str:
    """`10k`, `1m`, `2500`: the scale as people write it."""
    if customers % 1_000_000 == 0:
        return f"{customers // 1_000_000}m"
    if customers % 1_000 == 0:
        return f"{customers // 1_000}k"
    return str(customers)


def write_company(customers: int, seed: int, directory: Path) -> dict[str, int]:
    """One `<stream>.parquet` per demo stream under `directory`; returns rows per stream.

    Files already there for the same company are reused (generation is not what we time).
    """
    directory.mkdir(parents=True, exist_ok=True)
    stamp = directory / "company.txt"
    if stamp.exists() and stamp.read_text() == f"{customers}:{seed}":
        return {name: pq.ParquetFile(directory / f"{name}.parquet").metadata.num_rows
                for name in STREAM_TABLES}  # fmt: skip
    company = generate(customers, seed)
    for name, frame in company.frames.items():
        frame.to_parquet(directory / f"{name}.parquet", index=False)
    stamp.write_text(f"{customers}:{seed}")
    return {name: len(frame) for name, frame in company.frames.items()}


@dataclass
class ParquetStream:
    """One demo stream read back from its Parquet file, paged like `DemoStream`."""

    path: Path
    name: str
    dataset: str

    @property
    def table(self) -> str:
        return STREAM_TABLES[self.name]

    def read(self, cursor: dict) -> Iterator[Page]:
        first = cursor.get("offset", 0) if cursor.get("dataset") == self.dataset else 0
        stop = 0
        batches = pq.ParquetFile(self.path).iter_batches(batch_size=BULK_PAGE_ROWS)
        for number, batch in enumerate(batches, 1):
            start, stop = stop, stop + batch.num_rows
            if stop > first:
                records = batch.to_pandas().iloc[max(first - start, 0) :]
                yield Page(records, {"dataset": self.dataset, "offset": stop}, number)


@dataclass
class ParquetSource:
    """The demo company's Parquet files as a cxloop source (same streams as `DemoSource`)."""

    directory: Path
    name: str = "demo"
    kind: str = field(default="parquet", init=False)

    def streams(self) -> list[ParquetStream]:
        dataset = (self.directory / "company.txt").read_text()
        return [
            ParquetStream(self.directory / f"{name}.parquet", name, dataset)
            for name in STREAM_TABLES
        ]
