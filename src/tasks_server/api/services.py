"""What a handler may use: settings, the store, the codec, the validation rules, the
metrics, and what the scheduler says of itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request

from tasks_server.codec import TaskCodec
from tasks_server.config import Settings
from tasks_server.metrics import Metrics
from tasks_server.model.canonical import ValidationRules
from tasks_server.store.base import Store


@dataclass(frozen=True)
class Services:
    settings: Settings
    store: Store
    codec: TaskCodec
    rules: ValidationRules  # what registrations and edits may ask of this server
    metrics: Metrics  # also the observer the scheduler and the store report to
    scheduler_running: Callable[[], bool]
    in_flight: Callable[[], int]  # this process's attempts on the wire

    @property
    def observer(self) -> Metrics:
        return self.metrics


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found
