"""tasks_server.model.retry.RetryPolicy: when the next retry is due, as a pure function."""

from __future__ import annotations

import msgspec
import pytest

from tasks_server.model.canonical import parse_task_spec
from tasks_server.model.retry import RetryPolicy, retry_policy
from tasks_server.model.timing import MAX_EPOCH_MS

NOW = 1_900_000_000_000
HOUR = 3_600_000


def test_no_retries_means_none() -> None:
    policy = RetryPolicy(limit=0, interval_ms=1000, exponential=False)
    assert policy.next_retry_at(1, NOW) is None


@pytest.mark.parametrize("retry_number", [1, 2, 3, 4, 5])
def test_fixed_interval(retry_number: int) -> None:
    policy = RetryPolicy(limit=5, interval_ms=1500, exponential=False)
    assert policy.next_retry_at(retry_number, NOW) == NOW + 1500


@pytest.mark.parametrize("retry_number", [1, 2, 3, 4, 5])
def test_exponential_is_interval_times_n(retry_number: int) -> None:
    policy = RetryPolicy(limit=5, interval_ms=1500, exponential=True)
    assert policy.next_retry_at(retry_number, NOW) == NOW + 1500 * retry_number


def test_readme_worked_example() -> None:
    """retry 5, retryInterval 1 h: exponential waits 1 h, 2 h ... 5 h; otherwise 1 h each."""
    exponential = RetryPolicy(limit=5, interval_ms=HOUR, exponential=True)
    linear = RetryPolicy(limit=5, interval_ms=HOUR, exponential=False)
    assert [exponential.next_retry_at(n, NOW) for n in range(1, 6)] == [
        NOW + HOUR * n for n in range(1, 6)
    ]
    assert [linear.next_retry_at(n, NOW) for n in range(1, 6)] == [NOW + HOUR] * 5


def test_delay_counts_from_now_not_from_registration() -> None:
    policy = RetryPolicy(limit=3, interval_ms=1000, exponential=True)
    assert policy.next_retry_at(2, NOW) == NOW + 2000
    assert policy.next_retry_at(2, NOW + 777) == NOW + 777 + 2000


@pytest.mark.parametrize("exponential", [False, True])
def test_past_the_limit_is_none(exponential: bool) -> None:
    policy = RetryPolicy(limit=3, interval_ms=1000, exponential=exponential)
    assert policy.next_retry_at(3, NOW) is not None
    assert policy.next_retry_at(4, NOW) is None
    assert policy.next_retry_at(100, NOW) is None


def test_retry_at_in_the_future_is_that_time() -> None:
    policy = RetryPolicy(limit=1, interval_ms=1000, exponential=False, retry_at=NOW + 5000)
    assert policy.next_retry_at(1, NOW) == NOW + 5000


def test_retry_at_in_the_past_is_now() -> None:
    policy = RetryPolicy(limit=1, interval_ms=1000, exponential=False, retry_at=NOW - 5000)
    assert policy.next_retry_at(1, NOW) == NOW


def test_retry_at_wins_over_the_interval() -> None:
    policy = RetryPolicy(limit=1, interval_ms=HOUR, exponential=True, retry_at=NOW + 10)
    assert policy.next_retry_at(1, NOW) == NOW + 10


def test_retry_at_allows_one_retry_only() -> None:
    policy = RetryPolicy(limit=1, interval_ms=1, exponential=False, retry_at=NOW + 10)
    assert policy.next_retry_at(2, NOW) is None


@pytest.mark.parametrize(
    ("interval", "exponential", "retry_number"),
    [
        (2**53 - 1, False, 1),
        (2**53 - 1, True, 3),
        (2**53 - 1, True, 2**53 - 1),  # would overflow a 64-bit column without the cap
    ],
)
def test_retry_time_is_capped_at_the_largest_date(
    interval: int, exponential: bool, retry_number: int
) -> None:
    policy = RetryPolicy(limit=2**53 - 1, interval_ms=interval, exponential=exponential)
    due = policy.next_retry_at(retry_number, NOW)
    assert due == MAX_EPOCH_MS
    assert due is not None and due < 2**63


def test_stops_on_listed_status_codes_only() -> None:
    policy = RetryPolicy(
        limit=3, interval_ms=1, exponential=False, stop_on_status=frozenset({404, 500})
    )
    assert policy.stops_on(404)
    assert policy.stops_on(500)
    assert not policy.stops_on(503)
    assert not policy.stops_on(200)
    assert not RetryPolicy(limit=3, interval_ms=1, exponential=False).stops_on(404)


def test_is_immutable() -> None:
    policy = RetryPolicy(limit=1, interval_ms=1, exponential=False)
    with pytest.raises(AttributeError):
        policy.limit = 2  # type: ignore[misc]  # frozen
    assert msgspec.structs.replace(policy, limit=2).limit == 2


# ---- the policy a registered task implies ----

URL = "http://127.0.0.1:9/cb"


def policy_of(config: dict[str, object]) -> RetryPolicy:
    spec = parse_task_spec({"httpRequest": {"url": URL, "method": "GET"}, "config": config}, NOW)
    return retry_policy(spec)


def test_policy_of_the_defaults() -> None:
    assert policy_of({}) == RetryPolicy(limit=0, interval_ms=1, exponential=False)


def test_policy_of_retries_with_the_default_exponential() -> None:
    policy = policy_of({"retry": 3, "retryInterval": 1000})
    assert (policy.limit, policy.interval_ms, policy.exponential) == (3, 1000, True)
    assert policy.next_retry_at(3, NOW) == NOW + 3000


def test_policy_of_one_retry_is_never_exponential() -> None:
    assert policy_of({"retry": 1, "retryExponential": True}).exponential is False


def test_policy_of_retry_at() -> None:
    policy = policy_of({"retry": 9, "retryAt": NOW + 60_000})
    assert (policy.limit, policy.retry_at) == (1, NOW + 60_000)
    assert policy.next_retry_at(1, NOW + 1) == NOW + 60_000
    assert policy.next_retry_at(2, NOW + 1) is None


def test_policy_of_ignore_status_code() -> None:
    assert policy_of({"ignoreStatusCode": [404, 500, 404]}).stop_on_status == {404, 500}
