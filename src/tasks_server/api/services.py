"""What a handler may use: settings, the store, the codec and the validation rules."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from tasks_server.codec import TaskCodec
from tasks_server.config import Settings
from tasks_server.model.canonical import ValidationRules
from tasks_server.store.base import Store


@dataclass(frozen=True)
class Services:
    settings: Settings
    store: Store
    codec: TaskCodec
    rules: ValidationRules  # what registrations and edits may ask of this server


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found
