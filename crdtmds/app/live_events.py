"""Live updates of the documents, for watchers such as the console's event stream.

`LiveEvents` listens to `Documents.on_updated` (every persisted change, made here or
received from a peer) and hands each subscriber the documents updated since it last
looked. Updates are coalesced per document (the latest wins), so a slow watcher holds
at most one pending update per document and never slows the server down::

    subscription = events.subscribe(lambda document_id: document_id == mine)
    updates = await subscription.next(timeout=15.0)   # [] after the timeout
    ...
    subscription.close()
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from crdtmds.app.documents import Documents


@dataclass(frozen=True, slots=True)
class DocumentUpdate:
    """A document changed: where the change came from ("here" or "peer"), and when
    (wall-clock seconds)."""

    document_id: str
    origin: str
    at: float


class Subscription:
    """One watcher's pending updates, for the documents it wants."""

    def __init__(self, owner: LiveEvents, wanted: Callable[[str], bool]) -> None:
        self._owner = owner
        self.wanted = wanted
        self._pending: dict[str, DocumentUpdate] = {}
        self._wake = asyncio.Event()
        self.closed = False

    def offer(self, update: DocumentUpdate) -> None:
        if not self.closed and self.wanted(update.document_id):
            self._pending.pop(update.document_id, None)
            self._pending[update.document_id] = update
            self._wake.set()

    async def next(self, timeout: float) -> list[DocumentUpdate]:
        """The updates pending now, waiting up to `timeout` seconds for one; [] when
        none came or the subscription was closed."""
        if not self._pending and not self.closed:
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass
        self._wake.clear()
        updates = list(self._pending.values())
        self._pending.clear()
        return updates

    def close(self) -> None:
        """Stop receiving; a pending `next` returns at once."""
        if not self.closed:
            self.closed = True
            self._owner.subscriptions.discard(self)
            self._wake.set()


class LiveEvents:
    """The subscriptions of one server to its documents' updates."""

    def __init__(self, documents: Documents, clock: Callable[[], float] = time.time) -> None:
        self.subscriptions: set[Subscription] = set()
        self.clock = clock
        documents.on_updated(self._updated)

    def subscribe(self, wanted: Callable[[str], bool]) -> Subscription:
        subscription = Subscription(self, wanted)
        self.subscriptions.add(subscription)
        return subscription

    def close_all(self) -> None:
        for subscription in list(self.subscriptions):
            subscription.close()

    def _updated(self, document_id: str, origin: str) -> None:
        update = DocumentUpdate(document_id, origin, self.clock())
        for subscription in list(self.subscriptions):
            subscription.offer(update)
