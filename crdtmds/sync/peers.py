"""What a node decided about the peer at the other end of a connection (`PeerInfo`), and
how a dialer sees the listener it reached unless told otherwise.

Shared by `crdtmds.sync.connection` and `crdtmds.sync.gossip` and by the node's network
side, which builds a `PeerInfo` when it admits a peer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from crdtmds.sync.protocol import Peer

__all__ = ["PeerInfo", "default_peer_info"]


def _read_anything(document_id: str) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """What the node decided about the peer at the other end of one connection."""

    peer_id: str
    metadata: dict[str, Any]
    may_write: bool
    """False for admin repo clients: a sync message of theirs that carries changes is
    refused with an error and the connection is closed."""
    may_read: Callable[[str], bool] = _read_anything
    """Which documents this peer may receive; others are answered with doc-unavailable."""
    is_server: bool = False
    """Servers are sent every document they may read; other peers only the documents
    they were announced at connect time or have asked about."""


def default_peer_info(peer: Peer) -> PeerInfo:
    """How a dialer sees the listener that answered its join, unless told otherwise.

    A listener is trusted to write and to read everything (we chose to dial it); it is a
    server when its metadata carries a ``role`` (servers announce "primary" or
    "secondary").
    """
    metadata = dict(peer.peer_metadata or {})
    return PeerInfo(
        peer_id=peer.sender_id,
        metadata=metadata,
        may_write=True,
        may_read=_read_anything,
        is_server="role" in metadata,
    )
