"""Dates and times: the clock, and parsing of the date forms a task may carry."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

# Largest date JavaScript (and so the original) accepts: +/- 8.64e15 ms around the epoch.
MAX_EPOCH_MS = 8_640_000_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


def now_ms() -> int:
    """Wall-clock time in integer milliseconds since the Unix epoch (UTC)."""
    return time.time_ns() // 1_000_000


# The loose forms that JavaScript's Date() accepts and the original documents,
# e.g. "Dec 12 2012 12:12:12 AM +07:00" or "Mar 20 2025 7:04:09 PM".
_LOOSE_FORMATS = tuple(
    f"{month} %d{comma} %Y{clock}{zone}"
    for month in ("%b", "%B")
    for comma in ("", ",")
    for clock in (" %I:%M:%S %p", " %I:%M %p", " %H:%M:%S", " %H:%M", "")
    for zone in (" %z", "")
)
_WEEKDAY = re.compile(r"^(mon|tue|wed|thu|fri|sat|sun)[a-z]*,?\s+", re.IGNORECASE)
_ZONE_NAME = re.compile(r"\s*\([^)]*\)\s*$")
_GMT_OFFSET = re.compile(r"\s(?:GMT|UTC)(?=[+-]\d)", re.IGNORECASE)
_UTC_SUFFIX = re.compile(r"\s(?:GMT|UTC|Z)$", re.IGNORECASE)
_COLON_OFFSET = re.compile(r"([+-]\d{2}):(\d{2})$")
# "[Tue, ]01 Jan 2030 00:00[:00] [+0700|GMT|EST|...]": the zones email.utils knows
_RFC2822 = re.compile(
    r"^(?:[a-z]{3},?\s)?\d{1,2}\s[a-z]{3}\s\d{2,4}\s\d{1,2}:\d{2}(?::\d{2})?"
    r"(?:\s(?:[+-]\d{4}|UTC?|GMT|Z|[ECMPA][SD]T))?$",
    re.IGNORECASE,
)


def parse_date_ms(text: str) -> int | None:
    """Parse an ISO 8601, RFC 2822 or loose 'Mon DD YYYY hh:mm:ss AM +hh:mm' date.

    Returns ms since the epoch, or None when the text is not a date. A date
    without an offset is taken as UTC.
    """
    text = " ".join(text.split())
    if not text or text.lstrip("+-").isdigit():
        return None  # numeric strings are not dates (as in the original)
    for parse in (_parse_iso, _parse_loose, _parse_rfc2822):
        moment = parse(text)
        if moment is not None:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            # integer arithmetic: no float rounding of the milliseconds
            return (moment - _EPOCH) // _ONE_MS
    return None


def _parse_iso(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _parse_rfc2822(text: str) -> datetime | None:
    # "GMT+07:00 (Indochina Time)" and "+07:00" as JavaScript writes them: "+0700"
    text = _COLON_OFFSET.sub(r"\1\2", _GMT_OFFSET.sub(" ", _ZONE_NAME.sub("", text)))
    if not _RFC2822.match(text):
        return None  # the parser reads any unknown word as "no zone", i.e. UTC
    try:
        return parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        # OverflowError: an offset such as +9999999999 overflows the parser's integers
        return None


def _parse_loose(text: str) -> datetime | None:
    text = _WEEKDAY.sub("", _ZONE_NAME.sub("", text))
    text = _UTC_SUFFIX.sub(" +00:00", _GMT_OFFSET.sub(" ", text))
    for form in _LOOSE_FORMATS:
        try:
            return datetime.strptime(text, form)
        except ValueError:
            continue
    return None
