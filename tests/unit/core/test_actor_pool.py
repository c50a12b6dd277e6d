"""The publishing actors of a server: one publish per actor at a time, the document's own
actor preferred, new ones made only when all are busy, retired ones never handed out."""

from __future__ import annotations

from crdtmds.core.actor_pool import ActorPool


def test_a_publish_takes_the_actor_the_document_holds() -> None:
    pool = ActorPool()
    first = pool.acquire("doc-a")
    assert pool.changed
    pool.release("doc-a", first)
    pool.to_meta()
    assert pool.acquire("doc-a") == first
    # Busy: a concurrent publish (another domain) gets a new actor, sorting after.
    second = pool.acquire("doc-b")
    assert second > first and pool.changed
    pool.release("doc-b", second)
    pool.release("doc-a", first)
    assert pool.acquire("doc-a") == first and pool.acquire("doc-b") == second
    assert len(pool.actors) == 2  # the table grows with concurrent publishes, not sessions


def test_a_retired_actor_is_never_handed_out_again() -> None:
    pool = ActorPool()
    actor = pool.acquire("doc-a")
    pool.retire(actor)
    assert actor not in pool.actors
    assert pool.acquire("doc-a") != actor
    restored = ActorPool.from_meta(pool.to_meta())
    assert actor not in restored.actors
    assert restored.acquire("doc-b") != actor


def test_the_pool_survives_a_restart_and_ignores_damage() -> None:
    pool = ActorPool()
    actor = pool.acquire("doc-a")
    pool.release("doc-a", actor)
    assert ActorPool.from_meta(pool.to_meta()).acquire("doc-z") == actor
    assert ActorPool.from_meta({"actors": ["zz"]}).actors == []
    assert ActorPool.from_meta(None).actors == []
