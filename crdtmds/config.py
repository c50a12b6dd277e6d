"""What a server is configured with: `ServerConfig`, kept in its data directory, and
`Limits`, what one connection may cost it (the `crdtmds start` options are derived from
the fields of `Limits`)."""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

from crdtmds.core import auth
from crdtmds.core.cluster import ROLE_PRIMARY
from crdtmds.storage import DEFAULT_COMPACT_THRESHOLD
from crdtmds.sync.gossip import MAX_DOCUMENTS_PER_CONNECTION_DEFAULT, MAX_SYNC_MESSAGE_SIZE_DEFAULT

DATABASE_FILE = "crdtmds.sqlite3"
"""The SQLite file inside a server's data directory."""
CONFIG_KEY = "node-config"
"""The storage meta key of the `ServerConfig` (its name predates the word "server")."""
MAX_MESSAGE_SIZE_DEFAULT = 16 * 1024 * 1024
MAX_LOADED_DOMAINS_DEFAULT = 256
MEMORY_BUDGET_DEFAULT = 1024
"""MiB of loaded domains, as `crdtmds.app.residency.estimated_memory` counts them."""
WEB_API_CERT_FILE = "web-api-cert.pem"
WEB_API_KEY_FILE = "web-api-key.pem"
"""The self-signed certificate of the Web API door (and its key, mode 0600) in a data
directory, made once by init or join when no --tls-cert is given."""


@dataclass(slots=True)
class ServerConfig:
    """What a server remembers about itself (kept in the storage's meta table)."""

    name: str
    cluster_id: str
    cluster_document_id: str
    secret: str
    listen_host: str = "127.0.0.1"
    listen_port: int = 0
    url: str = ""
    region: str = "default"
    role: str = ROLE_PRIMARY
    tls_cert: str | None = None
    tls_key: str | None = None
    compact_threshold: int = DEFAULT_COMPACT_THRESHOLD
    max_message_size: int = MAX_MESSAGE_SIZE_DEFAULT
    peers: list[str] = field(default_factory=list)
    """Extra URLs to dial besides the servers in the cluster document."""
    web_api_host: str = ""
    """Where the HTTPS Web API door listens; empty: the server has no such door."""
    web_api_port: int = 0
    """Its port; 0 picks a free one at start, which is then kept here."""
    web_api_url: str = ""
    """The door's URL (`https://HOST:PORT`), known once it has bound."""
    server_id: str = ""
    """This data directory's random identity in the cluster document (`new_server_id`):
    a server that rejoins under its name (`join --replace`) gets a new one, and a removed
    one's id is refused by every server."""

    def to_meta(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> ServerConfig:
        known = {k: v for k, v in meta.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def new_server_id() -> str:
    return secrets.token_hex(8)


@dataclass(frozen=True, slots=True)
class Limits:
    """What one connection may cost a server (set by `crdtmds start` options)."""

    max_message_size: int = MAX_MESSAGE_SIZE_DEFAULT
    """Bytes in one WebSocket frame, on /sync and /api; larger frames close the socket."""
    max_documents_per_connection: int = MAX_DOCUMENTS_PER_CONNECTION_DEFAULT
    """Distinct documents one /sync connection may name."""
    max_sync_message_size: int = MAX_SYNC_MESSAGE_SIZE_DEFAULT
    """Bytes in one sync frame this server sends: larger sync messages go as several, so
    that stock automerge-repo clients (which accept 1 MiB) can fetch large domains. Only a
    single change larger than this is sent whole."""
    login_failures: int = 5
    """Failed logins for one user name from one address before it must wait; four times as
    many for one user name over all addresses, and for one address over all user names
    (see `auth.LoginThrottle`)."""
    login_lockout: float = 1.0
    """Seconds of the first wait; each further failure doubles it (up to five minutes)."""
    min_password_length: int = auth.MIN_PASSWORD_LENGTH
    """Fewest characters of a password set on this server (add-administrator)."""
    handshake_timeout: float = 10.0
    """Seconds a /sync peer has, once connected, to be admitted (its join accepted)."""
    idle_timeout: float = 900.0
    """Seconds an /api connection may stay silent before it is closed."""
    web_api_timeout: float = 30.0
    """Seconds a Web API (HTTPS) connection has for its TLS handshake and then for each
    whole request, and may stay idle between requests; a slower client is dropped."""
    epoch_publishes: int = 1000
    """Publishes in one epoch of a domain before its next epoch is proposed (by the server
    whose name sorts first), or half the domain's objects and rules if more: the history
    each publish pays for (`app/epochs.py`)."""
    relay_delay: float = 0.5
    """Seconds a server of a full mesh, linked to every other server, waits before passing
    on changes it got from one of them: the others almost always got them from their
    origin, and relaying at once would send each change to each server once per server.
    Without the mesh (`--no-mesh`) a server relays at once."""
    max_loaded_domains: int = MAX_LOADED_DOMAINS_DEFAULT
    """Domains kept in memory at most: a domain is loaded on first use and the least
    recently used ones are unloaded past this (never one with an open session or a sync
    in flight)."""
    memory_budget: int = MEMORY_BUDGET_DEFAULT
    """MiB of loaded domains at most (an estimate from their stored size), unloaded as
    for --max-loaded-domains."""
