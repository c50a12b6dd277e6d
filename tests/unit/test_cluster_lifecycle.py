"""The cluster document's lifecycle writes as CRDT operations: what survives when two
servers change the same administrator or domain at the same time."""

from __future__ import annotations

import pytest

from crdtmds.core.cluster import ClusterDocument
from crdtmds.errors import NameInUse, ObjectNotFound


def base() -> ClusterDocument:
    cluster = ClusterDocument.create("c1", "cluster-doc")
    cluster.add_domain("acme", "doc-acme", created_by="root")
    cluster.add_administrator("root", "hash-root", superuser=True)
    cluster.add_administrator("alice", "hash-alice", domains={"acme": "read-write"})
    return cluster


def fork(cluster: ClusterDocument) -> ClusterDocument:
    return ClusterDocument(cluster.document_id, cluster.doc.fork())


def merged(a: ClusterDocument, b: ClusterDocument) -> ClusterDocument:
    a.doc.merge(b.doc)
    return a


def test_a_locked_administrator_has_no_access() -> None:
    cluster = base()
    assert cluster.permission("alice", "acme") == "read-write"
    cluster.set_administrator("alice", {"locked": True})
    assert cluster.permission("alice", "acme") is None
    assert cluster.permission("alice", None) is None
    cluster.set_administrator("alice", {"locked": False})
    assert cluster.permission("alice", None) == "read-only"


def test_a_delete_wins_over_a_concurrent_edit_and_two_edits_both_survive() -> None:
    here = base()
    there = fork(here)
    here.set_administrator("alice", {"locked": True})
    there.set_administrator("alice", {"password-hash": "hash-2"})
    both = merged(here, there)
    assert both.administrators()["alice"]["locked"] is True
    assert both.administrators()["alice"]["password-hash"] == "hash-2"
    other = fork(both)
    both.delete_administrator("alice")
    other.set_administrator("alice", {"locked": False})
    assert "alice" not in merged(both, other).administrators()


def test_a_tombstone_wins_over_a_concurrent_rename() -> None:
    here = base()
    there = fork(here)
    here.delete_domain("acme", deleted_by="root")
    there.rename_domain("acme", "acme-eu")
    both = merged(here, there)
    assert both.domains() == {}
    assert both.is_deleted("doc-acme")
    assert both.deleted_domains()["doc-acme"]["deleted-by"] == "root"
    with pytest.raises(ObjectNotFound):
        both.domain_by_ref("acme-eu")


def test_two_renames_at_once_keep_one_name_for_the_document() -> None:
    here = base()
    there = fork(here)
    here.rename_domain("acme", "acme-a")
    there.rename_domain("acme", "acme-b")
    assert list(merged(here, there).domains()) == ["acme-a"]


def test_rename_moves_permissions_and_refuses_a_taken_name() -> None:
    cluster = base()
    cluster.add_domain("globex", "doc-globex", created_by="root")
    with pytest.raises(NameInUse):
        cluster.rename_domain("acme", "globex")
    cluster.rename_domain("acme", "acme-eu")
    assert cluster.administrators()["alice"]["domains"] == {"acme-eu": "read-write"}
    cluster.delete_domain("acme-eu", deleted_by="root")
    assert cluster.administrators()["alice"]["domains"] == {}


def test_a_cluster_made_before_deletes_gets_its_tombstone_map() -> None:
    from automerge.core import ROOT

    cluster = base()
    with cluster.doc.transaction() as tx:
        tx.delete(ROOT, "deleted-domains")
    cluster.delete_domain("acme", deleted_by="root")
    assert cluster.is_deleted("doc-acme")
