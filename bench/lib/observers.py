"""Watching servers from this process: which changes of a document each server holds, and
since when, over one automerge-repo connection per server.

Two kinds of observer (`--observer`): a `GraphPeer` keeps only the change graph (what
the benchmarks use by default: a few microseconds per change), a plain `SyncPeer` applies
every change to an Automerge document, at a CPU cost that grows with the document's
history and is taken from the servers on the same machine. A `GraphPeer` also writes
changes built beforehand, so the benchmarks' writers are `GraphPeer`s too.

Both run on `lib.sync_peer.SyncPeer`, the benchmarks' own sync link loop.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from lib.change_graph import ChangeGraph, GraphSync, Offer
from lib.sync_peer import MemoryDocuments, SyncPeer
from lib.timing import now


class GraphPeer(SyncPeer):
    """A `SyncPeer` that keeps only the change graph of the documents it requests.

    The handshake and every other document go through `Gossip` as in `SyncPeer` (with no
    documents of its own); sync messages about a requested document go to its
    `GraphSync`, whose `graph.arrived` says when each change got here and whose
    `graph.heads` what the server holds.
    """

    def __init__(
        self,
        url: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        query: str = "",
        name: str = "bench-observer",
    ) -> None:
        super().__init__(url, MemoryDocuments(), metadata=metadata, query=query, name=name)
        self.syncs: dict[str, GraphSync] = {}

    def graph(self, document_id: str) -> ChangeGraph:
        return self.syncs[document_id].graph

    def holds(self, document_id: str, heads: Sequence[bytes]) -> bool:
        """Whether the server sent us exactly the changes up to `heads`."""
        sync = self.syncs.get(document_id)
        return sync is not None and sync.graph.heads == set(heads)

    def request(self, document_id: str) -> None:
        """Follow a document: ask the server for it (after `start`)."""
        sync = self.syncs.setdefault(document_id, GraphSync())
        self._answer(document_id, sync)

    def prepare(self, document_id: str, batches: Iterable[Sequence[bytes]]) -> list[Offer]:
        """Offers of the change chunks in `batches` (see `GraphSync.prepare`), each wrapped
        in its `sync` envelope for this connection (after `start`)."""
        from crdtmds.sync.protocol import Sync, encode

        peer = self.gossip.peer(self._conn)
        if peer is None:
            raise RuntimeError(f"{self.url}: no peer to write to")
        sync = self.syncs.setdefault(document_id, GraphSync())
        return [
            replace(offer, frame=encode(Sync(self.peer_id, peer.peer_id, document_id, offer.data)))
            for offer in sync.prepare(batches)
        ]

    def write(self, document_id: str, offer: Offer) -> None:
        """Send one prepared offer (after the ones prepared before it)."""
        self.syncs[document_id].take(offer, now())
        self._send(offer.frame)

    async def stream(self, document_id: str, offers: Sequence[Offer]) -> None:
        """Send prepared offers one by one, yielding to the event loop after each, and
        return once every one has been handed to the socket."""
        for offer in offers:
            self.write(document_id, offer)
            await asyncio.sleep(0)
        await self.flushed()

    def _answer(self, document_id: str, sync: GraphSync) -> None:
        from crdtmds.sync.protocol import Request, Sync, encode

        data = sync.generate()
        peer = self.gossip.peer(self._conn)
        if data is None or peer is None:
            return
        kind = Sync if sync.heard or sync.graph.heads else Request
        self._send(encode(kind(self.peer_id, peer.peer_id, document_id, data)))

    def _receive(self, frame: bytes, message: Any, arrived: float) -> None:
        from crdtmds.sync.protocol import DocUnavailable, Request, Sync

        sync = self.syncs.get(getattr(message, "document_id", ""))
        if sync is None:
            super()._receive(frame, message, arrived)
        elif isinstance(message, Sync | Request):
            sync.receive(message.data, arrived)
            self.announced_heads[message.document_id] = sync.their_heads or []
            self._answer(message.document_id, sync)
        elif not isinstance(message, DocUnavailable):  # not there yet: it comes when it does
            super()._receive(frame, message, arrived)


OBSERVER_KINDS = ("graph", "document")


def add_observer_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--observer",
        choices=OBSERVER_KINDS,
        default="graph",
        help="what each observer keeps: the change graph (default) or a whole document",
    )


def observer_peer(
    kind: str,
    url: str,
    document_id: str,
    *,
    metadata: Mapping[str, Any] | None = None,
    query: str = "",
    name: str = "bench-observer",
) -> SyncPeer:
    """A peer that watches `document_id` on `url`, not started: a `GraphPeer` ("graph",
    the change graph only) or a `SyncPeer` applying every change to an Automerge document
    ("document"), whose CPU cost grows with the document's history."""
    if kind == "graph":
        return GraphPeer(url, metadata=metadata, query=query, name=name)
    store = MemoryDocuments(accept={document_id})
    return SyncPeer(url, store, metadata=metadata, query=query, name=name)


async def start_observer(
    kind: str,
    url: str,
    document_id: str,
    *,
    metadata: Mapping[str, Any] | None = None,
    query: str = "",
    name: str = "bench-observer",
) -> SyncPeer:
    """An observer of `kind` (see `observer_peer`), connected and following `document_id`.

    It returns right after asking for the document, without yielding to the event loop,
    so the caller can set up its recording (`arrival_times`) before anything arrives.
    """
    observer = observer_peer(kind, url, document_id, metadata=metadata, query=query, name=name)
    await observer.start()
    observer.request(document_id)
    return observer


def arrival_times(observer: SyncPeer, document_id: str) -> dict[bytes, float]:
    """Change hash -> when it reached the observer's server, filled in as changes arrive:
    when its sync message arrived (`GraphPeer`) or when it was applied (document)."""
    if isinstance(observer, GraphPeer):
        return observer.graph(document_id).arrived
    seen: dict[bytes, float] = {}
    store = observer.store

    def record(changed_id: str, before_heads: list[bytes]) -> None:
        arrived = now()
        for change in store.docs[changed_id].get_changes(before_heads):
            seen.setdefault(change.hash, arrived)

    observer.on_changed = record
    return seen


def observer_holds(observer: SyncPeer, document_id: str, heads: Sequence[bytes]) -> bool:
    """Whether the observer's server has sent it exactly the changes up to `heads`."""
    if isinstance(observer, GraphPeer):
        return observer.holds(document_id, heads)
    doc = observer.store.docs.get(document_id)
    return doc is not None and sorted(doc.get_heads()) == sorted(heads)
