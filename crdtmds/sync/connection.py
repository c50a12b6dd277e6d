"""One peer connection of a server, as `crdtmds.sync.gossip.Gossip` tracks it: where its
handshake stands, the frames queued for it, the sync state of each document it follows,
and the sync frames it is sent about one document.

No I/O: the frames are bytes for the caller to send.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from automerge.core import Document, SyncState

from crdtmds.errors import ProtocolError
from crdtmds.sync.heads_summary import crafted_first_message
from crdtmds.sync.peers import PeerInfo
from crdtmds.sync.protocol import DocUnavailable, Error, Join, Request, Sync, encode
from crdtmds.sync.sync_message import (
    COUNT_MARGIN,
    split_sync_message,
    sync_message_has_changes,
    sync_message_heads,
    with_changes,
)


class ConnectionState(enum.Enum):
    AWAITING_JOIN = "awaiting-join"  # listener: nothing received yet
    AWAITING_ACCEPT = "awaiting-accept"  # listener: join received, the caller decides
    AWAITING_PEER = "awaiting-peer"  # dialer: join sent
    CONNECTED = "connected"
    CLOSED = "closed"


@dataclass(slots=True)
class DocLink:
    """The sync of one document over one connection."""

    sync_state: SyncState = field(default_factory=SyncState)
    heard_from_peer: bool = False
    requested_by_us: bool = False
    fresh: list[tuple[bytes, bytes]] = field(default_factory=list)
    """(hash, chunk) of our own new changes that the next message must carry
    (`Gossip.local_changes`)."""
    since: list[bytes] | None = None
    """Heads the peer and we last held alike: our first message starts from them
    (`heads_summary.crafted_first_message`)."""
    settled: bool = True
    """Whether the peer's last message named our heads (no sync in flight)."""

    def note_peer_heads(self, data: bytes, ours: list[bytes]) -> bool:
        """Note whether the peer's sync message `data` names our heads (then nothing of
        the document is in flight with it); returns that."""
        try:
            self.settled = sorted(sync_message_heads(data)) == sorted(ours)
        except ProtocolError:
            self.settled = False
        return self.settled


@dataclass(slots=True)
class Connection:
    conn_id: str
    dialer: bool
    local_metadata: dict[str, Any]
    state: ConnectionState
    peer: PeerInfo | None = None
    join: Join | None = None
    outbox: list[bytes] = field(default_factory=list)
    links: dict[str, DocLink] = field(default_factory=dict)
    dirty: dict[str, None] = field(default_factory=dict)  # an ordered set

    def link(self, document_id: str) -> DocLink:
        """The document's sync with this peer; having one means the peer follows it."""
        found = self.links.get(document_id)
        if found is None:
            found = self.links[document_id] = DocLink()
        return found

    @property
    def peer_info(self) -> PeerInfo:
        assert self.peer is not None, "a connected connection always has its PeerInfo"
        return self.peer

    @property
    def is_connected(self) -> bool:
        return self.state is ConnectionState.CONNECTED

    def should_sync(self, document_id: str) -> bool:
        """Whether the peer is sent the document: it may read it, and follows it or is a
        server (servers get every document they may read)."""
        peer = self.peer_info
        if not peer.may_read(document_id):
            return False
        return peer.is_server or document_id in self.links

    def is_warm(self) -> bool:
        """Whether the peer has sent a sync message about every document we sync with it."""
        return self.is_connected and all(link.heard_from_peer for link in self.links.values())

    def is_syncing(self, document_id: str) -> bool:
        """Whether the document waits to be sent to the peer, or the peer's last message
        about it did not name our heads."""
        link = self.links.get(document_id)
        return document_id in self.dirty or (link is not None and not link.settled)

    def check_document_count(self, document_id: str, limit: int) -> None:
        if document_id not in self.links and len(self.links) >= limit:
            raise ProtocolError(f"too many documents on one connection (the limit is {limit})")

    def close_with_error(self, message: str) -> None:
        """Queue an error frame and close: nothing from the peer is processed after it."""
        self.outbox.append(encode(Error(message=message)))
        self.state = ConnectionState.CLOSED
        self.dirty.clear()

    def answer_unavailable(self, local_peer_id: str, document_id: str) -> None:
        self.link(document_id)
        reply = DocUnavailable(
            sender_id=local_peer_id,
            target_id=self.peer_info.peer_id,
            document_id=document_id,
        )
        self.outbox.append(encode(reply))

    def sync_messages(
        self,
        is_held: Callable[[str], bool],
        get_document: Callable[[str], Document | None],
        *,
        local_peer_id: str,
        max_frame_size: int,
    ) -> list[bytes]:
        """The sync frames of every dirty document that is not held (a held one stays
        dirty until persisted)."""
        frames: list[bytes] = []
        for document_id in list(self.dirty):
            if is_held(document_id):
                continue
            del self.dirty[document_id]
            frames.extend(
                self.sync_frames(
                    document_id,
                    get_document,
                    local_peer_id=local_peer_id,
                    max_frame_size=max_frame_size,
                )
            )
        return frames

    def sync_frames(
        self,
        document_id: str,
        get_document: Callable[[str], Document | None],
        *,
        local_peer_id: str,
        max_frame_size: int,
    ) -> list[bytes]:
        """The frames of one sync message about the document, which `get_document` reads
        (none when there is nothing to say, several when it is larger than
        `max_frame_size`)."""
        peer = self.peer_info
        if not peer.may_read(document_id):
            return []
        link = self.link(document_id)
        doc = get_document(document_id)
        if doc is None:
            if not link.requested_by_us:
                return []
            doc = Document()  # an empty stand-in: a request says "I have nothing"
        data = _first_message_since(doc, link)
        if data is None:
            message = doc.generate_sync_message(link.sync_state)
            if message is None:
                link.fresh = []
                return []
            data = message.encode()
        fresh, link.fresh = link.fresh, []
        kind = Sync if link.heard_from_peer or doc.get_heads() else Request

        def frame(data: bytes) -> bytes:
            return encode(kind(local_peer_id, peer.peer_id, document_id, data))

        data = with_changes(data, fresh)
        if sync_message_has_changes(data):
            link.settled = False  # until the peer names the heads they lead to
        whole = frame(data)
        if len(whole) <= max_frame_size:
            return [whole]
        envelope = len(whole) - len(data) + COUNT_MARGIN  # the CBOR around the data
        parts = split_sync_message(data, max_frame_size - envelope, _all_changes_of(doc))
        return [frame(part) for part in parts]


def _first_message_since(doc: Document, link: DocLink) -> bytes | None:
    """The first message of a link seeded with heads both sides held alike; None for
    Automerge's own message. (Had we lost some of them, Automerge's reset and needs would
    still bring them back: a summary's digest rules that out first.)"""
    since, link.since = link.since, None
    if since is None or link.heard_from_peer:
        return None
    changes = [change.bytes for change in doc.get_changes(since)]
    return crafted_first_message(doc.get_heads(), since, changes)


def _all_changes_of(doc: Document) -> Callable[[], list[bytes]]:
    return lambda: [change.bytes for change in doc.get_changes([])]
