"""The client's address, as rate limits and stream limits count it.

The peer of the connection is the client, unless the peer is one of the
reverse proxies in `settings.trusted_proxies`: then the client is the
right-most address in ``X-Forwarded-For`` that is not itself a trusted proxy
(each proxy appends the address it received the request from, so everything
left of the first untrusted hop may have been written by the client and is
ignored). With no trusted proxies (the default), ``X-Forwarded-For`` is never
read: anyone can send one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from starlette.requests import HTTPConnection

from fictures.settings import settings

UNKNOWN = "unknown"

_Network = IPv4Network | IPv6Network
_Address = IPv4Address | IPv6Address


def _parse(raw: str) -> _Address | None:
    try:
        address = ip_address(raw.strip())
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # "::ffff:10.0.0.1" is 10.0.0.1
    return address


def _trusted(address: _Address, networks: Sequence[_Network]) -> bool:
    return any(address in network for network in networks)


def client_address(
    peer: str | None, forwarded_for: str | None, trusted: Sequence[_Network] | None = None
) -> str:
    """The client's address for a connection from `peer` carrying `X-Forwarded-For`
    (the header's values, comma-joined); `trusted` defaults to the setting."""
    networks = settings.trusted_proxy_networks if trusted is None else trusted
    if not peer:
        return UNKNOWN
    address = _parse(peer)
    if address is None:
        return peer  # not an IP (a Unix socket path, a test client): count it as it is
    if networks and forwarded_for:
        for hop in reversed(forwarded_for.split(",")):
            if not _trusted(address, networks):
                break
            previous = _parse(hop)
            if previous is None:
                break  # garbage in the chain: stop at the last proxy we trust
            address = previous
    return str(address)


def from_connection(conn: HTTPConnection) -> str:
    """A REST request's or an event stream's client address."""
    peer = conn.client.host if conn.client else None
    forwarded = ",".join(conn.headers.getlist("x-forwarded-for"))
    return client_address(peer, forwarded)


def from_router_headers(headers: Mapping[str, str]) -> str:
    """A browser tab's client address, from Reflex's router headers
    (`self.router.headers.raw_headers`): Reflex records the websocket's peer as
    ``asgi-scope-client`` beside the handshake's own headers."""
    return client_address(headers.get("asgi-scope-client"), headers.get("x-forwarded-for"))
