"""The dependency direction canonical → connectors → store → tasks → flows, as imports show it:
a vendor module loads no pandas or SQLAlchemy, and no layer imports one above it."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

HTTP_VENDORS = (
    "amocrm", "bitrix24", "ga4", "hubspot", "jivo", "matomo", "omnidesk", "qualtrics",
    "salesforce", "surveymonkey", "typeform", "usedesk", "yandex_metrica", "webhooks",
)  # fmt: skip
HEAVY = ("pandas", "sqlalchemy")
# A package's modules and the packages above it, which they must not import.
ABOVE = {"connectors": ("tasks", "flows"), "tasks": ("flows",)}


@pytest.mark.parametrize("vendor", HTTP_VENDORS)
def test_a_vendor_module_loads_neither_pandas_nor_sqlalchemy(vendor: str) -> None:
    script = (
        f"import json, sys; import connectors.{vendor}; "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [], f"import connectors.{vendor} loads {done.stdout}"


def imported(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function or `TYPE_CHECKING`."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def _upward(package: str) -> list[str]:
    return [
        f"{path.relative_to(REPO)} imports {name}"
        for path in sorted((REPO / package).rglob("*.py"))
        for name in sorted(imported(path))
        if name.split(".")[0] in ABOVE[package]
    ]


@pytest.mark.parametrize("package", sorted(ABOVE))
def test_no_module_imports_a_layer_above_its_own(package: str) -> None:
    assert _upward(package) == []


def test_the_scan_sees_imports_inside_functions_and_type_checking(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from flows.config import Config\n"
        "def f():\n    import tasks.store\n",
        encoding="utf-8",
    )
    assert {"flows.config", "tasks.store"} <= imported(module)
