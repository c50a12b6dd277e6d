"""Drives one sync link: moves frames between its WebSocket and the gossip hub.

A reader task takes frames off the socket; they are applied to the hub in batches, and
what a batch changed is persisted (one write per document) before the hub may forward
it. A sender task is the only writer of the socket: it sends whatever the hub has for
the link whenever woken, and closes the socket once the hub has closed the link.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from websockets.exceptions import ConnectionClosed, ConnectionClosedOK
from websockets.frames import CloseCode

from crdtmds.app.persistence import Persister
from crdtmds.config import Limits
from crdtmds.errors import CrdtmdsError, StorageError, size_text
from crdtmds.net.admission import Admission
from crdtmds.net.links import Links, SyncLink
from crdtmds.net.relays import Relays
from crdtmds.net.urls import format_address
from crdtmds.sync.gossip import (
    ConnectionFailed,
    DocumentChanged,
    DocumentUnavailableFromPeer,
    Event,
    Gossip,
    JoinReceived,
    PeerConnected,
)

log = logging.getLogger("crdtmds.net")

CLOSE_TIMEOUT = 2.0
"""Seconds a closing link waits for its last frames to go out."""
RECEIVE_QUEUE_FRAMES = 256
"""Frames read ahead per link while the previous batch is being persisted."""
MAX_CLOSE_REASON = 120


@dataclass(slots=True)
class LinkHooks:
    """What the rest of the server learns from links, handed in by whoever wires them."""

    on_peer_connected: Callable[[SyncLink], None] = lambda link: None
    """A server's link is admitted (the mesh drops duplicate links)."""
    on_frame: Callable[[bytes], None] | None = None
    """Every frame received, before it is applied (a joining server notes heads)."""
    on_storage_failure: Callable[[BaseException], None] = lambda exc: None
    """The disk failed under a received change: the server must stop."""
    running: Callable[[], bool] = lambda: True
    oversize_reported: set[str] = field(default_factory=set)
    """Peers whose links failed for a frame over a size limit, reported once until a link
    with them ends normally."""


class LinkDriver:
    """Runs sync links against the hub; one instance serves every link of a server."""

    def __init__(
        self,
        hub: Gossip,
        links: Links,
        persister: Persister,
        admission: Admission,
        relays: Relays,
        limits: Limits,
        hooks: LinkHooks,
    ) -> None:
        self.hub = hub
        self.links = links
        self.persister = persister
        self.admission = admission
        self.relays = relays
        self.limits = limits
        self.hooks = hooks

    async def run(self, link: SyncLink) -> None:
        """Drive one link until it closes: a reader here, a sender task."""
        hub = self.hub
        metadata = self.admission.dialer_metadata(link) if link.outgoing else {}
        hub.open_connection(link.conn_id, dialer=link.outgoing, local_metadata=metadata)
        self.links.add(link)
        sender = asyncio.create_task(self._send_loop(link), name=f"send {link.conn_id}")
        link.wake.set()
        try:
            await self._receive_loop(link)
            if hub.is_closed(link.conn_id):
                link.wake.set()  # the sender flushes the error frame, then closes
                with contextlib.suppress(TimeoutError, ConnectionClosed):
                    await asyncio.wait_for(asyncio.shield(sender), CLOSE_TIMEOUT)
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            self.links.remove(link)
            self.admission.forget(link)
            hub.close_connection(link.conn_id)
            if link.peer_name is not None:
                log.info("disconnected from %s", link.describe())
                if link.failure is None:
                    self.hooks.oversize_reported.discard(link.peer_name)

    # ------------------------------------------------------------ receiving

    async def _receive_loop(self, link: SyncLink) -> None:
        """Apply the peer's frames in batches: everything that arrived while the previous
        batch was being persisted goes to disk in one write per document, then the
        senders get to forward it before the next batch holds the documents again."""
        frames: asyncio.Queue[str | bytes | None] = asyncio.Queue(RECEIVE_QUEUE_FRAMES)
        reader = asyncio.create_task(self._read_frames(link, frames), name=f"read {link.conn_id}")
        try:
            while not (reader.done() and frames.empty()):
                batch = [await frames.get()]
                while not frames.empty():
                    batch.append(frames.get_nowait())
                if not await self._apply_frames(link, batch):
                    return
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _read_frames(self, link: SyncLink, frames: asyncio.Queue[str | bytes | None]) -> None:
        """Move the link's frames into `frames`; None marks its end."""
        try:
            async for frame in self._frames(link):
                await frames.put(frame)
        except ConnectionClosed as exc:
            self._note_close(link, exc)
        finally:
            # The end mark; if the queue is full the receiver sees this task done instead.
            with contextlib.suppress(asyncio.QueueFull):
                frames.put_nowait(None)

    async def _frames(self, link: SyncLink) -> AsyncIterator[str | bytes]:
        """The frames of a link until it closes. A peer that dialed us must be admitted
        within the handshake timeout, whatever it sends meanwhile."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.handshake_timeout
        # Once the hub has closed the link nothing more is read: the sender closes the
        # socket at once instead of waiting for the peer or the admission deadline.
        while not self.hub.is_closed(link.conn_id):
            try:
                if link.outgoing or self.hub.peer(link.conn_id) is not None:
                    yield await link.ws.recv()
                else:
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows the
                    # cancellation of a reader whose frame arrived at the same moment,
                    # which left the socket open until the deadline.
                    async with asyncio.timeout_at(deadline):
                        frame = await link.ws.recv()
                    yield frame
            except ConnectionClosedOK:
                return
            except TimeoutError:
                message = f"not admitted within {self.limits.handshake_timeout:g} s"
                log.warning("closing %s: %s", link.describe(), message)
                link.failure = message
                self.hub.reject(link.conn_id, message)
                return

    async def _apply_frames(self, link: SyncLink, batch: list[str | bytes | None]) -> bool:
        """Apply a batch of frames; False once the link is over."""
        changes = _BatchChanges()
        going_on = True
        for frame in batch:
            if frame is None or not await self._apply_frame(link, frame, changes):
                going_on = False
                break
        relay_later = bool(changes.before) and self.relays.can_wait()
        for document_id, before_heads in changes.before.items():
            await self._persist_from_peer(
                document_id,
                before_heads,
                changes.chunks[document_id],
                changes.counts[document_id],
                relay_later,
            )
        self.relays.schedule()
        self.links.wake_all()
        self.links.progress.set()
        # Let the woken senders forward what was just persisted before the next batch.
        await asyncio.sleep(0)
        return going_on and not self.hub.is_closed(link.conn_id)

    async def _apply_frame(self, link: SyncLink, frame: str | bytes, into: _BatchChanges) -> bool:
        """Apply one frame, noting the documents it changed; False once the link is over."""
        if isinstance(frame, str):
            message = "text frames are not part of the automerge-repo protocol"
            log.warning("closing %s: %s", link.describe(), message)
            link.failure = message
            self.hub.reject(link.conn_id, message)
            return False
        if self.hooks.on_frame is not None:
            self.hooks.on_frame(frame)
        try:
            events = self.hub.receive(link.conn_id, frame)
        except StorageError as exc:  # a domain loaded on first use is damaged
            self.hooks.on_storage_failure(exc)
            return False
        for event in events:
            if isinstance(event, DocumentChanged):
                into.note(event)
            else:
                await self._handle_event(link, event)
        return not self.hub.is_closed(link.conn_id)

    async def _handle_event(self, link: SyncLink, event: Event) -> None:
        match event:
            case JoinReceived():
                await self._admit(link, event)
            case PeerConnected():
                link.peer_name = str(event.peer.metadata.get("server"))
                log.info("connected to %s", link.describe())
                self.hooks.on_peer_connected(link)
            case DocumentUnavailableFromPeer():
                log.debug("%s does not have %s", link.describe(), event.document_id)
            case ConnectionFailed():
                link.failure = event.message
                log.warning("closing %s: %r", link.describe(), event.message)

    async def _admit(self, link: SyncLink, event: JoinReceived) -> None:
        """Accept or refuse the peer whose join arrived on a link dialed to us."""
        try:
            info, reply = await self.admission.admit(link, event.join)
        except CrdtmdsError as exc:
            log.warning("refused %s: %r", link.describe(), exc.message)
            link.failure = exc.message
            self.hub.reject(link.conn_id, exc.message)
            return
        self.hub.accept(link.conn_id, info, reply)
        log.info("accepted %s", link.describe())
        if link.peer_name is not None:
            self.hooks.on_peer_connected(link)

    async def _persist_from_peer(
        self,
        document_id: str,
        before_heads: list[bytes],
        chunks: list[bytes],
        events: int,
        relay_later: bool,
    ) -> None:
        """Persist, then let the hub forward. If the disk fails the document stays held:
        nothing that is not on disk here leaves this server."""
        try:
            await self.persister.persist_received(document_id, before_heads, chunks)
        except StorageError as exc:
            if self.hooks.running():  # else the storage closed under a shutdown
                self.hooks.on_storage_failure(exc)
            return
        for _ in range(events):
            self.hub.persisted(document_id, relay_later=relay_later)

    # ------------------------------------------------------------ sending and closing

    async def _send_loop(self, link: SyncLink) -> None:
        """The only writer of the socket: what the hub has to send, whenever woken."""
        hub = self.hub
        while True:
            await link.wake.wait()
            link.wake.clear()
            try:
                frames = hub.data_to_send(link.conn_id)
            except StorageError as exc:  # a domain loaded on first use is damaged
                self.hooks.on_storage_failure(exc)
                return
            for frame in frames:
                await link.ws.send(frame)
            if hub.is_closed(link.conn_id):
                reason = _close_reason(link.failure)
                code = CloseCode.POLICY_VIOLATION if link.failure else CloseCode.NORMAL_CLOSURE
                await link.ws.close(code, reason)
                return

    def _note_close(self, link: SyncLink, exc: ConnectionClosed) -> None:
        """Log why the socket closed. A frame over either side's size limit will be over it
        again on the next link: that link failed (its dialer backs off), and is reported
        once per peer rather than at every redial."""
        oversize = self._oversize_failure(exc)
        if oversize is None:
            log.log(_close_log_level(exc), "connection %s closed: %r", link.describe(), str(exc))
            return
        link.failure = oversize
        who = link.peer_name or link.target or format_address(link.ws.remote_address)
        reported = self.hooks.oversize_reported
        level = logging.DEBUG if who in reported else logging.WARNING
        reported.add(who)
        retry = "; redialing with backoff" if link.outgoing else ""
        log.log(level, "link %s failed: %s%s", link.describe(), oversize, retry)

    def _oversize_failure(self, exc: ConnectionClosed) -> str | None:
        """What a close for a frame over the size limit means, or None for other closes."""
        we_closed = exc.sent is not None and not exc.rcvd_then_sent
        first = exc.sent if we_closed else exc.rcvd
        if first is None or first.code != CloseCode.MESSAGE_TOO_BIG:
            return None
        if we_closed:
            limit = size_text(self.limits.max_message_size)
            return f"it sent a message over this server's limit of {limit} (--max-message-size)"
        reason = first.reason or "message too large"
        return f"it refused a message of ours ({reason!r}; see its --max-message-size)"


@dataclass(slots=True)
class _BatchChanges:
    """What one batch of frames changed, per document."""

    before: dict[str, list[bytes]] = field(default_factory=dict)
    """Heads before the batch's first change of each document."""
    chunks: dict[str, list[bytes]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def note(self, event: DocumentChanged) -> None:
        document_id = event.document_id
        self.before.setdefault(document_id, event.before_heads)
        self.chunks.setdefault(document_id, []).extend(event.chunks)
        self.counts[document_id] = self.counts.get(document_id, 0) + 1


def _close_log_level(exc: ConnectionClosed) -> int:
    """INFO for a normal close or a server going away, WARNING for anything else (a frame
    too big, a network failure)."""
    frame = exc.rcvd or exc.sent
    normal = frame is not None and frame.code in (CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY)
    return logging.INFO if normal else logging.WARNING


def _close_reason(message: str | None) -> str:
    """A WebSocket close reason (at most 123 bytes of UTF-8)."""
    reason = (message or "").encode()[:MAX_CLOSE_REASON]
    return reason.decode("utf-8", "ignore")
