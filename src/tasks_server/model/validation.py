"""Building typed structs from decoded JSON, naming every bad field by its path."""

from __future__ import annotations

import re
import types
import typing
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from tasks_server.model.spec import pattern_message

T = TypeVar("T", bound=msgspec.Struct)

_PATH_IN_MESSAGE = re.compile(
    r"^(?P<message>.*?)(?: - at (?P<key>`key` in )?`\$(?P<path>[^`]*)`)?$", re.DOTALL
)
_REGEX_IN_MESSAGE = re.compile(r"^Expected `str` matching regex '(?P<regex>.*)'$", re.DOTALL)


class ValidationFailed(Exception):
    """The input is invalid; `fields` maps each bad field's path to what is wrong."""

    def __init__(self, fields: dict[str, str], message: str | None = None) -> None:
        message = message or _summary(fields)
        super().__init__(message)
        self.fields = fields
        self.message = message


def _summary(fields: dict[str, str]) -> str:
    """One bad field and what is wrong with it, or the names of the bad fields."""
    if len(fields) == 1:
        ((field, problem),) = fields.items()
        return f"{field}: {problem}"
    return "Invalid fields: " + ", ".join(fields) if fields else "Invalid request"


def convert(data: Any, kind: type[T], *, root: str = "") -> T:
    """Build `kind` from decoded JSON, or raise ValidationFailed with every bad field."""
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError:
        errors = collect_errors(data, kind, root)
        raise ValidationFailed(errors or {root or "body": "Invalid value"}) from None


def collect_errors(data: Any, kind: Any, path: str) -> dict[str, str]:
    """Every validation error of `data` against `kind`, keyed by dotted path.

    msgspec stops at the first error; this walks struct fields, list items and
    object entries one by one so a client fixing its request sees all problems
    at once, each at its own path (`config.resolve[0].port`, `metadata.a b`).
    """
    struct = _struct_of(kind)
    if struct is None or not isinstance(data, dict):
        return _value_errors(data, kind, path)
    errors: dict[str, str] = {}
    hints = typing.get_type_hints(struct, include_extras=True)
    fields = {f.encode_name: f for f in msgspec.structs.fields(struct)}
    for key in data:
        if key not in fields:
            errors[_join(path, str(key))] = "Unknown field"
    for name, field in fields.items():
        if name not in data:
            if field.required:
                errors[_join(path, name)] = "Required field is missing"
            continue
        errors.update(_value_errors(data[name], hints[field.name], _join(path, name)))
    return errors


def _value_errors(value: Any, annotation: Any, path: str) -> dict[str, str]:
    """Errors of one value, descending into the struct, list or object it holds."""
    errors = _convert_error(value, annotation, path)
    if not errors:
        return {}
    arm = _arm_for(annotation, value)
    if arm is None:
        return errors  # a scalar, or a container of the wrong kind: msgspec's word is enough
    base = _unannotated(arm)
    if _struct_of(base) is not None:
        return collect_errors(value, base, path) or errors
    found: dict[str, str] = {}
    if typing.get_origin(base) is list:
        (item,) = typing.get_args(base)
        for index, element in enumerate(value):
            found.update(_value_errors(element, item, f"{path}[{index}]"))
    else:
        key_kind, item = typing.get_args(base)
        for key, element in value.items():
            where = _join(path, str(key))
            for bad, message in _convert_error(key, key_kind, where).items():
                found[bad] = f"Invalid key: {message}"
            found.update(_value_errors(element, item, where))
    found.update(_length_errors(value, arm, path))
    return found or errors


def _arm_for(annotation: Any, value: Any) -> Any:
    """The one list, object or struct type of `annotation` that `value` could be, if any."""
    base = _unannotated(annotation)
    arms = typing.get_args(base) if _is_union(base) else (annotation,)
    matching = [arm for arm in arms if _holds(arm, value)]
    return matching[0] if len(matching) == 1 else None


def _holds(arm: Any, value: Any) -> bool:
    base = _unannotated(arm)
    if isinstance(value, dict):
        return _struct_of(base) is not None or typing.get_origin(base) is dict
    if isinstance(value, list):
        return typing.get_origin(base) is list
    return False


def _length_errors(value: Any, annotation: Any, path: str) -> dict[str, str]:
    """The container's own length limits (msgspec.Meta min_length / max_length)."""
    kind = "array" if isinstance(value, list) else "object"
    metas = typing.get_args(annotation)[1:] if typing.get_origin(annotation) is Annotated else ()
    for meta in metas:
        if not isinstance(meta, msgspec.Meta):
            continue
        if meta.min_length is not None and len(value) < meta.min_length:
            return {path: f"Expected `{kind}` of length >= {meta.min_length}"}
        if meta.max_length is not None and len(value) > meta.max_length:
            return {path: f"Expected `{kind}` of length <= {meta.max_length}"}
    return {}


def _convert_error(value: Any, annotation: Any, path: str) -> dict[str, str]:
    try:
        msgspec.convert(value, annotation)
    except msgspec.ValidationError as exc:
        match = _PATH_IN_MESSAGE.match(str(exc))
        assert match is not None  # the pattern matches any text
        # msgspec says `$.a[0]` relative to the value converted; prefix our own path
        full = (path + (match["path"] or "")).lstrip(".")
        if match["path"]:  # about a part of the value: its enum values and hints do not apply
            annotation, value = Any, None
        message = _friendly(match["message"], annotation, value)
        if match["key"]:
            message = f"Invalid key: {message}"
        return {full or "body": message}
    return {}


def _friendly(message: str, annotation: Any, value: Any) -> str:
    """msgspec's `message` about `value` in the words of its field: the values an enum
    takes, what a pattern expects (or the mistake the value makes)."""
    choices = _choices(annotation)
    # a wrong type is a wrong choice too when every choice is text (query values are typed)
    if choices and (
        message.startswith("Invalid enum value") or all(isinstance(c, str) for c in choices)
    ):
        return "Expected one of: " + ", ".join(_shown(choice) for choice in choices)
    regex = _REGEX_IN_MESSAGE.match(message)
    if regex is None:
        return message
    return pattern_message(regex["regex"].replace("\\\\", "\\"), value) or message


def _choices(annotation: Any) -> tuple[Any, ...]:
    """The values of a Literal (optional or not); () for any other type."""
    base = _strip_optional(annotation)
    return typing.get_args(base) if typing.get_origin(base) is Literal else ()


def _shown(choice: Any) -> str:
    return choice if isinstance(choice, str) and choice else msgspec.json.encode(choice).decode()


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _struct_of(kind: Any) -> type[msgspec.Struct] | None:
    inner = _strip_optional(kind)
    if isinstance(inner, type) and issubclass(inner, msgspec.Struct):
        return inner
    return None


def _unannotated(kind: Any) -> Any:
    while typing.get_origin(kind) is typing.Annotated:
        kind = typing.get_args(kind)[0]
    return kind


def _strip_optional(kind: Any) -> Any:
    base = _unannotated(kind)
    args = typing.get_args(base)
    if args and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return _unannotated(rest[0])
    return base


def _is_union(kind: Any) -> bool:
    return typing.get_origin(kind) in (typing.Union, types.UnionType)
