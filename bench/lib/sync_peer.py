"""`SyncPeer`: the benchmarks' own sync link loop, one automerge-repo connection from this
process to a server's ``/sync`` endpoint over a WebSocket.

The protocol work is the servers' own sans-I/O engine (`crdtmds.sync.gossip.Gossip`);
`SyncPeer` only runs the loop around it: dial, hand received frames to the engine, send
what it has to send (and frames of a subclass's own, see `observers.GraphPeer`), and
record when frames arrived and what they cost this process. The servers' link driver
could not be reused for this. When the crdtmds library has a sync link of its own, this
loop is the part to replace with it; `MemoryDocuments` is the document store it needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lib.timing import now

MAX_FRAME = 256 * 1024 * 1024
"""Frame size limit of the benchmark's own WebSocket peers (a whole domain may be one)."""


class MemoryDocuments:
    """Live documents of an in-process peer (the `DocumentStore` that `Gossip` needs)."""

    def __init__(
        self, docs: Mapping[str, Any] | None = None, *, accept: bool | set[str] = False
    ) -> None:
        self.docs: dict[str, Any] = dict(docs or {})
        self.accept = accept
        """True: take any document a peer offers; a set: take only those ids."""

    def get_document(self, document_id: str) -> Any:
        return self.docs.get(document_id)

    def accept_document(self, document_id: str, peer: Any) -> Any:
        wanted = self.accept if isinstance(self.accept, bool) else document_id in self.accept
        if not wanted:
            return None
        from automerge.core import Document

        doc = self.docs[document_id] = Document()
        return doc

    def shared_documents(self, peer: Any) -> list[str]:
        return list(self.docs)


class SyncPeer:
    """One automerge-repo connection from this process to a server's /sync endpoint.

    The protocol work is `crdtmds.sync.gossip.Gossip` (the servers' own sans-I/O engine); this
    class only moves its frames over a WebSocket. Received changes are applied to the
    documents of `store`; `on_changed(document_id, before_heads)` is called for each
    batch. The heads the server announces in its sync messages are kept in
    `announced_heads`, so a caller can tell when the server holds everything.
    `handling_cpu` is the CPU time this process spent on the received frames.
    """

    def __init__(
        self,
        url: str,
        store: MemoryDocuments,
        *,
        metadata: Mapping[str, Any] | None = None,
        query: str = "",
        name: str = "bench-peer",
        on_changed: Callable[[str, list[bytes]], None] | None = None,
    ) -> None:
        from crdtmds.sync.gossip import Gossip

        self.url = url.rstrip("/") + "/sync" + (f"?{query}" if query else "")
        self.store = store
        self.metadata = dict(metadata or {"isEphemeral": True})
        self.peer_id = f"{name}-{random.randrange(1 << 32):08x}"
        self.gossip = Gossip(self.peer_id, store, max_message_size=MAX_FRAME)
        self.on_changed = on_changed
        self.announced_heads: dict[str, list[bytes]] = {}
        self.frames_received = 0
        self.bytes_received = 0
        self.handling_cpu = 0.0
        self.progress = asyncio.Event()
        self._conn = "c"
        self._ws: Any = None
        self._outbox: list[bytes] = []
        """Frames of our own, sent after the engine's."""
        self._wake = asyncio.Event()
        self._queued = 0
        self._sent = 0
        """Frames of our own queued and handed to the socket."""
        self._sent_event = asyncio.Event()
        self._connected = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.failure: str | None = None

    async def start(self, timeout: float = 30.0) -> SyncPeer:
        from websockets.asyncio.client import connect

        self._ws = await connect(
            self.url, proxy=None, max_size=MAX_FRAME, compression=None, open_timeout=timeout
        )
        self.gossip.open_connection(self._conn, dialer=True, local_metadata=self.metadata)
        self._tasks = [
            asyncio.create_task(self._send_loop()),
            asyncio.create_task(self._receive_loop()),
        ]
        self._wake.set()
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            await self.close()
            raise TimeoutError(
                f"no automerge-repo handshake with {self.url} in {timeout} s ({self.failure})"
            ) from None
        return self

    def request(self, document_id: str) -> None:
        """Ask the server for a document (a repo client must, to be sent it)."""
        self.gossip.request_document(self._conn, document_id)
        self._wake.set()

    def document_changed(self, document_id: str) -> None:
        """A local change to one of `store`'s documents: offer it to the server."""
        self.gossip.document_changed(document_id)
        self._wake.set()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), 2)

    async def flushed(self) -> None:
        """Return once every frame of ours queued so far has been handed to the socket."""
        target = self._queued
        while self._sent < target and self.failure is None:
            self._sent_event.clear()
            await self._sent_event.wait()

    def _send(self, frame: bytes) -> None:
        self._outbox.append(frame)
        self._queued += 1
        self._wake.set()

    async def _send_loop(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                own, self._outbox = self._outbox, []
                for frame in self.gossip.data_to_send(self._conn) + own:
                    await self._ws.send(frame)
                self._sent += len(own)
                self._sent_event.set()
        except Exception as exc:  # a closed socket ends the peer; the caller sees `failure`
            self.failure = self.failure or f"{type(exc).__name__}: {exc}"
            self._sent_event.set()
            self.progress.set()

    async def _receive_loop(self) -> None:
        from crdtmds.sync.protocol import decode

        try:
            async for frame in self._ws:
                arrived = now()
                cpu_start = time.thread_time()
                self.frames_received += 1
                self.bytes_received += len(frame)
                self._receive(frame, decode(frame, max_size=MAX_FRAME), arrived)
                self._wake.set()
                self.progress.set()
                self.handling_cpu += time.thread_time() - cpu_start
        except Exception as exc:  # a closed socket ends the peer; the caller sees `failure`
            self.failure = self.failure or f"{type(exc).__name__}: {exc}"
            self.progress.set()

    def _receive(self, frame: bytes, message: Any, arrived: float) -> None:
        """Hand one frame (decoded as `message`, received at `arrived`) to the engine."""
        from crdtmds.sync.gossip import ConnectionFailed, DocumentChanged, PeerConnected
        from crdtmds.sync.protocol import Request, Sync
        from crdtmds.sync.sync_message import sync_message_heads

        if isinstance(message, Sync | Request):
            heads = sync_message_heads(message.data)
            if heads is not None:
                self.announced_heads[message.document_id] = heads
        for event in self.gossip.receive(self._conn, frame):
            if isinstance(event, PeerConnected):
                self._connected.set()
            elif isinstance(event, DocumentChanged):
                if self.on_changed is not None:
                    self.on_changed(event.document_id, event.before_heads)
                self.gossip.persisted(event.document_id)
            elif isinstance(event, ConnectionFailed):
                self.failure = event.message

    def server_has(self, document_id: str, heads: Sequence[bytes]) -> bool:
        """Whether the server's latest announced heads for the document are `heads`."""
        return sorted(self.announced_heads.get(document_id, [])) == sorted(heads)
