"""fictures.client_address: X-Forwarded-For only counts when a trusted proxy sent it."""

from ipaddress import ip_network

import pytest

from fictures.client_address import client_address, from_router_headers

PROXIES = [ip_network("10.0.0.0/8"), ip_network("fd00::/8")]


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        # No proxy in front: the peer, whatever the header claims.
        ("203.0.113.7", None, "203.0.113.7"),
        ("203.0.113.7", "198.51.100.1", "203.0.113.7"),
        # Through a trusted proxy: the address it received the request from.
        ("10.0.0.2", "198.51.100.1", "198.51.100.1"),
        # Two trusted proxies in a row: the first hop that is not one of ours.
        ("10.0.0.2", "198.51.100.1, 10.0.0.3", "198.51.100.1"),
        # What the client wrote itself (left of the first untrusted hop) is ignored.
        ("10.0.0.2", "1.2.3.4, 198.51.100.1", "198.51.100.1"),
        ("10.0.0.2", "10.9.9.9, 198.51.100.1", "198.51.100.1"),
        # A trusted proxy without the header is the client as far as we know.
        ("10.0.0.2", None, "10.0.0.2"),
        ("10.0.0.2", "", "10.0.0.2"),
        # Garbage in the chain stops the walk at the last trusted hop.
        ("10.0.0.2", "198.51.100.1, not-an-address", "10.0.0.2"),
        ("10.0.0.2", "198.51.100.1, not-an-address, 10.0.0.3", "10.0.0.3"),
        # IPv6, and IPv4 written as IPv6.
        ("fd00::1", "2001:db8::5", "2001:db8::5"),
        ("::ffff:10.0.0.2", "198.51.100.1", "198.51.100.1"),
        ("::ffff:203.0.113.7", None, "203.0.113.7"),
        # Not an IP address (a Unix socket, a test client): as it is.
        ("testclient", "198.51.100.1", "testclient"),
        (None, "198.51.100.1", "unknown"),
    ],
)
def test_client_address(peer, forwarded, expected):
    assert client_address(peer, forwarded, PROXIES) == expected


def test_no_trusted_proxies_by_default():
    assert client_address("127.0.0.1", "198.51.100.1") == "127.0.0.1"


def test_trusted_proxies_come_from_the_setting(monkeypatch):
    from fictures.settings import settings

    monkeypatch.setattr(settings, "trusted_proxies", "127.0.0.1, 10.0.0.0/8")
    assert client_address("127.0.0.1", "198.51.100.1") == "198.51.100.1"
    assert client_address("10.1.2.3", "198.51.100.1") == "198.51.100.1"
    assert client_address("192.0.2.1", "198.51.100.1") == "192.0.2.1"


def test_from_router_headers(monkeypatch):
    """A browser tab: Reflex's router headers carry the websocket's peer."""
    from fictures.settings import settings

    headers = {"asgi-scope-client": "10.0.0.2", "x-forwarded-for": "198.51.100.1"}
    assert from_router_headers(headers) == "10.0.0.2"
    monkeypatch.setattr(settings, "trusted_proxies", "10.0.0.0/8")
    assert from_router_headers(headers) == "198.51.100.1"
    assert from_router_headers({}) == "unknown"
