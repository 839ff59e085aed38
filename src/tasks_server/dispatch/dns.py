"""Name resolution of a task: its own DNS servers, and caches no other task shares.

This libcurl has no c-ares, so `dnsServer` is honoured here: the host is
looked up against those servers (dnspython, asynchronously, on the loop) and
the answer pinned with CURLOPT_RESOLVE, as `resolve` entries are.
"""

from __future__ import annotations

import dns.asyncresolver
import dns.exception
import dns.nameserver
import pycurl

from tasks_server.dispatch.engine import HandleBound, OptionUnavailable, Pending
from tasks_server.model.spec import dns_server_address

MAX_LOOKUP_S = 10.0


def resolve_entry(host: str, port: int, addresses: list[str]) -> bytes:
    """One CURLOPT_RESOLVE line: `host:port:addr[,addr]`, IPv6 addresses in brackets."""
    bracketed = [f"[{a.strip('[]')}]" if ":" in a else a for a in addresses]
    return f"{host}:{port}:{','.join(bracketed)}".encode()


class DnsServerLookup(Pending):
    """CURLOPT_RESOLVE lines: `pinned` as given, then each of `names` looked up on `servers`."""

    __slots__ = ("ip_version", "names", "pinned", "servers", "timeout_s")

    def __init__(
        self,
        pinned: list[bytes],
        names: list[tuple[str, int]],
        servers: list[str],
        ip_version: int,
        timeout_s: float,
    ) -> None:
        self.pinned = pinned
        self.names = names
        self.servers = servers
        self.ip_version = ip_version
        self.timeout_s = min(timeout_s, MAX_LOOKUP_S)

    async def value(self) -> list[bytes]:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [
            dns.nameserver.Do53Nameserver(*dns_server_address(server)) for server in self.servers
        ]
        record_type = "AAAA" if self.ip_version == 6 else "A"
        entries = list(self.pinned)
        for host, port in self.names:
            try:
                answer = await resolver.resolve(
                    host, record_type, search=False, lifetime=self.timeout_s
                )
            except dns.exception.DNSException as exc:
                servers = ", ".join(self.servers)
                raise OptionUnavailable(
                    f"Could not resolve host: {host} (DNS servers {servers}: {exc})"
                ) from None
            entries.append(resolve_entry(host, port, [record.address for record in answer]))
        return entries


class PrivateCaches(HandleBound):
    """A share holding the handle's own DNS and connection caches.

    The easy handles of one multi share its DNS cache and connection pool: a
    task's `resolve`, DNS server or DoH answer, and the connection made with
    it, would otherwise serve the next task that names the same host.
    """

    __slots__ = ()

    def bind(self, handle: pycurl.Curl) -> pycurl.CurlShare:
        share = pycurl.CurlShare()
        share.setopt(pycurl.SH_SHARE, pycurl.LOCK_DATA_DNS)
        share.setopt(pycurl.SH_SHARE, pycurl.LOCK_DATA_CONNECT)
        return share
