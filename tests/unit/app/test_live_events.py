"""`LiveEvents`: every update of a wanted document reaches each subscriber, coalesced per
document (the latest wins), and closing a subscription ends its wait at once."""

from __future__ import annotations

import asyncio

from crdtmds.app.documents import Documents
from crdtmds.app.live_events import LiveEvents


def events() -> tuple[Documents, LiveEvents]:
    documents = Documents("cluster-doc")
    times = iter(range(100))
    return documents, LiveEvents(documents, clock=lambda: float(next(times)))


async def test_updates_are_coalesced_per_document_and_filtered() -> None:
    documents, live = events()
    mine = live.subscribe(lambda doc_id: doc_id != "other")
    documents.received("a")
    documents.changed("b")
    documents.received("b")  # the latest of b wins
    documents.received("other")
    updates = await mine.next(timeout=1.0)
    assert [(u.document_id, u.origin, u.at) for u in updates] == [("a", "peer", 0.0),
                                                                  ("b", "peer", 2.0)]  # fmt: skip
    assert await mine.next(timeout=0.01) == []


async def test_a_waiting_subscriber_wakes_on_an_update_and_on_close() -> None:
    documents, live = events()
    first, second = live.subscribe(lambda _: True), live.subscribe(lambda _: True)
    waiting = asyncio.ensure_future(first.next(timeout=5.0))
    await asyncio.sleep(0)
    documents.changed("a")
    assert [u.document_id for u in await asyncio.wait_for(waiting, 1.0)] == ["a"]
    # The other subscriber's "a" waited for it.
    assert [u.document_id for u in await second.next(timeout=5.0)] == ["a"]
    waiting = asyncio.ensure_future(second.next(timeout=5.0))
    await asyncio.sleep(0)
    live.close_all()
    assert await asyncio.wait_for(waiting, 1.0) == []
    assert live.subscriptions == set()
    documents.changed("b")  # nobody is told any more
    assert await first.next(timeout=0.01) == []
