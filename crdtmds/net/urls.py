"""Server URLs and socket addresses: normal forms, endpoints, what may be dialed, and the
URL a server advertises."""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import urlsplit, urlunsplit

SYNC_PATH = "/sync"
"""Where a server speaks the automerge-repo protocol."""


def normalise_url(url: str) -> str:
    """`ws://host:port` without a trailing slash or a /sync path."""
    parts = urlsplit(url.strip())
    path = parts.path.rstrip("/")
    if path == SYNC_PATH:
        path = ""
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def endpoint(url: str, path: str) -> str:
    """The URL of `path` on the server at `url`."""
    parts = urlsplit(normalise_url(url))
    return urlunsplit((parts.scheme, parts.netloc, parts.path + path, "", ""))


def dialable(url: str) -> bool:
    return peer_url_problem(url) is None


def peer_url_problem(url: str) -> str | None:
    """Why `url` cannot be dialed as a peer, or None when it can."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        return f"not a URL ({exc})"
    if parts.scheme not in ("ws", "wss"):
        return "expected ws://HOST:PORT or wss://HOST:PORT"
    if not parts.hostname:
        return "no host"
    if port == 0:
        return "port 0 cannot be dialed"
    return None


def advertised_url_problem(url: str) -> str | None:
    """Why `url` cannot be a server's advertised URL (`--url`), or None when it can: it
    must be ws:// or wss:// with a host and an explicit port."""
    problem = peer_url_problem(url)
    if problem is not None:
        return problem
    if urlsplit(url.strip()).port is None:
        return "no port (expected ws://HOST:PORT or wss://HOST:PORT)"
    return None


LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1", "0.0.0.0", "::", "")


def points_at_listen_address(url: str, host: str, port: int) -> bool:
    """Whether `url` names this machine's `host:port` (a join's --peer at its own
    --listen address, where nothing will answer: the server is not started yet)."""
    try:
        parts = urlsplit(url.strip())
        peer_port = parts.port or (443 if parts.scheme == "wss" else 80)
    except ValueError:
        return False
    if port == 0 or peer_port != port:
        return False
    peer_host = (parts.hostname or "").lower()
    local = {host.lower(), socket.gethostname().lower(), socket.getfqdn().lower()}
    return peer_host in LOOPBACK_HOSTS or peer_host in local or host in ("", "0.0.0.0", "::")


def url_host(host: str) -> str:
    """`host` as it goes into a URL (IPv6 addresses in brackets)."""
    return f"[{host}]" if ":" in host else host


def advertised_url_for(host: str, port: int, *, tls: bool) -> str:
    """The URL other servers dial; empty while the port is still to be chosen (0)."""
    if port == 0:
        return ""
    if host in ("", "0.0.0.0", "::"):
        host = socket.getfqdn()
    return f"{'wss' if tls else 'ws'}://{url_host(host)}:{port}"


def advertised_url(configured: str, host: str, port: int, *, tls: bool) -> str:
    """The `configured` URL, unless it is empty or names port 0; then one built from the
    listening address."""
    if configured:
        try:
            configured_port = urlsplit(configured).port
        except ValueError:
            configured_port = 0
        if configured_port != 0:
            return configured
    return advertised_url_for(host, port, tls=tls)


def format_address(address: Any) -> str:
    """`host:port` of a socket address (as websockets gives it)."""
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{url_host(str(address[0]))}:{address[1]}"
    return str(address)
