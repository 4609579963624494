"""Report outputs: the HTML and Markdown files, the PDF printed by headless Chromium, the
`report` rows that record them, and the index page linking them."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pandas as pd
from sqlalchemy.engine import Engine

from tasks import store
from tasks.labels import labels
from tasks.render import Rendered, generated_at, render

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def write_report(rendered: Rendered, out_dir: Path) -> Path:
    """`out_dir/<name>.html` and `.md` written; returns the HTML's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{rendered.name}.html"
    path.write_text(rendered.html, encoding="utf-8")
    path.with_suffix(".md").write_text(rendered.markdown, encoding="utf-8")
    return path


def record_report(engine: Engine, kind: str, path: Path) -> None:
    """The report's row in the `report` table, created or refreshed."""
    row = {"kind": kind, "path": str(path), "created_at": store.now_utc()}
    store.save_rows(engine, store.Report, pd.DataFrame([row]), ("kind", "path"))


def print_pdf(html_path: Path, chromium: str = "chromium", timeout: float = 120) -> Path:
    """A PDF next to `html_path`, printed by headless Chromium; raises if Chromium fails.

    Page size, running header and page numbers come from the report's CSS `@page` rule and
    its margin boxes, so Chromium's own header and footer (date, file URL) are switched off.
    """
    pdf = html_path.with_suffix(".pdf")
    with tempfile.TemporaryDirectory(prefix="cxloop-chromium-") as profile:
        subprocess.run(
            [
                shutil.which(chromium) or chromium,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "--no-pdf-header-footer",
                f"--print-to-pdf={pdf}",
                html_path.resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
    return pdf


def write_index(
    engine: Engine, out_dir: Path, language: str = "en", template_dir: Path | None = None
) -> Path:
    """`out_dir/index.html` linking every recorded report still on disk, newest first."""
    out_dir.mkdir(parents=True, exist_ok=True)
    reports = store.read_frame(engine, store.Report)
    reports = reports[reports["kind"] != "index"].sort_values("created_at", ascending=False)
    entries = []
    for row in reports.itertuples():
        path = Path(row.path)
        if path.exists():
            pdf = path.with_suffix(".pdf")
            entries.append(
                {
                    "kind": row.kind,
                    "name": path.stem,
                    "href": path.name,
                    "pdf": pdf.name if pdf.exists() else None,
                    "created_at": row.created_at,
                }
            )
    t = labels(language, template_dir)
    index = out_dir / "index.html"
    context = {
        "t": t,
        "title": t["index"],
        "entries": entries,
        "generated_at": generated_at(),
        "email": False,
    }
    index.write_text(render("index.html.j2", context, template_dir), encoding="utf-8")
    record_report(engine, "index", index)
    return index
