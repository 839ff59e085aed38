"""Target policy: which addresses the server may connect to (TARGET_ALLOW, TARGET_DENY).

Checked in libcurl's CURLOPT_OPENSOCKETFUNCTION, on the address of every
socket it opens: after DNS (system, `resolve`, `dnsServer`), on every
redirect hop, for each address happy eyeballs tries. With a proxy the socket
goes to the proxy, so the proxy's address is the one checked; what the proxy
connects to is the proxy's to police. The DNS servers of `dnsServer` are
checked before the lookup; `dohUrl` is refused while a policy is in force,
since libcurl's DoH requests open their sockets without this callback.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pycurl

from tasks_server.dispatch.engine import CurlEngine, OptionUnavailable, Pending
from tasks_server.model.outcome import AttemptResult
from tasks_server.model.spec import Config, dns_server_address

if TYPE_CHECKING:
    from tasks_server.config import Settings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class TargetPolicy:
    """CIDR lists: an address in `deny` is refused; with `allow` given, so is one outside it."""

    __slots__ = ("allow", "deny")

    def __init__(self, allow: Sequence[str] = (), deny: Sequence[str] = ()) -> None:
        self.allow = tuple(ipaddress.ip_network(block, strict=False) for block in allow)
        self.deny = tuple(ipaddress.ip_network(block, strict=False) for block in deny)

    @classmethod
    def from_settings(cls, settings: Settings) -> TargetPolicy | None:
        """The policy of TARGET_ALLOW / TARGET_DENY, or None when both are empty."""
        if not (settings.target_allow or settings.target_deny):
            return None
        return cls(settings.target_allow, settings.target_deny)

    def refusal(self, host: str) -> str | None:
        """Why connecting to the address `host` is refused, or None when it is allowed."""
        address: Address = ipaddress.ip_address(host.partition("%")[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # ::ffff:127.0.0.1 reaches 127.0.0.1
        if any(address in block for block in self.deny):
            return f"address {address} is denied by TARGET_DENY"
        if self.allow and not any(address in block for block in self.allow):
            return f"address {address} is not in TARGET_ALLOW"
        return None


class Refused(Pending):
    """An option value that fails the attempt, before any connection, with `reason`."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    async def value(self) -> Any:
        raise OptionUnavailable(self.reason)


def guard_for(policy: TargetPolicy, config: Config) -> TargetGuard | Refused:
    """The OPENSOCKETFUNCTION value of an attempt: its guard, or why it cannot be sent."""
    if config.doh_url:
        return Refused(
            "dohUrl cannot be used while TARGET_ALLOW or TARGET_DENY is set "
            "(libcurl's DoH connections are not checked)"
        )
    for server in config.dns_server or ():
        reason = policy.refusal(dns_server_address(server)[0])
        if reason is not None:
            return Refused(f"dnsServer {server}: {reason}")
    return TargetGuard(policy)


class TargetGuard:
    """CURLOPT_OPENSOCKETFUNCTION of one attempt: opens allowed sockets, notes refusals."""

    __slots__ = ("policy", "refused")

    def __init__(self, policy: TargetPolicy) -> None:
        self.policy = policy
        self.refused: list[str] = []

    def __call__(self, purpose: int, address: Any) -> Any:
        family, socktype, protocol, peer = address
        reason = self.policy.refusal(peer[0])
        if reason is not None:
            self.refused.append(reason)
            return pycurl.SOCKET_BAD
        # pycurl duplicates the descriptor; this object closes its own when collected
        return socket.socket(family, socktype, protocol)

    def explain(self, result: AttemptResult) -> AttemptResult:
        """A failed attempt's error says which address the policy refused (libcurl only
        says it could not connect)."""
        if result.error is None or not self.refused:
            return result
        return AttemptResult(0, error="; ".join(dict.fromkeys(self.refused)))


def perform_checked(
    engine: CurlEngine, options: list[tuple[int, Any]], *, keep_body: bool
) -> asyncio.Future[AttemptResult]:
    """`engine.perform`, with a refused connection reported as the policy's refusal.

    Cancelling the returned future aborts the transfer, as with `engine.perform`.
    """
    guard = next((value for _, value in options if isinstance(value, TargetGuard)), None)
    inner = engine.perform(options, keep_body=keep_body)
    if guard is None:
        return inner
    outer: asyncio.Future[AttemptResult] = asyncio.get_running_loop().create_future()

    def settle(done: asyncio.Future[AttemptResult]) -> None:
        if outer.done():
            return
        if done.cancelled():
            outer.cancel()
        else:
            outer.set_result(guard.explain(done.result()))

    inner.add_done_callback(settle)
    outer.add_done_callback(lambda _: inner.cancel())
    return outer
