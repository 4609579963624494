"""The wheel carries what cxloop reads at run time besides code, so an installed cxloop (not
only a checkout) renders reports, tags topics, writes its example config and runs the demo."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import REPO

NEEDED = [
    "reports/templates/labels.yaml",
    "reports/templates/digest.html.j2",
    "reports/templates/experiment.md.j2",
    "hypotheses/auto-route-tickets.yaml",
    "hypotheses/chat-greeting-script.yaml",
    "tasks/lexicons/topics.yaml",
    "flows/cxloop.example.yaml",
]


def test_the_wheel_ships_templates_lexicons_and_the_demo_hypotheses(tmp_path: Path) -> None:
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    source = tmp_path / "source"
    for name in tracked:  # as a fresh clone has it: no reports/out, no .cxloop
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes((REPO / name).read_bytes())
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*build, "-w", str(tmp_path / "dist"), str(source)], check=True)
    (wheel,) = (tmp_path / "dist").glob("cxloop-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert [n for n in NEEDED if n not in names] == []
    assert not [n for n in names if n.startswith(("reports/out", "tests/", "benchmarks/"))]
