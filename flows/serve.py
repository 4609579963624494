"""Serve every deployment of `prefect.yaml` with its schedules from one process (`cxloop serve`).

For a single machine without a Prefect worker: the deployments are registered with the
Prefect API (ephemeral, or `PREFECT_API_URL`) and their scheduled runs execute as
subprocesses of this one, in the directory it was started in (where `cxloop.yaml` is).
When that configuration has a source that takes webhooks, the `cxloop listen` receiver runs
in this process too, beside the deployments, and stops with them.

SIGINT or SIGTERM stops it within 10 s at any point after the command starts (a `Shutdown`
is installed before Prefect loads): before any deployment is registered it exits at once;
after, the registered schedules are paused first, then no new runs start and runs in
flight are cancelled; exit code 0 either way. A clean stop that overruns `STOP_SECONDS`,
or a second signal, ends the process without finishing it: exit code 1. A signal while
Python is still loading the CLI has its default effect.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any
from uuid import UUID

import yaml

from connectors.errors import ConfigError

if TYPE_CHECKING:
    from prefect import Flow
    from prefect.deployments.runner import RunnerDeployment
    from prefect.runner import Runner

    from flows.listen import Listening

DEFAULT_PREFECT_YAML = Path("prefect.yaml")
STOP_SECONDS = 8.0  # a clean stop's budget: the process is gone within 10 s of the signal
POLL_SECONDS = 0.1


def deployments(prefect_yaml: Path = DEFAULT_PREFECT_YAML) -> list[RunnerDeployment]:
    """A served deployment per `deployments:` entry: its flow, name, parameters, cron
    schedules (with their time zones), tags, description and concurrency limit; `work_pool`
    is ignored."""
    if not prefect_yaml.exists():
        raise ConfigError(
            f"{prefect_yaml}: no such file; run in the project directory (`cxloop init` "
            "writes its prefect.yaml) or pass --prefect-yaml."
        )
    spec = yaml.safe_load(prefect_yaml.read_text(encoding="utf-8")) or {}
    if not spec.get("deployments"):
        raise ConfigError(f"{prefect_yaml}: no `deployments:` list to serve.")
    return [_deployment(prefect_yaml, entry) for entry in spec["deployments"]]


def _deployment(prefect_yaml: Path, entry: dict[str, Any]) -> RunnerDeployment:
    from prefect.client.schemas.objects import ConcurrencyLimitConfig
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    name = entry.get("name", "?")
    where = f"{prefect_yaml}: deployment {name!r}"
    flow = flow_of(entry.get("entrypoint", ""), where)
    schedules = []
    for schedule in entry.get("schedules") or []:
        if "cron" not in schedule:
            raise ConfigError(f"{where}: only cron schedules are served; got {schedule}.")
        schedules.append(
            Cron(
                schedule["cron"],
                timezone=schedule.get("timezone"),
                active=schedule.get("active", True),
            )
        )
    limit = entry.get("concurrency_limit")
    if isinstance(limit, dict):
        limit = ConcurrencyLimitConfig(**limit)
    # Module-path entrypoints load from the installed package, wherever this process runs.
    return flow.to_deployment(
        name=name,
        description=entry.get("description"),
        parameters=entry.get("parameters") or {},
        schedules=schedules,
        tags=entry.get("tags") or [],
        concurrency_limit=limit,
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def flow_of(entrypoint: str, where: str) -> Flow:
    """The flow object an entrypoint names: `flows/cycle.py:improvement_cycle` (a file in this
    checkout) or `flows.cycle.improvement_cycle` (a module, as `cxloop init` writes them)."""
    from prefect import Flow

    if ":" in entrypoint:
        path, _, function = entrypoint.partition(":")
        module = path.removesuffix(".py").replace("/", ".")
    else:
        module, _, function = entrypoint.rpartition(".")
    try:
        flow = getattr(import_module(module), function)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(
            f"{where}: entrypoint {entrypoint!r} names no importable flow; "
            "use `flows.cycle.improvement_cycle` (module) or `flows/cycle.py:improvement_cycle`."
        ) from None
    if not isinstance(flow, Flow):
        raise ConfigError(f"{where}: {entrypoint!r} is not a Prefect flow.")
    return flow


class Shutdown:
    """SIGINT and SIGTERM for `serve_all`, taken in the main thread from its creation on.

    A signal only sets `requested` and starts the watchdog that ends the process after
    `STOP_SECONDS`; the serving thread stops at its next safe point. Raising from the
    handler instead (Python's and Prefect's way) could land anywhere in Prefect's start-up
    or shutdown, and could be swallowed there.
    """

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.stopped = threading.Event()  # set once the schedules are paused and runs stopped
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, self._on_signal)

    def _on_signal(self, number: int, _frame: FrameType | None) -> None:
        if self.requested.is_set():
            _exit(1, f"{signal.Signals(number).name} again: stopped without a clean stop.")
        self.requested.set()
        watchdog = threading.Timer(STOP_SECONDS, self._overdue)
        watchdog.daemon = True
        watchdog.start()

    def _overdue(self) -> None:
        """End the process: the stop took too long, or only Prefect's exit hooks remain
        (stopping the ephemeral server waits up to 5 s)."""
        if self.stopped.is_set():
            _exit(0, "stopped; Prefect's exit hooks were cut short.")
        _exit(1, f"no clean stop within {STOP_SECONDS:g} s: stopped without it.")


@dataclass(frozen=True)
class Webhooks:
    """Where `serve_all` listens for the webhooks of `config_path`'s sources."""

    config_path: Path
    host: str = "127.0.0.1"
    port: int = 8088


@dataclass
class _Progress:
    """How far the serving thread got, read by the main thread once a signal came."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    registering: bool = False
    listening: Listening | None = None
    error: BaseException | None = None

    def stop_listening(self) -> None:
        """Stops the webhook listener, if one was started and is not stopped yet."""
        with self.lock:
            listening, self.listening = self.listening, None
        if listening is not None:
            listening.stop()


def serve_all(
    prefect_yaml: Path = DEFAULT_PREFECT_YAML,
    shutdown: Shutdown | None = None,
    webhooks: Webhooks | None = None,
) -> None:
    """Serve the deployments until SIGINT or SIGTERM, and the webhooks of
    `webhooks.config_path` when it has a source that takes them; returns once all stopped
    cleanly.

    Prefect loads and serves in a thread, so that this one only waits and takes the
    signals (pass a `Shutdown` made earlier to take them from then on). On shutdown the
    runner pauses the served schedules, so no runs pile up while nothing serves them; the
    next `serve_all` resumes them.
    """
    shutdown = shutdown or Shutdown()
    progress = _Progress()
    serving = threading.Thread(
        target=_serve,
        args=(prefect_yaml, webhooks, shutdown, progress),
        name="cxloop-serve",
        daemon=True,
    )
    serving.start()
    while serving.is_alive():
        if shutdown.requested.is_set():
            with progress.lock:
                registering = progress.registering
            if not registering:  # nothing registered, so nothing to pause
                progress.stop_listening()
                _exit(0, "stopped before serving anything.")
        serving.join(POLL_SECONDS)
    if progress.error is not None:
        raise progress.error
    shutdown.stopped.set()


def _serve(
    prefect_yaml: Path, webhooks: Webhooks | None, shutdown: Shutdown, progress: _Progress
) -> None:
    """In the serving thread: start listening for `webhooks`, register the deployments, then
    run them until `shutdown`; the listener stops last."""
    try:
        if webhooks is not None:
            from flows.listen import listen_beside

            listening = listen_beside(webhooks.config_path, webhooks.host, webhooks.port)
            with progress.lock:
                progress.listening = listening
        from prefect.runner import Runner

        served = deployments(prefect_yaml)
        runner = Runner(pause_on_shutdown=False)  # `_stop_when` pauses, before cancelling runs
        with progress.lock:
            if shutdown.requested.is_set():
                return
            progress.registering = True
        registered = []
        for deployment in served:
            registered.append(runner.add_deployment(deployment))
            if shutdown.requested.is_set():
                asyncio.run(_pause(registered))
                return
        names = ", ".join(d.name for d in served)
        print(f"Serving {len(served)} deployments ({names}); Ctrl-C or SIGTERM stops.")
        asyncio.run(_run(runner, registered, shutdown.requested))
    except BaseException as exc:  # handed to the main thread, which raises it
        progress.error = exc
    finally:
        progress.stop_listening()


async def _run(runner: Runner, registered: list[UUID], requested: threading.Event) -> None:
    """Run `runner` until `requested` (or until it stops by itself)."""
    import anyio

    async with anyio.create_task_group() as group:
        group.start_soon(_stop_when, runner, registered, requested)
        await runner.start()
        group.cancel_scope.cancel()


async def _stop_when(runner: Runner, registered: list[UUID], requested: threading.Event) -> None:
    """Once `requested`, pause the served schedules first (what must survive a stop cut
    short), then stop `runner` as Prefect's own stop does: it cancels the runs in flight."""
    import anyio

    while not requested.is_set():
        await anyio.sleep(POLL_SECONDS)
    await _pause(registered)
    while not runner.started:
        await anyio.sleep(POLL_SECONDS)
    await runner.astop()


async def _pause(deployments: list[UUID]) -> None:
    """Pause the schedules of `deployments`, so no runs pile up while nothing serves them."""
    from prefect import get_client

    async with get_client() as client:
        await asyncio.gather(*(client.pause_deployment(d) for d in deployments))
    if deployments:
        print(f"Paused the schedules of {len(deployments)} deployments.", flush=True)


def _exit(code: int, message: str) -> None:
    """End the process now with `code`, after saying why on stderr."""
    print(f"cxloop serve: {message}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(code)
