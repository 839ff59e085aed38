"""Redirect options: locationTrusted, proto, protoRedirect, refererUrl, with real local hops."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest

from tests.conftest import Api, Owner
from tests.dispatch.helpers import run
from tests.targets import Reply, Target

BASIC = "Basic " + base64.b64encode(b"trusted:pw").decode()


@pytest.fixture
def elsewhere() -> Iterator[Target]:
    """A second host (another origin) that redirects land on."""
    server = Target()
    yield server
    server.close()


def test_location_trusted_sends_credentials_to_the_redirected_host(
    api: Api, owner: Owner, target: Target, elsewhere: Target
) -> None:
    target.script("/r", always=Reply(302, b"", {"Location": elsewhere.url("/landed")}))
    config = {"locationTrusted": {"username": "trusted", "password": "pw"}}
    done = run(api, owner, {"url": target.url("/r"), "method": "GET"}, config)
    assert done["state"] == "SUCCESS", done
    (first,) = target.arrivals_at("/r")
    (landed,) = elsewhere.arrivals_at("/landed")
    assert first.header("authorization") == BASIC
    assert landed.header("authorization") == BASIC


def test_credentials_without_location_trusted_stay_with_the_first_host(
    api: Api, owner: Owner, target: Target, elsewhere: Target
) -> None:
    target.script("/r", always=Reply(302, b"", {"Location": elsewhere.url("/landed")}))
    request = {
        "url": target.url("/r"),
        "method": "GET",
        "authBasic": {"username": "trusted", "password": "pw"},
    }
    done = run(api, owner, request)
    assert done["state"] == "SUCCESS", done
    assert target.arrivals_at("/r")[0].header("authorization") == BASIC
    assert elsewhere.arrivals_at("/landed")[0].header("authorization") is None


def test_proto_https_refuses_an_http_url(api: Api, owner: Owner, target: Target) -> None:
    done = run(api, owner, {"url": target.url("/p"), "method": "GET"}, {"proto": "https"})
    assert done["state"] == "ERROR", done
    assert done["statusCode"] == 0
    assert "http" in done["error"].lower(), done["error"]
    assert target.arrivals == []


@pytest.mark.parametrize(
    "config", [{"proto": "https"}, {"protoRedirect": "https"}], ids=["proto", "protoRedirect"]
)
def test_https_only_task_refuses_a_redirect_to_http(
    api: Api, owner: Owner, https: Target, elsewhere: Target, config: dict[str, str]
) -> None:
    https.script("/down", always=Reply(302, b"", {"Location": elsewhere.url("/plain")}))
    done = run(
        api, owner, {"url": https.url("/down"), "method": "GET"}, {**config, "insecure": True}
    )
    assert done["state"] == "ERROR", done
    assert done["statusCode"] == 0
    assert len(https.arrivals_at("/down")) == 1
    assert elsewhere.arrivals == []  # never sent in clear


def test_redirect_to_http_is_followed_by_default(
    api: Api, owner: Owner, https: Target, elsewhere: Target
) -> None:
    https.script("/down", always=Reply(302, b"", {"Location": elsewhere.url("/plain")}))
    done = run(api, owner, {"url": https.url("/down"), "method": "GET"}, {"insecure": True})
    assert done["state"] == "SUCCESS", done
    assert len(elsewhere.arrivals_at("/plain")) == 1


def test_proto_redirect_http_refuses_a_redirect_to_https(
    api: Api, owner: Owner, target: Target, https: Target
) -> None:
    target.script("/up", always=Reply(302, b"", {"Location": https.url("/secure")}))
    config = {"protoRedirect": "http", "insecure": True}
    done = run(api, owner, {"url": target.url("/up"), "method": "GET"}, config)
    assert done["state"] == "ERROR", done
    assert https.arrivals == []


def test_referer_url_is_sent(api: Api, owner: Owner, target: Target) -> None:
    config = {"refererUrl": "https://example.com/from/here?x=1"}
    done = run(api, owner, {"url": target.url("/ref"), "method": "GET"}, config)
    assert done["state"] == "SUCCESS", done
    (arrival,) = target.arrivals_at("/ref")
    assert arrival.header_values("referer") == ["https://example.com/from/here?x=1"]


def test_referer_auto_names_the_previous_hop(api: Api, owner: Owner, target: Target) -> None:
    target.script("/a", always=Reply(302, b"", {"Location": "/b"}))
    done = run(api, owner, {"url": target.url("/a"), "method": "GET"}, {"refererUrl": "auto"})
    assert done["state"] == "SUCCESS", done
    (first,) = target.arrivals_at("/a")
    (second,) = target.arrivals_at("/b")
    assert first.header("referer") is None
    assert second.header("referer") == target.url("/a")
