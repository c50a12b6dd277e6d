"""A joining server's catch-up: with a link to the peer it joins through, wait until the
cluster document and every domain hold what the peer announced, then register this
server in the cluster document."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from crdtmds.app.cluster_admin import ClusterAdmin
from crdtmds.app.documents import Documents
from crdtmds.errors import ClusterError, NameInUse, ProtocolError
from crdtmds.sync.protocol import Request, Sync, decode
from crdtmds.sync.sync_message import sync_message_heads

log = logging.getLogger("crdtmds.net")

JOIN_TIMEOUT = 60.0
REGISTRATION_TIMEOUT = 5.0


class CatchUp:
    """What the peer announced, per document, and the waits of a join."""

    def __init__(
        self,
        documents: Documents,
        cluster_admin: ClusterAdmin,
        progress: asyncio.Event,
        server_name: str,
        max_message_size: int,
    ) -> None:
        self.documents = documents
        self.cluster_admin = cluster_admin
        self.progress = progress
        """Set by the links after every batch of frames."""
        self.server_name = server_name
        self.max_message_size = max_message_size
        self.peer_heads: dict[str, list[bytes]] = {}
        """The latest heads the peer announced, per document."""

    def note_frame(self, frame: bytes) -> None:
        """Every frame from the peer: remember the heads its sync messages announce."""
        try:
            message = decode(frame, max_size=self.max_message_size)
        except ProtocolError:
            return
        if isinstance(message, Sync | Request):
            try:
                heads = sync_message_heads(message.data)
            except ProtocolError:
                return
            if heads is not None:
                self.peer_heads[message.document_id] = heads

    async def fetch(self, timeout: float = JOIN_TIMEOUT, *, replace: bool = False) -> None:
        """Wait until every document matches the peer, then register this server (with
        `replace`, in place of the server listed under its name)."""
        await self._wait_for(self._caught_up, timeout, "the cluster document and every domain")
        if replace:
            await self.cluster_admin.replace_listed_self()
        elif self.server_name in self.documents.cluster.servers():
            raise NameInUse(
                f"the cluster already has a server named '{self.server_name}' "
                "(to replace a server that lost its data: join --replace)",
                details={"name": self.server_name},
            )
        await self.cluster_admin.register_self()
        try:
            await self._wait_for(
                self._peer_has_our_cluster_heads, REGISTRATION_TIMEOUT, "the registration"
            )
        except ClusterError:
            log.warning("the peer has not confirmed the registration; it will follow on start")

    def _caught_up(self) -> bool:
        documents = self.documents
        if not documents.cluster.is_ready():
            return False
        for document_id in (documents.cluster.document_id, *documents.listed_domain_ids()):
            doc = documents.document(document_id)
            theirs = self.peer_heads.get(document_id)
            if doc is None or theirs is None or sorted(doc.get_heads()) != sorted(theirs):
                return False
        return True

    def _peer_has_our_cluster_heads(self) -> bool:
        cluster = self.documents.cluster
        theirs = self.peer_heads.get(cluster.document_id)
        return theirs is not None and sorted(theirs) == sorted(cluster.doc.get_heads())

    async def _wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self.progress.clear()
            if condition():
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ClusterError(f"timed out after {timeout:.0f} s waiting for {what}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.progress.wait(), min(remaining, 0.5))
