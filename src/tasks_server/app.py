"""The application, wired in one place: the store, the scheduler and its sender, the
backup schedule, the routes, the middleware and the lifespan that runs them."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import msgspec
from starlette.applications import Starlette
from starlette.middleware import Middleware

from tasks_server import __version__
from tasks_server.api.errors import EXCEPTION_HANDLERS
from tasks_server.api.middleware.security_headers import SecurityHeaders
from tasks_server.api.middleware.throttle import Throttle
from tasks_server.api.openapi import openapi_document
from tasks_server.api.routes import path_routes, unthrottled_prefixes
from tasks_server.api.services import Services
from tasks_server.backup.schedule import BackupSchedule
from tasks_server.codec import TaskCodec
from tasks_server.config import Settings
from tasks_server.crypto import Cipher, load_or_create_secret
from tasks_server.dashboard import routes as dashboard
from tasks_server.dispatch import capabilities
from tasks_server.dispatch.policy import TargetPolicy
from tasks_server.dispatch.sender import CurlSender
from tasks_server.logs import LIFECYCLE
from tasks_server.metrics import Metrics
from tasks_server.model.canonical import ValidationRules
from tasks_server.model.registration import url_host
from tasks_server.model.timing import now_ms
from tasks_server.retention import Retention
from tasks_server.scheduler import Scheduler
from tasks_server.store import open_store
from tasks_server.store.base import Store

log = logging.getLogger(__name__)
lifecycle = logging.getLogger(LIFECYCLE)


def create_app(settings: Settings) -> Starlette:
    """The ASGI app; its lifespan opens the database and runs the scheduler."""

    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = open_store(settings, metrics)
        await store.open()
        secret = load_or_create_secret(settings.cipher_key, settings.data_dir)
        codec = TaskCodec(Cipher(secret, settings.cipher_key_previous))
        sender = CurlSender(settings.max_size_data_response, TargetPolicy.from_settings(settings))
        scheduler = Scheduler(
            store,
            codec,
            sender,
            max_in_flight=settings.max_in_flight,
            stale_after_ms=settings.instance_stale_ms,
            shutdown_grace_ms=settings.shutdown_grace_ms,
            history=settings.attempt_history,
            observer=metrics,
        )
        backups = BackupSchedule(settings, store, scheduler.instance_id)  # bad settings raise
        retention = Retention(store, settings.task_retention_days)
        await scheduler.start()
        await backups.start()
        await retention.start()
        sampler = asyncio.create_task(sample_backlog(store, metrics), name="backlog-sampler")
        filler = asyncio.create_task(fill_target_hosts(store, codec), name="host-filler")
        rules = ValidationRules(
            allow_file_paths=settings.allow_file_paths,
            http3=capabilities.HTTP3,
            ntlm=capabilities.NTLM,
        )
        app.state.services = Services(
            settings,
            store,
            codec,
            rules,
            metrics,
            scheduler_running=lambda: scheduler.running,
            in_flight=lambda: scheduler.in_flight,
        )
        lifecycle.info(
            "Tasks Server %s listening on %s://%s:%d (pid %d, database %s)",
            __version__,
            "https" if settings.tls else "http",
            settings.host,
            settings.port,
            os.getpid(),
            settings.database_label,
            extra={"instance": scheduler.instance_id, "pid": os.getpid()},
        )
        try:
            yield
        finally:
            for helper in (sampler, filler):
                helper.cancel()
                with suppress(asyncio.CancelledError):
                    await helper
            await retention.stop()
            await backups.stop()
            await scheduler.stop()
            sender.close()
            await store.close()
            lifecycle.info(
                "Tasks Server stopped (pid %d)",
                os.getpid(),
                extra={"instance": scheduler.instance_id, "pid": os.getpid()},
            )

    middleware = [Middleware(SecurityHeaders)]
    if settings.throttled:
        middleware.append(
            Middleware(
                Throttle,
                limit=settings.max_throttle_request,
                window_ms=settings.max_throttle_time_window,
                trust_proxy_headers=settings.trust_proxy_headers,
                # the dashboard's page and assets; its API calls are throttled as any
                exempt=(*unthrottled_prefixes(), dashboard.PREFIX),
            )
        )
    app = Starlette(
        routes=[*path_routes(), *dashboard.ROUTES],
        middleware=middleware,
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.openapi = msgspec.json.encode(openapi_document(settings))
    return app


BACKLOG_SAMPLE_S = 10.0


async def sample_backlog(store: Store, metrics: Metrics) -> None:
    """The due backlog for the dashboard's chart, as the database says it, every 10 s."""
    while True:
        try:
            metrics.backlog_seen((await store.figures(now_ms())).due_backlog)
        except Exception as exc:  # the database is away for a moment: the next sample
            log.debug("Could not sample the backlog: %s", exc)
        await asyncio.sleep(BACKLOG_SAMPLE_S)


async def fill_target_hosts(store: Store, codec: TaskCodec) -> None:
    """Rows registered before lists could filter on the target's host get theirs, 500 at a
    time (only the server can open a payload); a row it cannot open keeps none."""

    def host_of(task_id: str, payload: bytes) -> str:
        try:
            return codec.index_host(url_host(codec.open_spec(task_id, payload).http_request.url))
        except Exception:
            return ""

    after: str | None = ""
    try:
        while after is not None:
            after = await store.fill_target_hosts(after, 500, host_of)
            await asyncio.sleep(0.05)  # let the other writes through
    except Exception as exc:  # the next start goes on from the beginning
        log.error("Could not fill in the target hosts of older tasks: %s", exc)
