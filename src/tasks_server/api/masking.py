"""The stored request as its owner may read it back: every field, secrets masked."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

import msgspec

from tasks_server.model.spec import Config, TaskSpec, is_file_path

MASK = "********"
# header (and query parameter) names whose values are credentials
_SECRET_HEADER = re.compile(
    r"authorization|cookie|token|secret|password|passwd|signature|api[-_]?key", re.I
)
# paths (dotted, * = every key or item) whose values are secrets
SECRET_PATHS = (
    "httpRequest.authBasic.password",
    "httpRequest.authDigest.password",
    "httpRequest.authNtlm.password",
    "httpRequest.authAwsSigv4.key",
    "httpRequest.authAwsSigv4.secret",
    "httpRequest.cookie",
    "config.locationTrusted.password",
    "config.cert.password",
    "config.key",
    "config.proxyAuthBasic.password",
    "config.proxyAuthDigest.password",
    "config.proxyAuthNtlm.password",
)
# records whose values are masked when their name looks like a credential
SECRET_HEADER_RECORDS = ("httpRequest.headers", "httpRequest.query", "config.proxyHeaders")


def full_view(value: Any) -> Any:
    """Builtins of a struct with every field, defaults included (storage omits them)."""
    if isinstance(value, msgspec.Struct):
        return {
            field.encode_name: full_view(getattr(value, field.name))
            for field in msgspec.structs.fields(value)
        }
    if isinstance(value, list):
        return [full_view(item) for item in value]
    if isinstance(value, dict):
        return {key: full_view(item) for key, item in value.items()}
    return value


def masked_view(spec: TaskSpec) -> dict[str, Any]:
    view: dict[str, Any] = full_view(msgspec.structs.replace(spec, metadata=None))
    view.pop("metadata")
    for path in SECRET_PATHS:
        _mask(view, path.split("."))
    if _cert_holds_private_key(spec.config):
        _mask(view, ["config", "cert", "value"])
    for path in SECRET_HEADER_RECORDS:
        *parents, leaf = path.split(".")
        record = _walk(view, parents).get(leaf)
        if record:
            for name in record:
                if _SECRET_HEADER.search(name):
                    record[name] = MASK
    return view


def _cert_holds_private_key(config: Config) -> bool:
    """A PKCS#12 bundle, or PEM content with a key in it, is a secret; a bare certificate is not."""
    cert = config.cert
    if cert is None or is_file_path(cert.value):
        return False
    if config.cert_type == "P12":
        return True
    try:
        content = base64.b64decode("".join(cert.value.split()))
    except (binascii.Error, ValueError):
        return True  # cannot tell: keep it hidden
    if b"PRIVATE KEY" in content:
        return True
    # binary that is not declared a DER certificate may be a PKCS#12 bundle: keep it hidden
    return not content.lstrip().startswith(b"-----") and config.cert_type != "DER"


def _walk(view: dict[str, Any], parts: list[str]) -> dict[str, Any]:
    for part in parts:
        view = view.get(part) or {}
    return view


def _mask(view: dict[str, Any], parts: list[str]) -> None:
    *parents, leaf = parts
    holder = _walk(view, parents)
    value = holder.get(leaf)
    if value is None:
        return
    if isinstance(value, list):  # a cookie array keeps its names
        holder[leaf] = [{**item, "value": MASK} for item in value]
    else:
        holder[leaf] = MASK
