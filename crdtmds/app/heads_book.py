"""What a server knows of heads without loading documents, kept in SQLite: each domain's
heads when it leaves memory, and per peer server the heads both last held alike. It is
the `crdtmds.sync.heads_summary.HeadsSource` of the gossip hub.

Records are written in batches (`flush`, called now and then and at stop), not with
every change: a record lost in a crash only makes a domain look changed, and a changed
domain is synced; it never makes a changed domain look idle (see `heads_summary`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping

from crdtmds.app.documents import Documents
from crdtmds.errors import StorageError
from crdtmds.storage import Storage

log = logging.getLogger("crdtmds.heads")

CLUSTER_PLAIN_KEY = "cluster-plain"
"""The storage meta key of the cluster document as read at the last stop."""


class HeadsBook:
    """Heads of unloaded domains and per-peer agreed heads, and their storage."""

    def __init__(
        self, documents: Documents, storage: Storage, is_busy: Callable[[str], bool]
    ) -> None:
        self.documents = documents
        self.storage = storage
        self._is_busy = is_busy
        self._agreed: dict[str, dict[str, list[bytes]]] = {}
        self._unsaved_agreed: set[tuple[str, str]] = set()
        self._unsaved_heads: dict[str, list[bytes]] = {}
        self._flusher: asyncio.Task[None] | None = None
        documents.on_unloaded(self._unloaded)

    async def load(self) -> None:
        """The agreed heads of every peer, and the cluster document as read at the last
        stop when it has not changed since."""
        self._agreed = await self.storage.heads.load_peer_heads()
        kept = await self.storage.get_meta(CLUSTER_PLAIN_KEY)
        if isinstance(kept, dict) and isinstance(kept.get("plain"), dict):
            heads = [bytes.fromhex(h) for h in kept.get("heads", [])]
            self.documents.cluster.adopt_plain(heads, kept["plain"])

    async def save_cluster_plain(self) -> None:
        """Keep the cluster document as read now, for the next start (see `load`)."""
        cluster = self.documents.cluster
        plain = cluster.plain()
        if json.loads(json.dumps(plain)) == plain:  # kept only if JSON gives it back whole
            heads = sorted(h.hex() for h in cluster.doc.get_heads())
            await self.storage.set_meta(CLUSTER_PLAIN_KEY, {"heads": heads, "plain": plain})

    # ------------------------------------------------------------ HeadsSource

    def domain_ids(self) -> Iterable[str]:
        return self.documents.domain_ids()

    def holds(self, document_id: str) -> bool:
        return self.documents.holds(document_id)

    def heads_of(self, document_id: str) -> list[bytes] | None:
        return self.documents.heads_of(document_id)

    def agreed(self, peer_key: str) -> Mapping[str, list[bytes]]:
        return self._agreed.get(peer_key, {})

    def record_agreed(self, peer_key: str, document_id: str, heads: list[bytes]) -> None:
        records = self._agreed.setdefault(peer_key, {})
        if records.get(document_id) != heads:
            records[document_id] = list(heads)
            self._unsaved_agreed.add((peer_key, document_id))

    # ------------------------------------------------------------ storage

    def _unloaded(self, document_id: str, heads: list[bytes]) -> None:
        self._unsaved_heads[document_id] = heads

    async def save_loaded_heads(self) -> None:
        """Record the heads of every loaded domain whose changes are all stored (at stop:
        the next start then knows them without a load)."""
        heads = {
            domain.document_id: domain.heads()
            for domain in self.documents.loaded_domains()
            if not self._is_busy(domain.document_id)
        }
        await self.storage.heads.save_document_heads({d: h for d, h in heads.items() if h})

    def start_flushing(self, interval: float) -> None:
        """Flush every `interval` seconds until `close`."""
        self._flusher = asyncio.get_running_loop().create_task(self._flush_every(interval))

    async def close(self) -> None:
        """Stop flushing; record the heads of the loaded domains, and flush."""
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        with contextlib.suppress(StorageError):
            await self.save_loaded_heads()
            await self.flush()
            await self.save_cluster_plain()

    async def _flush_every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.flush()

    async def flush(self) -> None:
        """Write the records not yet stored; a failure is logged and they are kept.
        Heads of a domain loaded again since it left memory are not written: it may have
        changed since (it is recorded again when it next leaves)."""
        pending, self._unsaved_heads = self._unsaved_heads, {}
        heads = {d: h for d, h in pending.items() if not self.documents.is_loaded(d)}
        rows = [
            (peer, doc_id, self._agreed[peer][doc_id])
            for peer, doc_id in self._unsaved_agreed
            if doc_id in self._agreed.get(peer, {})
        ]
        self._unsaved_agreed = set()
        try:
            await self.storage.heads.save_document_heads(heads)
            await self.storage.heads.save_peer_heads(rows)
        except StorageError as exc:
            log.warning("recording heads failed (will retry): %s", exc)
            self._unsaved_heads = {**heads, **self._unsaved_heads}
            self._unsaved_agreed |= {(peer, doc_id) for peer, doc_id, _ in rows}
