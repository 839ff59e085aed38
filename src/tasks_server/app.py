"""The application, wired in one place: the store, the scheduler and its sender, the
backup schedule, the routes, the middleware and the lifespan that runs them."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import msgspec
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from tasks_server.api.errors import EXCEPTION_HANDLERS
from tasks_server.api.middleware.security_headers import SecurityHeaders
from tasks_server.api.middleware.throttle import Throttle
from tasks_server.api.openapi import openapi_document
from tasks_server.api.routes import ROUTES, unthrottled_prefixes
from tasks_server.api.services import Services
from tasks_server.backup.schedule import BackupSchedule
from tasks_server.codec import TaskCodec
from tasks_server.config import Settings
from tasks_server.crypto import Cipher, load_or_create_secret
from tasks_server.dispatch import capabilities
from tasks_server.dispatch.policy import TargetPolicy
from tasks_server.dispatch.sender import CurlSender
from tasks_server.model.canonical import ValidationRules
from tasks_server.retention import Retention
from tasks_server.scheduler import Scheduler
from tasks_server.store import open_store

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> Starlette:
    """The ASGI app; its lifespan opens the database and runs the scheduler."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = open_store(settings)
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
        )
        backups = BackupSchedule(settings, store, scheduler.instance_id)  # bad settings raise
        retention = Retention(store, settings.task_retention_days)
        await scheduler.start()
        await backups.start()
        await retention.start()
        rules = ValidationRules(
            allow_file_paths=settings.allow_file_paths,
            http3=capabilities.HTTP3,
            ntlm=capabilities.NTLM,
        )
        app.state.services = Services(settings, store, codec, rules)
        log.info(
            "Tasks Server listening on %s://%s:%d (pid %d, instance %s, database %s)",
            "https" if settings.tls else "http",
            settings.host,
            settings.port,
            os.getpid(),
            scheduler.instance_id,
            settings.database_label,
        )
        try:
            yield
        finally:
            await retention.stop()
            await backups.stop()
            await scheduler.stop()
            sender.close()
            await store.close()
            log.info("Stopped instance %s", scheduler.instance_id)

    middleware = [Middleware(SecurityHeaders)]
    if settings.throttled:
        middleware.append(
            Middleware(
                Throttle,
                limit=settings.max_throttle_request,
                window_ms=settings.max_throttle_time_window,
                trust_proxy_headers=settings.trust_proxy_headers,
                exempt=unthrottled_prefixes(),
            )
        )
    app = Starlette(
        routes=[Route(route.path, route.handler, methods=[route.method]) for route in ROUTES],
        middleware=middleware,
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.openapi = msgspec.json.encode(openapi_document(settings))
    return app
