"""The contract every HTTP vendor's connector keeps, run against each vendor's fake on loopback:
a full sync stores exactly the vendor's records through paging; a custom customer property mapped
to a declared dimension lands in the customer's attributes; bursts of 429 and of 5xx are
retried with backoff and still land every record; 5xx that outlasts the retries and a page cut
short name the source, stream and page and keep the pages before; the secret never reaches logs
(httpx's included) or errors, even when the vendor echoes it or refuses it; a sync killed
mid-pass resumes with no gap and no duplicate. Jivo has no pull API (webhooks only)."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from sqlalchemy.engine import Engine
from werkzeug import Response

from connectors.errors import SourceError
from tasks import store
from tests.contract import (
    FAST,
    NAME,
    CustomProperty,
    SecondPage,
    VendorCase,
    assert_store_equals_source,
    crash_mid_sync,
    error_fault,
    pages_of_first_stream,
    requests_to,
    running,
    served,
    stored_dimension,
    stored_ids,
)
from tests.fakes.amocrm import FakeAmoCrm
from tests.fakes.bitrix24 import FakeBitrix24
from tests.fakes.ga4 import FakeGA4, google_error
from tests.fakes.hubspot import FakeHubSpot
from tests.fakes.loopback import Fault, kill_mid_sync
from tests.fakes.matomo import FakeMatomo, matomo_error
from tests.fakes.omnidesk import FakeOmnidesk
from tests.fakes.qualtrics import FakeQualtrics, choice, nps, text_entry
from tests.fakes.qualtrics import answer as qualtrics_answer
from tests.fakes.salesforce import FakeSalesforce
from tests.fakes.surveymonkey import FakeSurveyMonkey, nps_question, open_question, rating_question
from tests.fakes.surveymonkey import error as surveymonkey_error
from tests.fakes.typeform import FakeTypeform
from tests.fakes.typeform import answer as typeform_answer
from tests.fakes.typeform import error as typeform_error
from tests.fakes.usedesk import FakeUsedesk
from tests.fakes.yandex_metrica import FakeMetrica, metrica_error

TODAY = date.today()
START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
CSAT = ["Very dissatisfied", "Dissatisfied", "Neutral", "Satisfied", "Very satisfied"]
Mp = pytest.MonkeyPatch


def env(monkeypatch: Mp, set_: dict[str, str], unset: tuple[str, ...] = ()) -> None:
    for variable, value in set_.items():
        monkeypatch.setenv(variable, value)
    for variable in unset:
        monkeypatch.delenv(variable, raising=False)


def refuse_with(variable: str, value: str) -> Any:
    """A `refuse` step setting `variable` to the refused `value`."""

    def refuse(monkeypatch: Mp, fake: Any) -> str:
        monkeypatch.setenv(variable, value)
        return value

    return refuse


def json_error(**fields: Any) -> Any:
    """An `error` step: a 400 whose JSON has `fields`, the one given as ... carrying the text."""

    def error(text: str) -> tuple[int, str]:
        return 400, json.dumps({k: text if v is ... else v for k, v in fields.items()})

    return error


def answer_of(response: Response) -> tuple[int, str]:
    """A fake's error `Response` as an `error` step's status and body."""
    return response.status_code, response.get_data(as_text=True)


def pairs(keys: list[str], kinds: tuple[str, ...] = ("nps", "csat")) -> set[str]:
    """Survey answer ids: a row per response and score kind."""
    return {f"{key}:{kind}" for key in keys for kind in kinds}


# --- HubSpot -----------------------------------------------------------------------------------
HUBSPOT_TOKEN = "pat-na1-0f3c2a7e-5b1d-4c9a-8e6f-1a2b3c4d5e6f"


def start_hubspot(monkeypatch: Mp, httpserver: HTTPServer) -> Any:
    env(monkeypatch, {"HUBSPOT_TOKEN": HUBSPOT_TOKEN})
    fake = FakeHubSpot(HUBSPOT_TOKEN, interval_ms=300)
    fake.seed(contacts=250, deals=120, tickets=230)
    return running(fake)


HUBSPOT = VendorCase(
    kind="hubspot",
    vendor="HubSpot",
    start=start_hubspot,
    options=lambda fake: {"base_url": fake.url, **FAST, "search_rate_limit": [1000, 1]},
    expected=lambda fake: {
        "customer": set(fake.objects["contacts"]),
        "orders": set(fake.objects["deals"]),
        "ticket": set(fake.objects["tickets"]),
    },
    second=SecondPage("/objects/contacts", 1, "stream contacts, page 2", "customer", 100),
    secrets=lambda fake: (HUBSPOT_TOKEN,),
    error=json_error(status="error", message=..., category="VALIDATION_ERROR"),
    refuse=refuse_with("HUBSPOT_TOKEN", "pat-na1-revoked"),
    fix="check HUBSPOT_TOKEN",
    custom=CustomProperty(
        "contacts",
        "cx_device",
        lambda fake: {
            k: r.properties["cx_device"]
            for k, r in fake.objects["contacts"].items()
            if r.properties.get("cx_device")
        },
    ),
)

# --- amoCRM ------------------------------------------------------------------------------------
AMO_TOKEN = "amo0long0lived0token0beef"
AMO_OAUTH = ("AMOCRM_CLIENT_ID", "AMOCRM_CLIENT_SECRET", "AMOCRM_REFRESH_TOKEN")


def start_amocrm(monkeypatch: Mp, httpserver: HTTPServer) -> Any:
    env(monkeypatch, {"AMOCRM_TOKEN": AMO_TOKEN}, AMO_OAUTH)
    fake = FakeAmoCrm(AMO_TOKEN, "integration-42", "amo0client0secret0cafe", "amo0refresh0feed")
    fake.seed(contacts=300, leads=200)
    return running(fake)


AMOCRM = VendorCase(
    kind="amocrm",
    vendor="amoCRM",
    start=start_amocrm,
    options=lambda fake: {"base_url": fake.url, **FAST, "page_size": 100},
    expected=lambda fake: {
        "customer": {str(k) for k in fake.records["contacts"]},
        "orders": fake.won(),
    },
    second=SecondPage("/api/v4/contacts", 1, "stream contacts, page 2", "customer", 100),
    secrets=lambda fake: (AMO_TOKEN,),
    error=json_error(title="Bad Request", status=400, detail=...),
    refuse=refuse_with("AMOCRM_TOKEN", "expired0token"),
    fix="check AMOCRM_TOKEN",
    # The seeded contacts' "Сегмент" select field has no field code, so it goes by its id.
    custom=CustomProperty(
        "contacts",
        "cf.777",
        lambda fake: {
            str(k): f["values"][0]["value"]
            for k, r in fake.records["contacts"].items()
            for f in r.get("custom_fields_values") or []
            if f["field_id"] == 777
        },
    ),
)

# --- Bitrix24 ----------------------------------------------------------------------------------
B24_CODE = "x7k2m9q4w8e1r5t3"


def start_bitrix24(monkeypatch: Mp, httpserver: HTTPServer) -> Any:
    fake = FakeBitrix24(B24_CODE, "a1b2c3d4e5f60000demo0000oauth0000token")
    fake.seed(contacts=260, deals=120, activities=240)
    env(monkeypatch, {"BITRIX24_WEBHOOK_URL": fake.webhook_url}, ("BITRIX24_TOKEN",))
    return running(fake)


def refuse_bitrix24(monkeypatch: Mp, fake: FakeBitrix24) -> str:
    monkeypatch.setenv("BITRIX24_WEBHOOK_URL", f"{fake.url}/rest/1/revoked0code/")
    return "revoked0code"


BITRIX24 = VendorCase(
    kind="bitrix24",
    vendor="Bitrix24",
    start=start_bitrix24,
    options=lambda fake: {**FAST, "batch_pages": 1},
    expected=lambda fake: {
        "customer": set(fake.records["contacts"]),
        "orders": set(fake.records["deals"]),
        "ticket": set(fake.tickets()),
    },
    second=SecondPage("crm.contact.list", 1, "stream contacts, page 2", "customer", 50),
    secrets=lambda fake: (B24_CODE,),
    error=json_error(error="WRONG_REQUEST", error_description=...),
    refuse=refuse_bitrix24,
    fix="check BITRIX24_WEBHOOK_URL",
    # `UF_*` fields come only when named in `select`.
    custom=CustomProperty(
        "contacts",
        "UF_CRM_SEGMENT",
        lambda fake: {k: r["UF_CRM_SEGMENT"] for k, r in fake.records["contacts"].items()},
    ),
)

# --- Salesforce --------------------------------------------------------------------------------
SF_TOKEN = "00D5g000004XyZ1!AQ0AQFakeSessionTokenValue0123456789abcdef"
SF_OAUTH = ("SALESFORCE_CLIENT_ID", "SALESFORCE_CLIENT_SECRET", "SALESFORCE_REFRESH_TOKEN")


def start_salesforce(monkeypatch: Mp, httpserver: HTTPServer) -> Any:
    fake = FakeSalesforce(SF_TOKEN, batch_size=100)
    fake.seed(contacts=250, cases=230, opportunities=120)
    env(monkeypatch, {"SALESFORCE_TOKEN": SF_TOKEN, "SALESFORCE_INSTANCE_URL": fake.url}, SF_OAUTH)
    return running(fake)


def live(fake: FakeSalesforce, sobject: str) -> set[str]:
    """Ids of the org's records of `sobject` that are not in the Recycle Bin."""
    return {k for k, r in fake.records[sobject].items() if not r.get("IsDeleted")}


SALESFORCE = VendorCase(
    kind="salesforce",
    vendor="Salesforce",
    start=start_salesforce,
    options=lambda fake: dict(FAST),
    expected=lambda fake: {
        "customer": live(fake, "Contact"),
        "ticket": live(fake, "Case"),
        "orders": live(fake, "Opportunity"),
    },
    # The first page is `/query?q=…`, the next ones `/query/<locator>`.
    second=SecondPage("/services/data/v62.0/query/", 0, "stream contacts, page 2", "customer", 100),
    secrets=lambda fake: (SF_TOKEN,),
    error=lambda text: (400, json.dumps([{"message": text, "errorCode": "INVALID_HEADER_TYPE"}])),
    refuse=refuse_with("SALESFORCE_TOKEN", "00D5g000004XyZ1!expired"),
    fix="check SALESFORCE_TOKEN",
    custom=CustomProperty(
        "contacts",
        "Device__c",
        lambda fake: {
            k: r["Device__c"] for k, r in fake.records["Contact"].items() if r.get("Device__c")
        },
    ),
)

# --- Omnidesk ----------------------------------------------------------------------------------
OD_EMAIL, OD_KEY = "support-lead@shop.ru", "od0staff0api0key0c0ffee"


def start_omnidesk(monkeypatch: Mp, httpserver: HTTPServer) -> Any:
    env(monkeypatch, {"OMNIDESK_API_KEY": OD_KEY})
    fake = FakeOmnidesk(OD_EMAIL, OD_KEY)
    fake.seed(users=20, cases=150)
    return running(fake)


OMNIDESK = VendorCase(
    kind="omnidesk",
    vendor="Omnidesk",
    start=start_omnidesk,
    options=lambda fake: {"base_url": fake.url, "staff_email": OD_EMAIL, **FAST},
    expected=lambda fake: {
        "ticket": {str(k) for k in fake.cases},
        "survey_response": {f"{k}:csat" for k, case in fake.cases.items() if case["rating"]},
        "customer": {str(k) for k in fake.users},
    },
    second=SecondPage("/api/cases.json", 1, "stream cases, page 2", "ticket", 100),
    secrets=lambda fake: (OD_KEY, base64.b64encode(f"{OD_EMAIL}:{OD_KEY}".encode()).decode()),
    error=json_error(error="Bad request", description=...),
    refuse=refuse_with("OMNIDESK_API_KEY", "revoked0key"),
    fix="OMNIDESK_API_KEY",
)

# --- Usedesk -----------------------------------------------------------------------------------
UD_TOKEN = "ud0api0channel0token0f00d"


def start_usedesk(monkeypatch: Mp, httpserver: HTTPServer) -> Any:
    env(monkeypatch, {"USEDESK_API_TOKEN": UD_TOKEN})
    fake = FakeUsedesk(UD_TOKEN)
    fake.seed(clients=30, tickets=150)
    return running(fake)


USEDESK = VendorCase(
    kind="usedesk",
    vendor="Usedesk",
    start=start_usedesk,
    options=lambda fake: {"base_url": fake.url, **FAST},
    expected=lambda fake: {
        "ticket": {str(k) for k in fake.tickets},
        "customer": {str(k) for k in fake.clients},
    },
    second=SecondPage("/tickets", 1, "stream tickets, page 2", "ticket", 100),
    secrets=lambda fake: (UD_TOKEN,),
    error=json_error(error=...),
    refuse=refuse_with("USEDESK_API_TOKEN", "revoked0token"),
    fix="check USEDESK_API_TOKEN",
)

# --- GA4 ---------------------------------------------------------------------------------------
GA4_TOKEN, GA4_PROPERTY = "ya29.a0AfB_fake-ga4-access-token", "123456789"
GA4_FIRST = TODAY - timedelta(days=4)


def start_ga4(monkeypatch: Mp, httpserver: HTTPServer) -> Any:
    env(monkeypatch, {"GA4_TOKEN": GA4_TOKEN}, ("GA4_CLIENT_ID", "GA4_CLIENT_SECRET"))
    fake = FakeGA4(GA4_TOKEN, GA4_PROPERTY)
    fake.seed(GA4_FIRST, 5)
    return served(fake)(httpserver)


GA4 = VendorCase(
    kind="ga4",
    vendor="GA4",
    start=start_ga4,
    options=lambda fake: {
        "base_url": fake.url,
        "token_url": f"{fake.url}/token",
        "property_id": GA4_PROPERTY,
        "start_date": GA4_FIRST.isoformat(),
        "segment_dimension": "newVsReturning",
        "page_size": 10,
        **FAST,
    },
    # Per cell (day × device × channel × segment): 2 traffic metrics, 4 funnel events.
    expected=lambda fake: {"web_metric": len(fake.cells) * (2 + 4)},
    second=SecondPage(":runReport", 1, "stream traffic, page 2", "web_metric", 10 * 2),
    secrets=lambda fake: (GA4_TOKEN,),
    error=lambda text: answer_of(google_error(400, "INVALID_ARGUMENT", text)),
    refuse=refuse_with("GA4_TOKEN", "ya29.expired"),
    fix="check GA4_TOKEN",
)

# --- Yandex Metrica ----------------------------------------------------------------------------
YM_TOKEN, YM_COUNTER, YM_GOAL = "y0_AgAAAAfakeMetricaOAuthToken", "44147844", "271828"
YM_FIRST = TODAY - timedelta(days=3)


def start_metrica(monkeypatch: Mp, httpserver: HTTPServer) -> Any:
    env(monkeypatch, {"YANDEX_METRICA_TOKEN": YM_TOKEN})
    fake = FakeMetrica(YM_TOKEN, YM_COUNTER, YM_GOAL)
    fake.seed(YM_FIRST, 4)
    return served(fake)(httpserver)


METRICA = VendorCase(
    kind="yandex_metrica",
    vendor="Yandex Metrica",
    start=start_metrica,
    options=lambda fake: {
        "base_url": fake.url,
        "counter": YM_COUNTER,
        "start_date": YM_FIRST.isoformat(),
        "goals": {YM_GOAL: "purchase"},
        "page_size": 4,
        **FAST,
    },
    # Per cell (day × device × traffic source): visits, users, goal reaches; a day's sample.
    expected=lambda fake: {"web_metric": len(fake.cells) * 3 + len({d for d, *_ in fake.cells})},
    second=SecondPage("/stat/v1/data", 1, "stream traffic, page 2", "web_metric", 4 * 3 + 1),
    secrets=lambda fake: (YM_TOKEN,),
    error=lambda text: answer_of(metrica_error(400, "invalid_parameter", text)),
    refuse=refuse_with("YANDEX_METRICA_TOKEN", "y0_revoked"),
    fix="check YANDEX_METRICA_TOKEN",
)

# --- Matomo ------------------------------------------------------------------------------------
MATOMO_TOKEN, MATOMO_SITE = "3f9a1c0e5b7d2e4f6a8c0b1d3e5f7a9c", "7"
MATOMO_FIRST = TODAY - timedelta(days=6)


def start_matomo(monkeypatch: Mp, httpserver: HTTPServer) -> Any:
    env(monkeypatch, {"MATOMO_TOKEN": MATOMO_TOKEN})
    fake = FakeMatomo(MATOMO_TOKEN, MATOMO_SITE)
    fake.seed(MATOMO_FIRST, 7, empty=[2])
    return served(fake)(httpserver)


MATOMO = VendorCase(
    kind="matomo",
    vendor="Matomo",
    start=start_matomo,
    options=lambda fake: {
        "base_url": fake.url,
        "site_id": MATOMO_SITE,
        "start_date": MATOMO_FIRST.isoformat(),
        "goals": {"4": "purchase"},
        "days_per_request": 2,
        **FAST,
    },
    # Per day with visits: 5 visit metrics and 4 of the goal's.
    expected=lambda fake: {"web_metric": sum(bool(v) for v in fake.visits.values()) * (5 + 4)},
    second=SecondPage("/index.php", 1, "stream visits, page 2", "web_metric", 2 * 5),
    secrets=lambda fake: (MATOMO_TOKEN,),
    # Matomo answers its errors with HTTP 200.
    error=lambda text: answer_of(matomo_error(text)),
    refuse=refuse_with("MATOMO_TOKEN", "anonymous-but-wrong-0042"),
    fix="check MATOMO_TOKEN",
)

# --- Typeform ----------------------------------------------------------------------------------
TF_TOKEN, TF_FORM = "tfp_9f8e7d6c5b4a39281706f5e4d3c2b1a0", "aBcD12"


def start_typeform(monkeypatch: Mp, httpserver: HTTPServer) -> Any:
    env(monkeypatch, {"TYPEFORM_TOKEN": TF_TOKEN})
    fake = FakeTypeform(TF_TOKEN)
    for i in range(35):
        fake.add(
            TF_FORM,
            START + timedelta(minutes=i),
            [
                typeform_answer("nps_q", "number", i % 11, "nps"),
                typeform_answer("csat_q", "number", i % 5 + 1),
                typeform_answer("why", "text", f"comment {i}", "long_text"),
            ],
        )
    return served(fake)(httpserver)


TYPEFORM = VendorCase(
    kind="typeform",
    vendor="Typeform",
    start=start_typeform,
    options=lambda fake: {
        "base_url": fake.url,
        "forms": [{"id": TF_FORM, "survey": "post-purchase"}],
        "questions": {"nps": "nps_q", "csat": "csat_q", "comment": "why", "csat_scale": 5},
        "page_size": 10,
        **FAST,
    },
    expected=lambda fake: {"survey_response": pairs([r["token"] for r in fake.forms[TF_FORM]])},
    second=SecondPage("/responses", 1, "stream post-purchase, page 2", "survey_response", 20),
    secrets=lambda fake: (TF_TOKEN,),
    error=lambda text: answer_of(typeform_error(400, "VALIDATION_ERROR", text)),
    refuse=refuse_with("TYPEFORM_TOKEN", "tfp_revoked_token"),
    fix="check TYPEFORM_TOKEN",
)

# --- SurveyMonkey ------------------------------------------------------------------------------
SM_TOKEN, SM_SURVEY = "sm_live_7c1d9e3b5a2f4e6d8c0b1a3f5e7d9c2b", "412345678"


def start_surveymonkey(monkeypatch: Mp, httpserver: HTTPServer) -> Any:
    env(monkeypatch, {"SURVEYMONKEY_TOKEN": SM_TOKEN})
    fake = FakeSurveyMonkey(SM_TOKEN)
    fake.survey(
        SM_SURVEY,
        "After delivery",
        [
            nps_question("901", "How likely are you to recommend us?"),
            rating_question("902", "How satisfied are you with the delivery?", CSAT),
            open_question("903", "What should we improve?"),
        ],
    )
    for i in range(35):
        fake.add(
            SM_SURVEY,
            START + timedelta(minutes=i),
            {"901": i % 11, "902": CSAT[i % 5], "903": f"comment {i}"},
        )
    return served(fake)(httpserver)


SURVEYMONKEY = VendorCase(
    kind="surveymonkey",
    vendor="SurveyMonkey",
    start=start_surveymonkey,
    options=lambda fake: {
        "base_url": fake.url,
        "surveys": [{"id": SM_SURVEY, "survey": "after-delivery"}],
        "questions": {"nps": "901", "csat": "902", "comment": "903"},
        "page_size": 10,
        **FAST,
    },
    expected=lambda fake: {"survey_response": pairs([r["id"] for r in fake.responses[SM_SURVEY]])},
    second=SecondPage("/responses/bulk", 1, "stream after-delivery, page 2", "survey_response", 20),
    secrets=lambda fake: (SM_TOKEN,),
    error=lambda text: answer_of(surveymonkey_error(400, "1001", "Bad Request", text)),
    refuse=refuse_with("SURVEYMONKEY_TOKEN", "sm_revoked_token_1234"),
    fix="check SURVEYMONKEY_TOKEN",
)

# --- Qualtrics ---------------------------------------------------------------------------------
QX_TOKEN, QX_SURVEY = "qx_8Zt3mK9pQ2vN7wL4rB6yH1cF5dJ0sAe", "SV_8dKx3vQz1Lm2Np4"


def start_qualtrics(monkeypatch: Mp, httpserver: HTTPServer) -> Any:
    env(monkeypatch, {"QUALTRICS_TOKEN": QX_TOKEN})
    fake = FakeQualtrics(QX_TOKEN)
    fake.survey(
        QX_SURVEY,
        "Post-purchase NPS",
        [
            nps("QID1", "How likely are you to recommend us?"),
            choice("QID2", "How satisfied are you with the order?", CSAT),
            text_entry("QID3", "What could we do better?"),
        ],
    )
    for i in range(25):
        fake.add(
            QX_SURVEY,
            START + timedelta(minutes=i),
            {"QID1": i % 11, "QID2": i % 5 + 1, "QID3_TEXT": f"comment {i}"},
        )
    return served(fake)(httpserver)


QUALTRICS = VendorCase(
    kind="qualtrics",
    vendor="Qualtrics",
    start=start_qualtrics,
    options=lambda fake: {
        "base_url": fake.url,
        "surveys": [{"id": QX_SURVEY, "survey": "post-purchase"}],
        "questions": {"nps": "QID1", "csat": "QID2", "comment": "QID3_TEXT"},
        "poll_interval": 0,
        "page_size": 10,
        **FAST,
    },
    expected=lambda fake: {
        "survey_response": pairs([r["responseId"] for r in fake.responses[QX_SURVEY]])
    },
    # The export's responses come in one file, paged locally: a cut file saves nothing.
    second=SecondPage("/file", 0, "stream post-purchase, export file", "survey_response", 0),
    secrets=lambda fake: (QX_TOKEN,),
    error=lambda text: answer_of(qualtrics_answer(status=400, error=("RCE_1.9", text))),
    refuse=refuse_with("QUALTRICS_TOKEN", "qx_revoked_token_0000"),
    fix="check QUALTRICS_TOKEN",
)

CASES = [
    AMOCRM,
    BITRIX24,
    GA4,
    HUBSPOT,
    MATOMO,
    OMNIDESK,
    QUALTRICS,
    SALESFORCE,
    SURVEYMONKEY,
    TYPEFORM,
    USEDESK,
    METRICA,
]

KILLABLE = [case for case in CASES if case.second.rows]
"""Vendors whose first stream commits pages over HTTP (Qualtrics pages one downloaded file)."""

CUSTOM = [case for case in CASES if case.custom]
"""Vendors whose fakes serve a custom property on their customer records."""
WITHOUT_CUSTOM = {
    "usedesk": "the fake's clients carry no custom field",
    "omnidesk": "the fake's users carry no custom field",
}
"""Vendors with a customer stream whose fakes serve no custom property yet, and why."""


@pytest.fixture(params=CASES, ids=lambda case: case.kind)
def case(request: pytest.FixtureRequest) -> VendorCase:
    return request.param


@pytest.fixture
def fake(case: VendorCase, monkeypatch: Mp, httpserver: HTTPServer) -> Iterator[Any]:
    with case.start(monkeypatch, httpserver) as started:
        yield started


@pytest.fixture
def other_store(tmp_path: Path) -> Engine:
    """A second SQLite store, for a clean run to compare with."""
    return store.open_store(f"sqlite:///{tmp_path / 'other.db'}")


def test_full_sync_stores_every_record_of_every_page_once(store_url, case, fake) -> None:
    engine = store.open_store(store_url)
    case.sync(engine, fake)

    assert_store_equals_source(engine, case, fake)
    assert len(list(case.source(fake).streams()[0].read({}))) >= 2  # it came in pages


def test_burst_of_429_is_retried_after_the_wait_the_vendor_asks_for(
    sqlite_url, case, fake, other_store, caplog
) -> None:
    case.sync(store.open_store(sqlite_url), fake)
    clean = requests_to(fake, case.second.path)
    fake.paths.clear()
    fake.fault(Fault(case.second.path, 429, headers={"Retry-After": "1"}))
    fake.fault(Fault(case.second.path, 429))  # right after, without Retry-After: backoff
    engine = other_store

    started = time.monotonic()
    case.sync(engine, fake)
    assert time.monotonic() - started >= 0.95  # backoff alone would be 0.01 s

    assert_store_equals_source(engine, case, fake)
    assert requests_to(fake, case.second.path) == clean + 2
    assert "HTTP 429" in caplog.text


def test_burst_of_500_and_503_is_retried_with_backoff(
    sqlite_url, case, fake, other_store, caplog
) -> None:
    case.sync(store.open_store(sqlite_url), fake)
    clean = requests_to(fake, case.second.path)
    fake.paths.clear()
    fake.fault(Fault(case.second.path, 500, skip=case.second.skip, times=2))
    fake.fault(Fault(case.second.path, 503, times=2))  # right after the 500s
    engine = other_store

    case.sync(engine, fake)

    assert_store_equals_source(engine, case, fake)
    assert requests_to(fake, case.second.path) == clean + 4
    assert "HTTP 500" in caplog.text and "HTTP 503" in caplog.text


def test_5xx_that_outlasts_the_retries_names_the_page_and_keeps_the_pages_before(
    sqlite_url, case, fake
) -> None:
    second = case.second
    fake.fault(error_fault(case, "backend is down", 503, skip=second.skip, times=99))
    engine = store.open_store(sqlite_url)
    with pytest.raises(SourceError) as caught:
        case.sync(engine, fake, max_retries=2)

    message = str(caught.value)
    assert f"source {NAME}, {second.where}" in message
    assert f"{case.vendor} failed after 3 attempts: HTTP 503" in message
    assert "backend is down" in message  # the vendor's own word on it
    assert len(stored_ids(engine, second.table)) == second.rows


def test_page_cut_short_saves_nothing_of_it_and_keeps_the_pages_before(
    store_url, case, fake
) -> None:
    second = case.second
    fake.fault(Fault(second.path, 200, '{"data": [{"id": "1", "na', skip=second.skip))
    engine = store.open_store(store_url)
    with pytest.raises(SourceError) as caught:
        case.sync(engine, fake)

    message = str(caught.value)
    assert f"source {NAME}, {second.where}" in message
    assert second.truncated in message and "nothing of it was saved" in message
    assert len(stored_ids(engine, second.table)) == second.rows


def test_crash_mid_pass_then_rerun_leaves_no_gap_and_no_duplicate(
    store_url, case, fake, other_store
) -> None:
    pages = pages_of_first_stream(other_store, case, fake)
    engine = store.open_store(store_url)
    stream = crash_mid_sync(engine, case, fake)
    assert store.read_cursor(engine, NAME, stream)  # where the next run starts

    assert pages_of_first_stream(engine, case, fake) == pages - 1  # not page 1 again
    assert_store_equals_source(engine, case, fake)


@pytest.mark.parametrize("case", KILLABLE, ids=lambda case: case.kind)
def test_sync_killed_mid_pass_resumes_with_no_gap_and_no_duplicate(
    sqlite_url, case, fake, other_store
) -> None:
    pages = pages_of_first_stream(other_store, case, fake)
    second = case.second
    fake.fault(Fault(second.path, None, delay=0.3, times=99))  # slow pages, to kill it between
    engine = store.open_store(sqlite_url)
    options = case.options(fake)
    committed = kill_mid_sync(engine, sqlite_url, case.kind, options, second.table, second.rows)
    assert committed >= second.rows
    fake.faults.clear()

    assert pages_of_first_stream(engine, case, fake) < pages  # resumed, not from the start
    assert_store_equals_source(engine, case, fake)


def test_secret_never_appears_in_logs_or_errors_even_when_echoed(
    sqlite_url, case, fake, caplog
) -> None:
    caplog.set_level(logging.DEBUG)  # httpx and httpcore log every request at DEBUG/INFO
    secrets = case.secrets(fake)
    fake.fault(Fault(case.second.path, 429, headers={"Retry-After": "0"}))
    fake.fault(Fault(case.second.path, 503))
    fake.fault(error_fault(case, f"bad credentials {' '.join(secrets)}"))
    source = case.source(fake)
    with pytest.raises(SourceError) as caught:
        case.sync(store.open_store(sqlite_url), fake)

    message = str(caught.value)
    assert "bad credentials ***" in message
    assert "HTTP 429" in caplog.text and "HTTP 503" in caplog.text
    assert "HTTP Request:" in caplog.text  # httpx's own log is captured too
    shown = [message, caplog.text, repr(source)]
    shown += [repr(vars(stream)) for stream in source.streams()]
    for text in shown:
        for secret in secrets:
            assert secret not in text


def test_refused_secret_names_the_fix_and_neither_secret(
    sqlite_url, case, fake, monkeypatch, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = case.secrets(fake)
    refused = case.refuse(monkeypatch, fake)
    with pytest.raises(SourceError) as caught:
        case.sync(store.open_store(sqlite_url), fake)

    message = str(caught.value)
    assert case.fix in message
    assert "HTTP Request:" in caplog.text
    for text in (message, caplog.text):
        for secret in (refused, *secrets):
            assert secret not in text


@pytest.mark.parametrize("case", CUSTOM, ids=lambda case: case.kind)
def test_custom_property_mapped_to_a_declared_dimension_lands_in_customer_attributes(
    store_url, case, fake
) -> None:
    custom = case.custom
    assert custom is not None
    expected = custom.values(fake)
    assert len(set(expected.values())) > 1  # a cut with something to tell apart
    engine = store.open_store(store_url)

    case.sync(engine, fake, field_map={custom.object: {custom.field: "device"}})

    assert stored_dimension(engine, "device") == expected
    assert_store_equals_source(engine, case, fake)  # the mapping left the rest as it was


def test_every_vendor_with_customers_maps_a_custom_property_or_says_why_not(case, fake) -> None:
    if "customer" in case.expected(fake):
        assert case.custom is not None or case.kind in WITHOUT_CUSTOM
    else:
        assert case.custom is None and case.kind not in WITHOUT_CUSTOM
