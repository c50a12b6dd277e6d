"""Administrators' and domains' lifecycle commands on one in-process server: who may run
them, the last superuser, own password changes, and what a change ends at once (logins,
sessions, a deleted domain's stored rows)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from crdtmds.api.call import Caller
from crdtmds.bootstrap import init_cluster
from crdtmds.errors import CrdtmdsError
from crdtmds.server import Server

PASSWORDS = {"root": "root-password", "alice": "alice-password", "bob": "bob-password"}


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    await init_cluster(
        tmp_path, name="s1", listen_host="127.0.0.1", listen_port=0, url="ws://127.0.0.1:1",
        region="eu", admin="root", password=PASSWORDS["root"],
    )  # fmt: skip
    server = await Server.open(tmp_path)
    await server.cluster_admin.create_domain("acme", created_by="root")
    await server.cluster_admin.add_administrator(
        "alice", PASSWORDS["alice"], domains={"acme": "read-write"}
    )
    await server.cluster_admin.add_administrator("bob", PASSWORDS["bob"], superuser=True)
    yield server
    await server.lifecycle.settled()
    await server.close()


class Admin:
    def __init__(self, server: Server, user: str, password: str | None = None) -> None:
        self.server = server
        self.user = user
        self.password = password or PASSWORDS[user]
        self.caller = Caller("192.0.2.1:4000")

    async def call(self, command: str, **params: Any) -> dict[str, Any]:
        request = {"command": command, "params": params, "sid": self.caller.sid}
        return await self.server.api.execute(self.caller, request)

    async def error(self, command: str, **params: Any) -> str:
        with pytest.raises(CrdtmdsError) as info:
            await self.call(command, **params)
        return info.value.code

    async def login(self, domain: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"user": self.user, "password": self.password}
        if domain:
            params["domain"] = domain
        reply = await self.call("login", **params)
        self.caller.sid = reply["sid"]
        return reply


async def logged_in(server: Server, user: str, domain: str | None = None) -> Admin:
    admin = Admin(server, user)
    await admin.login(domain)
    return admin


async def test_only_superusers_change_others_and_nobody_locks_or_deletes_themselves(
    server: Server,
) -> None:
    alice = await logged_in(server, "alice", "acme")
    assert await alice.error("set-administrator", name="bob", locked=True) == (
        "err_insufficient_permissions"
    )
    assert await alice.error("set-administrator", name="alice", superuser=True) == (
        "err_insufficient_permissions"
    )
    assert await alice.error("delete-administrator", name="bob") == "err_insufficient_permissions"
    assert await alice.error("delete-domain", name="acme") == "err_insufficient_permissions"
    assert await alice.error("set-domain", name="acme", **{"new-name": "x"}) == (
        "err_insufficient_permissions"
    )
    root = await logged_in(server, "root")
    assert await root.error("set-administrator", name="root", locked=True) == (
        "err_validation_failed"
    )
    assert await root.error("delete-administrator", name="root") == "err_validation_failed"
    assert await root.error("set-administrator", name="nobody", locked=True) == (
        "generic_err_object_not_found"
    )
    assert await root.error("set-administrator", name="alice") == (
        "generic_err_missing_required_parameters"
    )
    assert await root.error(
        "set-administrator", name="alice", domains={"nowhere": "read-only"}
    ) == ("generic_err_object_not_found")


async def test_the_last_superuser_who_is_not_locked_stays(server: Server) -> None:
    root = await logged_in(server, "root")
    await root.call("set-administrator", name="bob", locked=True)
    # bob is locked: root is the last active superuser now
    bob_entry = await root.call("show-administrator", name="bob")
    assert bob_entry["locked"] is True and "password-hash" not in bob_entry
    await root.call("set-administrator", name="bob", locked=False)
    await root.call("set-administrator", name="bob", superuser=False)
    assert await root.error("set-administrator", name="root", superuser=False) == (
        "err_validation_failed"
    )
    bob = await logged_in(server, "bob")
    await root.call("set-administrator", name="bob", superuser=True)
    # bob's login saw the promotion; he now demotes root, then may not remove himself
    await bob.call("set-administrator", name="root", superuser=False)
    assert await bob.error("set-administrator", name="bob", superuser=False) == (
        "err_validation_failed"
    )


async def test_own_password_needs_the_old_one(server: Server) -> None:
    alice = await logged_in(server, "alice")
    new = "alice-new-password"
    assert await alice.error("set-administrator", name="alice", password=new) == (
        "generic_err_missing_required_parameters"
    )
    assert (
        await alice.error(
            "set-administrator", name="alice", password=new, **{"old-password": "wrong-password"}
        )
        == "err_login_failed"
    )
    assert (
        await alice.error(
            "set-administrator",
            name="alice",
            password="short",
            **{"old-password": PASSWORDS["alice"]},
        )
        == "generic_err_invalid_parameter"
    )
    await alice.call(
        "set-administrator", name="alice", password=new, **{"old-password": PASSWORDS["alice"]}
    )
    assert await Admin(server, "alice").error(
        "login", user="alice", password=PASSWORDS["alice"]
    ) == ("err_login_failed")
    await Admin(server, "alice", new).login()
    # a superuser sets another's password without the old one, and not with it
    root = await logged_in(server, "root")
    assert (
        await root.error(
            "set-administrator", name="alice", password="third-password", **{"old-password": new}
        )
        == "generic_err_invalid_parameter"
    )
    await root.call("set-administrator", name="alice", password="third-password")
    await Admin(server, "alice", "third-password").login()


async def test_locking_and_deleting_end_logins_and_sessions_at_once(server: Server) -> None:
    alice = await logged_in(server, "alice", "acme")
    await alice.call("add-host", name="web1", **{"ipv4-address": "192.0.2.10"})
    root = await logged_in(server, "root")
    await root.call("set-administrator", name="alice", locked=True)
    assert await alice.error("show-hosts") == "generic_err_wrong_session_id"
    assert await Admin(server, "alice").error("login", **{"user": "alice",
                                                          "password": PASSWORDS["alice"]}) == (
        "err_login_failed"
    )  # fmt: skip
    await server.lifecycle.settled()
    kept = server.sessions.of("alice")
    assert len(kept) == 1 and kept[0].has_changes()  # a locked administrator's draft stays
    await root.call("set-administrator", name="alice", locked=False)
    again = await logged_in(server, "alice", "acme")
    assert (await again.call("show-hosts"))["objects"] == []
    await root.call("delete-administrator", name="alice")
    assert await again.error("show-hosts") == "generic_err_wrong_session_id"
    await server.lifecycle.settled()
    assert server.sessions.of("alice") == []
    assert [s.admin for s in await server.storage.load_sessions() if s.admin == "alice"] == []


async def test_a_deleted_domain_leaves_memory_storage_and_logins(server: Server) -> None:
    alice = await logged_in(server, "alice", "acme")
    await alice.call("add-host", name="web1", **{"ipv4-address": "192.0.2.10"})
    await alice.call("publish")
    root = await logged_in(server, "root")
    document_id = server.documents.cluster.domains()["acme"]["document-id"]
    assert document_id in await server.storage.document_ids()
    assert (await root.call("delete-domain", name="acme")) == {"message": "OK"}
    assert await alice.error("show-hosts") == "generic_err_wrong_session_id"
    await server.lifecycle.settled()
    assert document_id not in await server.storage.document_ids()
    assert document_id not in server.documents.domains
    assert server.sessions.of("alice") == []
    assert server.documents.get_document(document_id) is None
    tombstone = server.documents.cluster.deleted_domains()[document_id]
    assert tombstone["deleted-by"] == "root" and tombstone["name"] == "acme"
    assert await root.error("delete-domain", name="acme") == "generic_err_object_not_found"
    # the name is free again, for a new document
    added = await root.call("add-domain", name="acme")
    assert added["document-id"] != document_id


async def test_rename_changes_the_catalogue_and_the_document(server: Server) -> None:
    root = await logged_in(server, "root")
    uid = server.documents.cluster.domains()["acme"]["uid"]
    reply = await root.call("set-domain", uid=uid, **{"new-name": "acme-eu"})
    assert reply["name"] == "acme-eu" and reply["uid"] == uid
    assert set(server.documents.cluster.domains()) == {"acme-eu"}
    assert server.documents.domain("acme-eu").name == "acme-eu"
    await root.call("add-domain", name="globex")
    assert await root.error("set-domain", name="acme-eu", **{"new-name": "globex"}) == (
        "err_name_in_use"
    )
    # permissions follow the rename, and so do open logins to the domain
    assert server.documents.cluster.permission("alice", "acme-eu") == "read-write"
    alice_in_acme = await logged_in(server, "alice", "acme-eu")
    await root.call("set-domain", name="acme-eu", **{"new-name": "acme"})
    await alice_in_acme.call("add-host", name="web1", **{"ipv4-address": "192.0.2.10"})
    await alice_in_acme.call("publish")
    assert server.documents.domain("acme").state.name == "acme"
    # a deleted domain's permissions go with it
    await root.call("delete-domain", name="acme")
    assert "acme" not in server.documents.cluster.administrators()["alice"]["domains"]
