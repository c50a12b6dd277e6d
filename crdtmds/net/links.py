"""The open sync links of a server: one `SyncLink` per WebSocket speaking the
automerge-repo protocol (with another server, or an administrator's repo client), and
`Links`, the table of them that the rest of the network side shares."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from crdtmds.app.status import Connections
from crdtmds.net.urls import format_address
from crdtmds.sync.gossip import Gossip


@dataclass(eq=False, slots=True)
class SyncLink:
    """One /sync WebSocket connection."""

    conn_id: str
    ws: Any
    outgoing: bool
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the hub has something to send on this link."""
    query: dict[str, str] = field(default_factory=dict)
    """The URL query of an incoming link (an automerge-repo client's credentials)."""
    target: str = ""
    """The URL dialed, for an outgoing link."""
    nonce: str = ""
    """The nonce of our credentials (links we dialed)."""
    peer_name: str | None = None
    admin: str | None = None
    failure: str | None = None
    """Why this side ends the link, when it does."""
    closing: bool = False

    def describe(self) -> str:
        # Names and URLs come from peers and the cluster document: quoted and escaped.
        who = (
            f"server {self.peer_name!r}"
            if self.peer_name
            else f"admin {self.admin!r}"
            if self.admin
            else "peer"
        )
        where = (
            repr(self.target)
            if self.target
            else format_address(getattr(self.ws, "remote_address", None))
        )
        return f"{who} ({self.conn_id}, {where})"


class Links:
    """Every open sync link of this server, and the background tasks they spawn."""

    def __init__(self, hub: Gossip) -> None:
        self.hub = hub
        self.by_id: dict[str, SyncLink] = {}
        self.progress = asyncio.Event()
        """Set after every processed batch of frames (what waits for a condition use)."""
        self.background: set[asyncio.Task[Any]] = set()
        self._counter = 0

    def next_conn_id(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}-{self._counter}"

    def add(self, link: SyncLink) -> None:
        self.by_id[link.conn_id] = link

    def remove(self, link: SyncLink) -> None:
        self.by_id.pop(link.conn_id, None)

    def get(self, conn_id: str) -> SyncLink | None:
        return self.by_id.get(conn_id)

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run `coroutine` in the background, keeping a reference until it is done."""
        task = asyncio.ensure_future(coroutine)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def wake_all(self) -> None:
        """Wake the senders of the links that have something to send."""
        for conn_id, link in self.by_id.items():
            if self.hub.has_data_to_send(conn_id):
                link.wake.set()

    def server_links(self, name: str) -> list[SyncLink]:
        """The admitted links with the server `name`."""
        return [
            link
            for link in self.by_id.values()
            if link.peer_name == name and self.hub.peer(link.conn_id) is not None
        ]

    def connected_peers(self) -> list[str]:
        """Names of the servers this one has a live, authenticated link with."""
        return sorted(
            {
                link.peer_name
                for link in self.by_id.values()
                if link.peer_name is not None and self.hub.peer(link.conn_id) is not None
            }
        )

    def connections(self) -> Connections:
        links = [link for link in self.by_id.values() if not link.closing]
        return Connections(
            peers=self.connected_peers(),
            servers=sum(1 for link in links if link.peer_name is not None),
            repo_clients=sum(1 for link in links if link.admin is not None),
        )
