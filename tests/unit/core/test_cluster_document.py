"""The cluster document: servers, domains, administrators and permissions."""

from __future__ import annotations

import pytest
from automerge.core import Document

from crdtmds.core import auth
from crdtmds.core.cluster import (
    READ_ONLY,
    READ_WRITE,
    SUPERUSER,
    ClusterDocument,
    public_administrator,
)
from crdtmds.errors import ClusterError, InvalidParameter, NameInUse, ObjectNotFound


@pytest.fixture
def cluster() -> ClusterDocument:
    return ClusterDocument.create("cluster-1", "doc-1")


def test_new_cluster_has_empty_sections(cluster: ClusterDocument) -> None:
    assert cluster.is_ready()
    assert cluster.cluster_id == "cluster-1"
    assert cluster.servers() == {} and cluster.domains() == {} and cluster.administrators() == {}


def test_writes_return_the_change_and_survive_a_reload(cluster: ClusterDocument) -> None:
    digest, data = cluster.add_server("eu1", "ws://127.0.0.1:1", "eu", "primary")
    assert digest == cluster.doc.get_heads()[0]
    entry = cluster.add_domain("acme", "doc-acme", created_by="admin")
    reloaded = ClusterDocument("doc-1", Document.load(cluster.doc.save()))
    assert reloaded.servers()["eu1"]["url"] == "ws://127.0.0.1:1"
    assert reloaded.domain_by_ref("acme") == entry
    assert reloaded.domain_by_ref(entry["uid"]) == entry
    assert reloaded.domain_by_ref("doc-acme") == entry
    assert data


def test_domain_names_are_unique(cluster: ClusterDocument) -> None:
    cluster.add_domain("acme", "doc-a", created_by="admin")
    with pytest.raises(NameInUse):
        cluster.add_domain("acme", "doc-b", created_by="admin")


def test_unknown_domain_is_not_found(cluster: ClusterDocument) -> None:
    with pytest.raises(ObjectNotFound):
        cluster.domain_by_ref("nope")
    with pytest.raises(InvalidParameter):
        cluster.domain_by_ref(7)


def test_permissions(cluster: ClusterDocument) -> None:
    cluster.add_administrator("root", auth.hash_password("pw"), superuser=True)
    cluster.add_administrator("ro", auth.hash_password("pw"), domains={"acme": READ_ONLY})
    cluster.add_administrator("rw", auth.hash_password("pw"), domains={"*": READ_WRITE})
    assert cluster.permission("root", "acme") == SUPERUSER
    assert cluster.permission("ro", "acme") == READ_ONLY
    assert cluster.permission("ro", "globex") is None
    assert cluster.permission("rw", "globex") == READ_WRITE
    assert cluster.permission("ghost", "acme") is None


def test_bad_permission_level_is_refused_and_nothing_written(cluster: ClusterDocument) -> None:
    heads = cluster.doc.get_heads()
    with pytest.raises(InvalidParameter):
        cluster.add_administrator("x", auth.hash_password("pw"), domains={"acme": "owner"})
    assert cluster.doc.get_heads() == heads


def test_public_administrator_hides_the_hash(cluster: ClusterDocument) -> None:
    entry = cluster.add_administrator("root", auth.hash_password("pw"), superuser=True)
    assert "password-hash" not in public_administrator(entry)


def test_an_empty_copy_is_not_ready_and_refuses_writes() -> None:
    empty = ClusterDocument("doc-1", Document())
    assert not empty.is_ready()
    with pytest.raises(ClusterError):
        empty.add_server("x", "ws://", "r", "secondary")
