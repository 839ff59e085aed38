"""Editing a task: a JSON merge patch of its registration, validated as a whole."""

from __future__ import annotations

from typing import Any

import msgspec

from tasks_server.model.canonical import ValidationRules, canonical_task_spec
from tasks_server.model.lifecycle import Action, State, target_state
from tasks_server.model.records import TaskChange, TaskRow
from tasks_server.model.registration import execution_time, lease_ms, url_host
from tasks_server.model.sealing import TaskSealer
from tasks_server.model.spec import TaskSpec
from tasks_server.model.validation import ValidationFailed, convert

SCHEDULE_FIELDS = frozenset({"executeAt", "executionDelay"})
PATCH_KEYS = frozenset({"httpRequest", "config", "metadata"})


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge, null removes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def check_patch_shape(patch: Any) -> None:
    """A patch is a non-empty object of httpRequest, config and metadata; ValidationFailed."""
    if not isinstance(patch, dict) or not patch:
        raise ValidationFailed({"body": "Expected a non-empty object"})
    errors = {key: "Unknown field" for key in patch if key not in PATCH_KEYS}
    for key in ("httpRequest", "config"):
        if key in patch and not isinstance(patch[key], dict):
            errors[key] = "Expected an object"
    if errors:
        raise ValidationFailed(errors)


def edit(
    row: TaskRow,
    patch: dict[str, Any],
    now: int,
    sealer: TaskSealer,
    rules: ValidationRules,
) -> TaskChange:
    """What an edit changes on `row`: its payload and retry limit and, when the patch names
    executeAt or executionDelay, its schedule (counted from `now`).

    TransitionRefused when the task's state or an attempt in flight forbids an edit;
    ValidationFailed naming each bad field of the merged registration.
    """
    target_state(Action.EDIT, row.state, row.in_flight)
    stored = sealer.open_spec(row.id, row.payload)
    document = msgspec.to_builtins(stored)
    metadata = sealer.open_metadata(row.id, row.metadata)
    if metadata is not None:
        document["metadata"] = metadata
    config_patch = patch.get("config") or {}
    if "executionDelay" in config_patch and "executeAt" not in config_patch:
        # a new delay replaces the stored date (executeAt would otherwise win)
        document.get("config", {}).pop("executeAt", None)
    if stored.config.retry < 2 and "retry" in config_patch:
        # under 2 retries the stored form says false whatever was asked (it makes no
        # difference there): more retries take the default, as a registration would,
        # unless the edit names retryExponential itself
        document.get("config", {}).pop("retryExponential", None)
    merged = convert(merge_patch(document, patch), TaskSpec)
    reschedule = bool(SCHEDULE_FIELDS & set(config_patch))
    if reschedule:
        spec = canonical_task_spec(merged, now, rules=rules)
        execution_at = execution_time(spec.config, now)
        schedule = TaskChange(
            estimate_execution_at=execution_at,
            estimate_next_retry_at=0,
            retry_count=0,
            due_at=execution_at if row.state == State.RUNNING else None,
        )
    else:
        # the task keeps its place in time; only what it sends and how it retries change
        execution_at = row.estimate_execution_at
        spec = canonical_task_spec(merged, now, execution_at=execution_at, rules=rules)
        schedule = TaskChange()
    return msgspec.structs.replace(
        schedule,
        payload=sealer.seal_spec(row.id, spec),
        metadata=sealer.seal_metadata(row.id, spec.metadata),
        retry_limit=spec.config.retry,
        lease_ms=lease_ms(spec, execution_at),
        target_host=sealer.index_host(url_host(spec.http_request.url)),
    )
