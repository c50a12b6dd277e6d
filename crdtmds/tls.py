"""TLS contexts: the server's, from its certificate and key, and the client's, which
trusts the system's store plus a given certificate (the servers of a cluster that share
one self-signed certificate trust each other that way)."""

from __future__ import annotations

import ssl

from crdtmds.errors import ClusterError


def server_ssl_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """A context serving `cert` with `key`; None when neither is given."""
    if not cert and not key:
        return None
    if not cert or not key:
        raise ClusterError("TLS needs both a certificate and its key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def client_ssl_context(extra_ca: str | None = None) -> ssl.SSLContext:
    """The system's trust store, plus `extra_ca` (a certificate file) when given."""
    context = ssl.create_default_context()
    if extra_ca:
        context.load_verify_locations(extra_ca)
    return context


def ssl_for_url(url: str, extra_ca: str | None = None) -> ssl.SSLContext | None:
    """The client context for dialing `url`: None unless it is a `wss:` URL."""
    return client_ssl_context(extra_ca) if url.startswith("wss:") else None
