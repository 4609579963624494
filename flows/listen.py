"""`cxloop listen`: vendors' webhooks into the store as they happen, and a detractor alert
within seconds of a bad answer after a contact. `cxloop serve` runs the same listener beside its
deployments when a source takes webhooks (`listen_beside`).

`POST /webhooks/<kind>/<source>` takes the webhooks of a configured source of that kind
(`typeform`, `usedesk`, `amocrm`, `jivo`; see `connectors.webhooks` for how each is
verified). A request that fails verification is refused with 401 and stored nowhere. A
verified one is written raw to the inbox (once per source and event id, so vendor retries
add nothing) and committed before the 200 goes back; mapping happens after, on a thread of
its own, so a slow or failing mapping never costs the vendor a timeout or the event.

The mapping thread maps each new event through the vendor's field maps and upserts its rows
like a pulled page, marking the event mapped in the same transaction. An event that fails
keeps its error in the inbox and is tried again at start-up and every `REMAP_SECONDS`, so
fixing the configuration and restarting `listen` maps what waited. Each newly stored
post-contact answer from a detractor is emitted as the Prefect event
`cxloop.alert.detractor`, with the ticket, its agent and the comment (PII redacted).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pandas as pd
import uvicorn
from prefect.events import emit_event
from sqlalchemy import case, select
from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from connectors.errors import ConfigError, CxloopError, SourceError
from connectors.webhooks import (
    Call,
    Mapped,
    Receiver,
    open_receiver,
    secret_env,
    signed,
    typeform_body,
)
from flows.config import DEFAULT_CONFIG, Config, load_config
from tasks import store
from tasks.mapping import to_canonical
from tasks.metrics import nps_points
from tasks.text import redact_pii

log = logging.getLogger(__name__)

ROUTE = "/webhooks/{kind}/{source}"
REMAP_SECONDS = 60.0
DETRACTOR = "cxloop.alert.detractor"
GRACE_SECONDS = 2  # for requests in flight when the listener stops; the store has the rest


@dataclass
class Listener:
    """The served sources' receivers, the store, and the thread that maps the inbox."""

    engine: Engine
    receivers: dict[str, Receiver]
    remap_seconds: float = REMAP_SECONDS
    _wake: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        """Starts mapping: every unmapped event at once, then new ones as they arrive."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="cxloop-inbox", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops mapping after the event in hand."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    def notify(self) -> None:
        """Says a new event is in the inbox."""
        self._wake.set()

    def _run(self) -> None:
        failed_too = True  # start-up and the periodic passes retry failed events as well
        while not self._stop.is_set():
            try:
                map_pending(self.engine, self.receivers, failed_too)
            except Exception:  # the store may be briefly away; the next pass tries again
                log.exception("mapping the webhook inbox failed; retrying later")
            woke = self._wake.wait(self.remap_seconds)
            self._wake.clear()  # before the next pass reads the inbox, so no event is missed
            failed_too = not woke


def open_listener(config_path: Path = DEFAULT_CONFIG) -> Listener:
    """The listener for `config_path`'s sources that take webhooks and have their secret set;
    `ConfigError` if none does. A source whose secret is missing is logged, not served."""
    config = load_config(config_path)
    receivers = webhook_receivers(config)
    if not receivers:
        raise ConfigError(
            f"{config_path}: no source takes webhooks; configure a typeform, usedesk, amocrm or "
            "jivo source and set its CXLOOP_WEBHOOK_SECRET_<SOURCE> variable."
        )
    return Listener(config.store(), receivers)


def webhook_receivers(config: Config) -> dict[str, Receiver]:
    """A receiver per source of `config` that takes webhooks and has its secret set, by name;
    a source whose secret is missing is logged and left out."""
    receivers: dict[str, Receiver] = {}
    for source in config.sources:
        try:
            receiver = open_receiver(source.name, source.kind, source.options)
        except ConfigError as exc:
            log.warning("not serving webhooks of %s: %s", source.name, exc)
            continue
        if receiver is not None:
            receivers[source.name] = receiver
    return receivers


def create_app(listener: Listener) -> Starlette:
    """The ASGI app: `POST ROUTE` per served source, `GET /health`; maps while it runs."""

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        listener.start()
        try:
            yield
        finally:
            await run_in_threadpool(listener.stop)

    async def receive(request: Request) -> JSONResponse:
        kind, source = request.path_params["kind"], request.path_params["source"]
        receiver = listener.receivers.get(source)
        if receiver is None or receiver.kind != kind:
            served = ", ".join(
                f"/webhooks/{r.kind}/{name}" for name, r in listener.receivers.items()
            )
            return JSONResponse({"error": f"no {kind} source {source} here; served: {served}"}, 404)
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        if not receiver.verified(Call(body, headers, dict(request.query_params))):
            log.warning(
                "refused a %s webhook for %s: signature or secret does not match", kind, source
            )
            return JSONResponse({"error": "signature or secret does not match"}, 401)
        payload = body.decode("utf-8", errors="replace")
        event = receiver.event_id(payload)
        await run_in_threadpool(store.receive_event, listener.engine, source, event, payload)
        listener.notify()
        return JSONResponse({"result": "ok"})  # what Jivo expects; the others read the status

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"sources": sorted(listener.receivers)})

    routes = [Route(ROUTE, receive, methods=["POST"]), Route("/health", health)]
    return Starlette(routes=routes, lifespan=lifespan)


def map_pending(engine: Engine, receivers: dict[str, Receiver], failed_too: bool) -> int:
    """Events mapped: each unmapped event of a served source (with `failed_too`, those that
    failed before as well) mapped, stored and marked in one transaction, then checked for
    detractors. One that fails is marked with its error and left for a later pass."""
    mapped = 0
    for event in store.pending_events(engine, failed_too).itertuples():
        receiver = receivers.get(event.source)
        if receiver is None:
            continue
        try:
            answers = save_mapped(engine, event.id, event.source, receiver.mapped(event.payload))
        except Exception as exc:  # any failure: the raw event stays, with why
            reason = str(exc) if isinstance(exc, CxloopError) else f"{type(exc).__name__}: {exc}"
            log.warning("webhook %s of %s not mapped: %s", event.event_id, event.source, reason)
            with engine.begin() as conn:
                store.settle_event(conn, event.id, reason)
            continue
        mapped += 1
        for alert in detractor_alerts(engine, event.source, answers):
            emit_event(**alert)
    return mapped


def save_mapped(engine: Engine, event: int, source: str, mapped: Mapped) -> pd.DataFrame:
    """The survey answers stored: `mapped`'s rows upserted on (source, source_id) as a pulled
    page's are, its deletions applied and inbox row `event` marked mapped, in one
    transaction."""
    answers = pd.DataFrame()
    with engine.begin() as conn:
        for table, rows in mapped.rows.items():
            if not rows:
                continue
            frame = to_canonical(table, rows, f"source {source}, webhook {event}")
            store.upsert(
                conn, store.INGESTED[table], frame.assign(source=source), ("source", "source_id")
            )
            if table == "survey_response":
                answers = frame
        for table, ids in mapped.deleted.items():
            gone = pd.DataFrame({"source": source, "source_id": ids}, dtype=object)
            store.delete(conn, store.INGESTED[table], gone)
        store.settle_event(conn, event)
    return answers


def detractors(answers: pd.DataFrame) -> pd.DataFrame:
    """The answers about a ticket (post-contact) from detractors: NPS 0–6 (`nps_points`) or
    CSAT in the bottom two boxes (1–2)."""
    if answers.empty or "ticket_id" not in answers:
        return answers.iloc[0:0]
    nps = (answers["kind"] == "nps") & (nps_points(answers["score"]) < 0)
    csat = (answers["kind"] == "csat") & (answers["score"] <= 2)
    return answers[(nps | csat) & answers["ticket_id"].notna()]


def detractor_alerts(engine: Engine, source: str, answers: pd.DataFrame) -> list[dict]:
    """`emit_event` arguments of a `cxloop.alert.detractor` event per detractor in `answers`:
    the ticket, its agent as the store has it (from any source; this one first), score and
    comment with e-mails and phone numbers redacted."""
    alerts = []
    for answer in detractors(answers).to_dict("records"):
        ticket, comment = str(answer["ticket_id"]), answer.get("comment")
        agent = ticket_agent(engine, source, ticket)
        payload = {
            "source": source,
            "answer": answer["source_id"],
            "survey": answer["survey"],
            "kind": answer["kind"],
            "score": float(answer["score"]),
            "ticket_id": ticket,
            "agent": agent,
            "customer_id": None
            if pd.isna(answer.get("customer_id"))
            else answer.get("customer_id"),
            "comment": redact_pii(comment) if isinstance(comment, str) else None,
            "submitted_at": str(answer["submitted_at"]),
        }
        payload["message"] = (
            f"Detractor after ticket {ticket}: {answer['kind']} {payload['score']:g}"
            + (f" (agent {agent})" if agent else "")
        )
        alerts.append(
            {
                "event": DETRACTOR,
                "resource": {"prefect.resource.id": f"{DETRACTOR}.{source}.{answer['source_id']}"},
                "payload": payload,
            }
        )
    return alerts


def ticket_agent(engine: Engine, source: str, ticket: str) -> str | None:
    """The agent of the stored ticket `ticket` (a `source_id`), source `source`'s first."""
    table = store.Ticket.__table__
    query = (
        select(table.c.agent)
        .where(table.c.source_id == ticket)
        .order_by(case((table.c.source == source, 0), else_=1))
        .limit(1)
    )
    with engine.connect() as conn:
        return conn.execute(query).scalar()


@dataclass
class Listening:
    """A listener's app served by uvicorn on a thread of this process."""

    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        """Stops answering (requests in flight get `GRACE_SECONDS`), then stops mapping."""
        self.server.should_exit = True
        self.thread.join()


def start_listening(listener: Listener, host: str = "127.0.0.1", port: int = 8088) -> Listening:
    """`listener` answering on `host:port`, once it does; says its URLs on stdout. The one way
    both `cxloop listen` and `cxloop serve` start it.

    The access log stays off: Jivo's and amoCRM's URLs carry their secret.
    """
    settings = uvicorn.Config(
        create_app(listener),
        host=host,
        port=port,
        access_log=False,
        log_level="info",
        timeout_graceful_shutdown=GRACE_SECONDS,
    )
    server = uvicorn.Server(settings)
    thread = threading.Thread(target=_run, args=(server,), name="cxloop-listen", daemon=True)
    thread.start()
    while not server.started and thread.is_alive():  # uvicorn ends the thread if it cannot bind
        thread.join(0.05)
    if not server.started:
        raise ConfigError(
            f"cannot listen for webhooks on {host}:{port} (see the error above); "
            "choose another port, or stop what holds it."
        )
    for name, receiver in listener.receivers.items():
        print(
            f"webhooks of {name}: POST http://{host}:{port}/webhooks/{receiver.kind}/{name}",
            flush=True,
        )
    return Listening(server, thread)


def _run(server: uvicorn.Server) -> None:
    """Runs `server` on this thread; a failed start (uvicorn exits) is left to the caller."""
    try:
        server.run()
    except SystemExit:  # uvicorn's way of saying it could not bind; `server.started` stays False
        return


def listen(config_path: Path = DEFAULT_CONFIG, host: str = "127.0.0.1", port: int = 8088) -> None:
    """Serves the webhooks of `config_path`'s sources on `host:port` until SIGINT or SIGTERM."""
    listening = start_listening(open_listener(config_path), host, port)
    stopping = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda _number, _frame: stopping.set())
    while not stopping.wait(1.0):  # timed: an untimed wait is not interrupted on Windows
        pass
    listening.stop()


def listen_beside(config_path: Path, host: str, port: int) -> Listening | None:
    """The webhook listener of `config_path` started as `start_listening` does, for a command
    that serves something else (`cxloop serve`); None, said on stdout, when `config_path`
    is missing or none of its sources takes webhooks."""
    if not config_path.exists():
        print(f"Not listening for webhooks: no {config_path} here.", flush=True)
        return None
    config = load_config(config_path)
    receivers = webhook_receivers(config)
    if not receivers:
        print(f"Not listening for webhooks: no source in {config_path} takes them.", flush=True)
        return None
    return start_listening(Listener(config.store(), receivers), host, port)


DEMO_FORMS = {"post_ticket_csat": "csat", "post_ticket_ces": "ces"}
"""The demo's post-contact surveys as Typeform forms: form id (also the survey) → the field
ref of its one score question. The listening source lists them under `forms`."""
DEMO_DAYS = 7


def demo_webhooks(customers: int = 20_000, seed: int = 7, days: int = DEMO_DAYS) -> list[dict]:
    """Typeform `form_response` bodies of the demo company's post-contact surveys answered in
    its last `days` days, oldest first; the hidden fields carry customer, ticket and channel."""
    from connectors.demo import generate

    answers = generate(customers, seed).frames["survey_responses"]
    answers = answers[answers["survey"].isin(list(DEMO_FORMS))]
    answers = answers[
        answers["submitted_at"] > answers["submitted_at"].max() - pd.Timedelta(days=days)
    ]
    answers = answers.sort_values("submitted_at")
    tickets = "T" + answers["source_id"].str.replace(r"^[A-Z]+", "", regex=True)
    return [
        typeform_body(
            f"demo-{row.source_id}",
            row.survey,
            row.source_id,
            row.submitted_at,
            {DEMO_FORMS[row.survey]: row.score},
            {"customer_id": row.customer_id, "ticket_id": ticket, "channel": row.channel},
        )
        for row, ticket in zip(answers.itertuples(), tickets, strict=True)
    ]


def send_demo_webhooks(url: str, customers: int = 20_000, seed: int = 7, rate: float = 50.0) -> int:
    """Calls sent: the demo's post-contact surveys of its last week, signed, to `url` (a
    listening Typeform source's URL), `rate` per second. The secret is the one `listen` checks:
    `CXLOOP_WEBHOOK_SECRET_<SOURCE>` for the URL's last segment."""
    source = url.rstrip("/").rsplit("/", 1)[-1]
    secret = os.environ.get(secret_env(source), "").strip()
    if not secret:
        raise ConfigError(
            f"set {secret_env(source)} to the secret `cxloop listen` checks for {source}."
        )
    bodies = demo_webhooks(customers, seed)
    return asyncio.run(_send(url, [signed(body, secret) for body in bodies], rate))


async def _send(url: str, calls: list[tuple[bytes, dict[str, str]]], rate: float) -> int:
    """Posts `calls` to `url` at `rate` per second; `SourceError` on the first refusal."""
    async with httpx.AsyncClient(timeout=30) as client:
        started = time.monotonic()
        for number, (raw, headers) in enumerate(calls):
            await asyncio.sleep(max(0.0, started + number / rate - time.monotonic()))
            response = await client.post(url, content=raw, headers=headers)
            if response.status_code != 200:
                raise SourceError(f"{url} answered {response.status_code}: {response.text[:200]}")
    return len(calls)
