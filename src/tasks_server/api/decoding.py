"""Request bytes and query strings into values and typed structs, or 400s naming each field."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import msgspec

from tasks_server.model.validation import ValidationFailed, convert

T = TypeVar("T", bound=msgspec.Struct)

MAX_JSON_DEPTH = 32


def decode_json(raw: bytes) -> Any:
    """Parse JSON bytes, or raise ValidationFailed naming the body.

    Nesting is bounded (MAX_JSON_DEPTH) so that nothing that walks the value
    afterwards can run out of stack; no valid request comes close.
    """
    too_deep = ValidationFailed(
        {"body": f"Invalid JSON: nested deeper than {MAX_JSON_DEPTH} levels"}, "Invalid JSON body"
    )
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise ValidationFailed({"body": f"Invalid JSON: {exc}"}, "Invalid JSON body") from None
    except RecursionError:  # msgspec's own guard, at about 1000 levels
        raise too_deep from None
    if _depth_exceeds(value, MAX_JSON_DEPTH):
        raise too_deep
    return value


def _depth_exceeds(value: Any, limit: int) -> bool:
    """True when objects and arrays nest more than `limit` levels (walked without recursion)."""
    if not isinstance(value, dict | list):
        return False
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def parse_query(
    params: list[tuple[str, str]],
    kind: type[T],
    *,
    ignore: frozenset[str] = frozenset(),
    normalize: Mapping[str, Callable[[str], str]] | None = None,
) -> T:
    """Query parameters into `kind`: repeated keys refused, digits as integers."""
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    for key, value in params:
        if key in ignore:
            continue
        if key in values:
            errors[key] = "Repeated query parameter"
            continue
        if normalize and key in normalize:
            value = normalize[key](value)
        is_number = value.isascii() and value.isdigit() and len(value) <= 16
        values[key] = int(value) if is_number else value
    if errors:
        raise ValidationFailed(errors, "Invalid query parameters")
    return convert(values, kind)
