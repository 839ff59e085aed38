"""tasks_server.model.timing: the clock and the date forms a task may carry."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone

import pytest

from tasks_server.model.timing import MAX_EPOCH_MS, now_ms, parse_date_ms


def ms(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def at(*parts: int, hours: int = 0, minutes: int = 0) -> int:
    return ms(datetime(*parts, tzinfo=timezone(timedelta(hours=hours, minutes=minutes))))


PARSED = [
    # ISO 8601
    ("2030-01-01T00:00:00Z", at(2030, 1, 1)),
    ("2030-01-01T00:00:00+00:00", at(2030, 1, 1)),
    ("2030-01-01T09:00:00+07:00", at(2030, 1, 1, 9, hours=7)),
    ("2030-01-01T00:00:00-05:30", at(2030, 1, 1, hours=-5, minutes=-30)),
    ("2030-06-15T12:34:56.789+02:00", at(2030, 6, 15, 12, 34, 56, 789000, hours=2)),
    ("2030-01-01T00:00:00.1234567Z", at(2030, 1, 1) + 123),  # sub-ms digits are dropped
    ("2030-01-01T00:00:00", at(2030, 1, 1)),  # no offset: UTC
    ("2030-01-01 00:00:00", at(2030, 1, 1)),
    ("2030-01-01", at(2030, 1, 1)),
    ("20300101T000000Z", at(2030, 1, 1)),
    # RFC 2822
    ("Tue, 01 Jan 2030 00:00:00 GMT", at(2030, 1, 1)),
    ("Tue, 01 Jan 2030 00:00:00 +0700", at(2030, 1, 1, hours=7)),
    ("Tue, 01 Jan 2030 00:00:00 -0000", at(2030, 1, 1)),
    ("01 Jan 2030 00:00:00 UT", at(2030, 1, 1)),
    ("Tue, 01 Jan 2030 00:00:00 EST", at(2030, 1, 1, hours=-5)),
    ("Tue, 01 Jan 2030 00:00:00", at(2030, 1, 1)),
    ("Tue, 01 Jan 2030 00:00:00 +07:00", at(2030, 1, 1, hours=7)),  # as JavaScript writes it
    ("Tue, 01 Jan 2030 00:00:00 GMT+0700 (WIB)", at(2030, 1, 1, hours=7)),
    ("01 Jan 2030 00:00 -05:30", at(2030, 1, 1, hours=-5, minutes=-30)),
    # the seed's loose forms (JavaScript Date)
    ("Dec 12 2012 12:12:12 AM +07:00", at(2012, 12, 12, 0, 12, 12, hours=7)),
    ("Dec 12 2030 12:12:12 PM +07:00", at(2030, 12, 12, 12, 12, 12, hours=7)),
    ("Dec 12 2030 12:12:12 AM +0700", at(2030, 12, 12, 0, 12, 12, hours=7)),
    ("Mar 20 2025 7:04:09 PM", at(2025, 3, 20, 19, 4, 9)),
    ("Mar 20 2025 7:04 PM", at(2025, 3, 20, 19, 4)),
    ("Mar 20 2025 19:04:09", at(2025, 3, 20, 19, 4, 9)),
    ("Mar 20 2025 19:04", at(2025, 3, 20, 19, 4)),
    ("Mar 20 2025", at(2025, 3, 20)),
    ("March 20, 2025", at(2025, 3, 20)),
    ("march 20 2025", at(2025, 3, 20)),
    ("Thu Mar 20 2025 19:04:09 GMT+0700 (Indochina Time)", at(2025, 3, 20, 19, 4, 9, hours=7)),
    ("Thu Mar 20 2025 19:04:09 UTC", at(2025, 3, 20, 19, 4, 9)),
    ("  Mar  20   2025  ", at(2025, 3, 20)),  # runs of spaces are one
    # around the epoch
    ("1970-01-01T00:00:00Z", 0),
    ("1970-01-01T00:00:00.0005Z", 0),
    ("1969-12-31T23:59:59.999Z", -1),
    ("1969-12-31T23:59:59.9995Z", -1),  # floor, as ms since the epoch
]


@pytest.mark.parametrize(("text", "expected"), PARSED, ids=[t for t, _ in PARSED])
def test_parses(text: str, expected: int) -> None:
    assert parse_date_ms(text) == expected


NOT_DATES = [
    "",
    " ",
    "garbage",
    "1893456000000",  # numeric strings are not dates, as in the original
    "+1893456000000",
    "-5",
    "2030",
    "1.5",
    "2030-02-30",
    "2030-13-01",
    "Dec 32 2030",
    "Feb 29 2031",
    "2030-01-01T24:00:01Z",
    "2030-01-01T00:00:00+25:00",
    "Dec 12 2030 13:12:12 PM",  # there is no 13 PM
    "Dec 12 2030 12:12:12 XM",
    # a zone the parser does not know is not silently UTC (JavaScript refuses these too)
    "Tue, 01 Jan 2030 00:00:00 CET",
    "Tue, 01 Jan 2030 00:00:00 garbage",
    "01 Jan 2030 00:00:00 Z+1",
    "\x00",
    "12 Feb x 12:12:12 +9999999999",  # used to escape as OverflowError (a 500)
    "Tue, 01 Jan 2030 00:00:00 +99999999999999999999",
]


@pytest.mark.parametrize("text", NOT_DATES)
def test_not_dates(text: str) -> None:
    assert parse_date_ms(text) is None


def test_every_millisecond_is_exact() -> None:
    """Integer arithmetic: float timestamps lose a millisecond on some dates."""
    assert parse_date_ms("2039-05-01T22:52:48.648Z") == 2_187_903_168_648
    start = at(2100, 3, 1, 11, 22, 33, hours=5, minutes=30)
    for millis in range(1000):
        text = f"2100-03-01T11:22:33.{millis:03d}+05:30"
        assert parse_date_ms(text) == start + millis, text


def test_offsets_name_the_same_instant() -> None:
    forms = [
        "2030-01-01T07:00:00+07:00",
        "2030-01-01T00:00:00Z",
        "2029-12-31T19:00:00-05:00",
        "Tue, 01 Jan 2030 07:00:00 +0700",
        "Jan 1 2030 12:00:00 AM +00:00",
        "Dec 31 2029 7:00:00 PM -05:00",
    ]
    assert {parse_date_ms(text) for text in forms} == {at(2030, 1, 1)}


def test_largest_dates() -> None:
    assert parse_date_ms("9999-12-31T23:59:59.999Z") == at(9999, 12, 31, 23, 59, 59, 999000)
    assert at(9999, 12, 31) < MAX_EPOCH_MS == 8_640_000_000_000_000


def test_now_ms_is_wall_clock_milliseconds() -> None:
    before = time.time_ns() // 1_000_000
    now = now_ms()
    after = time.time_ns() // 1_000_000
    assert isinstance(now, int)
    assert before <= now <= after
