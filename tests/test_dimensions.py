"""Declared customer dimensions: a field map may name one, the store keeps it per customer in
`attributes`, and it reads back as a column; anything else is refused at its line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd
import pytest

from connectors.errors import ConfigError
from connectors.files import FilesSource
from flows.config import load_config
from flows.sync import sync_source
from tasks import store

CLIENTS = "id;email;tier;Устройство;tariff\n1;a@x.ru;premium;mobile;pro\n2;b@x.ru;new;;basic\n"


def write_config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "cxloop.yaml"
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


FILES_SOURCE = textwrap.dedent("""\
    sources:
      - name: crm
        kind: files
        options:
          files:
            - name: clients
              path: clients.csv
              table: customer
              columns: {{id: source_id, email: email, tier: segment, Устройство: device,
                        tariff: {tariff}}}
    """)


def test_a_field_mapped_to_an_undeclared_dimension_is_refused_at_its_line(tmp_path: Path) -> None:
    path = write_config(tmp_path, FILES_SOURCE.format(tariff="plan") + "dimensions: [device]\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert f"{path}:10" in message
    assert "source crm: options.files.0.columns.tariff maps `tariff` to `plan`" in message
    assert "add `plan` to `dimensions:`" in message


def test_a_typo_of_a_canonical_column_is_named_with_the_column_meant(tmp_path: Path) -> None:
    body = """\
        dimensions: [device]
        sources:
          - name: hub
            kind: hubspot
            options:
              objects: [contacts]
              field_map: {contacts: {properties.tier: segmnt}}
        """
    expected = r"cxloop.yaml:7: source hub: .*maps `properties.tier` to `segmnt`.*did you mean"
    with pytest.raises(ConfigError, match=expected + r" `segment`"):
        load_config(write_config(tmp_path, body))


def test_a_web_column_is_no_customer_column_unless_declared(tmp_path: Path) -> None:
    body = """\
        sources:
          - name: hub
            kind: hubspot
            options:
              objects: [contacts]
              field_map: {contacts: {primary_device: device}}
          - name: web
            kind: ga4
            options:
              {property_id: "1", start_date: "2026-01-01", field_map: {deviceCategory: device}}
        """
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path, body))
    assert "cxloop.yaml:6: source hub: options.field_map.contacts.primary_device" in str(
        caught.value
    )
    assert "source web" not in str(caught.value)  # a web report's own `device` column
    load_config(write_config(tmp_path, body + "dimensions: [device]\n"))


@pytest.mark.parametrize(
    ("declared", "fault"),
    [
        ("[segment]", "already a column or cut"),
        ("[agent]", "already a column or cut"),
        ("[Device]", "lower-case letters"),
        ("[device, device]", "declared twice"),
    ],
)
def test_a_dimension_name_cxloop_already_uses_is_refused(
    tmp_path: Path, declared: str, fault: str
) -> None:
    path = write_config(tmp_path, FILES_SOURCE.format(tariff="plan") + f"dimensions: {declared}\n")
    with pytest.raises(ConfigError, match=fault):
        load_config(path)


def test_breakdowns_and_standards_may_cut_by_a_declared_dimension_only(tmp_path: Path) -> None:
    body = FILES_SOURCE.format(tariff="plan") + textwrap.dedent("""\
        dimensions: [device, plan]
        reports: {breakdowns: [segment, device]}
        standards:
          - {metric: nps, target: 40, where: {plan: pro}}
        """)
    config = load_config(write_config(tmp_path, body))
    assert config.reports.breakdowns == ["segment", "device"]
    wrong = body.replace("breakdowns: [segment, device]", "breakdowns: [segment, devise]")
    with pytest.raises(ConfigError, match=r"cxloop.yaml:12: .*devise.*device"):
        load_config(write_config(tmp_path, wrong))
    at_risk = body.replace("breakdowns: [segment, device]", "breakdowns: [churn_risk]")
    with pytest.raises(ConfigError, match="unknown dimension `churn_risk`"):
        load_config(write_config(tmp_path, at_risk))
    scored = load_config(write_config(tmp_path, at_risk + "churn: {enabled: true}\n"))
    assert scored.reports.breakdowns == ["churn_risk"]


def test_declared_dimensions_are_stored_per_customer_and_read_as_columns(
    store_url: str, tmp_path: Path
) -> None:
    (tmp_path / "clients.csv").write_text(CLIENTS, encoding="utf-8")
    path = write_config(
        tmp_path, FILES_SOURCE.format(tariff="plan") + "dimensions: [device, plan]\n"
    )
    config = load_config(path)
    options = dict(config.sources[0].options)
    options["files"] = [{**options["files"][0], "path": str(tmp_path / "clients.csv")}]
    engine = store.open_store(store_url)
    sync_source(engine, FilesSource(name="crm", **options))

    stored = store.read_frame(engine, store.Customer, ["source_id", "segment", "attributes"])
    by_id = stored.set_index("source_id")
    assert by_id.loc["1", "attributes"] == {"device": "mobile", "plan": "pro"}
    assert by_id.loc["2", "attributes"] == {"plan": "basic"}  # an empty cell is no value
    dimensions = store.read_dimensions(engine).set_index("customer_id").sort_index()
    expected = pd.DataFrame(
        {"device": ["mobile", None], "plan": ["pro", "basic"]},
        index=pd.Index(["1", "2"], name="customer_id"),
    )
    pd.testing.assert_frame_equal(dimensions[["device", "plan"]], expected)


def test_a_store_without_dimensions_reads_only_the_customer_ids(store_url: str) -> None:
    engine = store.open_store(store_url)
    rows = pd.DataFrame({"source_id": ["1"], "segment": ["new"]})
    store.load_page(engine, store.Customer, rows, "crm", "clients", {})
    assert list(store.read_dimensions(engine).columns) == ["customer_id"]
