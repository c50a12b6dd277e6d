"""Storage faults at the level of a server: a full disk, damaged rows, a newer data directory.

A full disk is simulated two ways: a size-limited SQLite file (`max_page_count`) under an
in-process `Server`, and a real server process whose file size limit (RLIMIT_FSIZE) is
reached. Either way the failing call gets a clear storage error, nothing is half-written,
the server goes on serving, and once there is room again nothing acknowledged is missing.

A data directory with a damaged row (a change, a snapshot, a session's draft, the node's
configuration) or written by a newer crdtmds makes `crdtmds start` exit non-zero with a
message naming the fault, instead of serving a partial view of the data.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import re
import resource
import shutil
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from automerge.core import ROOT, Document, ScalarType

from crdtmds.api_socket import ApiError
from crdtmds.bootstrap import init_cluster
from crdtmds.client import Client
from crdtmds.config import DATABASE_FILE
from crdtmds.core.session import Session
from crdtmds.errors import ClusterError, StorageError
from crdtmds.server import Server
from crdtmds.storage import SCHEMA_VERSION, Storage
from tests.helpers.cluster import ADMIN, PASSWORD, NodeProcess, run_cli

DOMAIN = "acme"
UNLIMITED = resource.RLIM_INFINITY
START_TIMEOUT = 30.0


# ---------------------------------------------------------------- in-process helpers


async def new_node(data_dir: Path) -> Server:
    await init_cluster(
        data_dir, name="n1", listen_host="127.0.0.1", listen_port=0, url="",
        region="default", admin=ADMIN, password=PASSWORD,
    )  # fmt: skip
    node = await Server.open(data_dir)
    await node.cluster_admin.create_domain(DOMAIN, created_by=ADMIN)
    return node


@contextlib.asynccontextmanager
async def opened(data_dir: Path) -> AsyncIterator[Server]:
    node = await Server.open(data_dir)
    try:
        yield node
    finally:
        await node.close()


async def fill_disk(node: Server) -> None:
    """Cap the database at its current size, as a full disk would."""
    connection = node.storage._database._connection
    assert connection is not None
    await connection.execute("PRAGMA max_page_count = 1")


async def free_disk(node: Server) -> None:
    connection = node.storage._database._connection
    assert connection is not None
    await connection.execute("PRAGMA max_page_count = 1073741823")


def add_hosts(session: Session, prefix: str, count: int, *, bulky: bool = False) -> None:
    for index in range(count):
        params: dict[str, Any] = {"name": f"{prefix}{index}", "ipv4-address": "192.0.2.1"}
        if bulky:
            params["comments"] = os.urandom(2000).hex()  # room for a few per page, no more
        session.add_object("host", params)


def host_names(state: Any) -> set[str]:
    return {record["name"] for record in state.objects.values()}


# ---------------------------------------------------------------- full disk, in process


async def test_publish_on_a_full_disk_changes_nothing_and_keeps_the_draft(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "n1"
    node = await new_node(data_dir)
    try:
        first = await node.sessions.open(DOMAIN, admin=ADMIN)
        add_hosts(first, "kept", 2)
        await node.sessions.publish(first, "before the disk filled up")
        domain = node.documents.domain(DOMAIN)
        heads, revisions = domain.heads(), list(domain.state.revisions)

        draft = await node.sessions.open(DOMAIN, admin=ADMIN)
        add_hosts(draft, "big", 60, bulky=True)
        await node.sessions.save_edits(draft)
        await fill_disk(node)
        [actor] = node.sessions.actors.actors
        with pytest.raises(StorageError) as failed:
            await node.sessions.publish(draft, "does not fit")
        # The change was taken back out of the live document; its actor is retired.
        assert actor not in node.sessions.actors.actors
        assert failed.value.code == "err_storage"
        assert "full" in failed.value.message and domain.document_id in failed.value.message
        assert domain.heads() == heads and domain.state.revisions == revisions
        assert host_names(domain.state) == {"kept0", "kept1"}
        assert draft.has_changes() and len(host_names(draft.view)) == 62
    finally:
        await node.close()

    async with opened(data_dir) as node:  # what is on disk: the old state and the draft
        domain = node.documents.domain(DOMAIN)
        assert domain.heads() == heads and domain.state.revisions == revisions
        draft = node.sessions.get(draft.uid)
        assert len(host_names(draft.view)) == 62
        revision = await node.sessions.publish(draft, "there is room again")
    async with opened(data_dir) as node:
        state = node.documents.domain(DOMAIN).state
        assert [r["uid"] for r in state.revisions] == [*(r["uid"] for r in revisions),
                                                        revision["uid"]]  # fmt: skip
        assert len(host_names(state)) == 62


async def test_edits_whose_saving_failed_are_saved_with_the_next_edit(tmp_path: Path) -> None:
    data_dir = tmp_path / "n1"
    node = await new_node(data_dir)
    try:
        draft = await node.sessions.open(DOMAIN, admin=ADMIN)
        add_hosts(draft, "first", 1)
        await node.sessions.save_edits(draft)
        await fill_disk(node)
        add_hosts(draft, "big", 40, bulky=True)
        with pytest.raises(StorageError, match="full"):
            await node.sessions.save_edits(draft)
        await free_disk(node)
        add_hosts(draft, "later", 1)
        await node.sessions.save_edits(draft)
        in_memory = host_names(draft.view)
    finally:
        await node.close()
    async with opened(data_dir) as node:
        assert host_names(node.sessions.get(draft.uid).view) == in_memory
        assert len(in_memory) == 42


# ---------------------------------------------------------------- compaction


async def test_publish_that_triggers_compaction_is_on_disk(tmp_path: Path) -> None:
    """The publish whose rows pass the compaction threshold must be in the snapshot that
    replaces them (found by the chaos test: it was not, so it vanished from disk)."""
    data_dir = tmp_path / "n1"
    node = await new_node(data_dir)
    try:
        node.persister.compact_threshold = 6
        published = []
        for round_number in range(4):
            session = await node.sessions.open(DOMAIN, admin=ADMIN)
            add_hosts(session, f"r{round_number}-", 1)
            published.append((await node.sessions.publish(session))["uid"])
        heads = node.documents.domain(DOMAIN).heads()
    finally:
        await node.close()
    async with opened(data_dir) as node:
        domain = node.documents.domain(DOMAIN)
        assert domain.heads() == heads
        assert [r["uid"] for r in domain.state.revisions] == published
        assert await node.storage.uncompacted_count(domain.document_id) < 6


async def test_failed_compaction_neither_fails_the_publish_nor_loses_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "n1"
    node = await new_node(data_dir)
    try:
        node.persister.compact_threshold = 2  # the domain's first change and a publish

        async def failing_write(*args: Any) -> None:
            raise StorageError("write snapshot: disk I/O error")

        with monkeypatch.context() as patch:
            patch.setattr(node.storage, "save_snapshot", failing_write)
            session = await node.sessions.open(DOMAIN, admin=ADMIN)
            add_hosts(session, "a", 3)
            first = await node.sessions.publish(session)  # compaction fails; the publish stands
        document_id = node.documents.domain(DOMAIN).document_id
        assert await node.storage.uncompacted_count(document_id) >= 2
        add_hosts(session, "b", 1)
        second = await node.sessions.publish(session)  # compacts what the failed attempt left
        assert await node.storage.uncompacted_count(document_id) == 0
    finally:
        await node.close()
    async with opened(data_dir) as node:
        revisions = [r["uid"] for r in node.documents.domain(DOMAIN).state.revisions]
        assert revisions == [first["uid"], second["uid"]]


async def test_snapshot_of_a_document_with_a_change_awaiting_its_dependency(
    tmp_path: Path,
) -> None:
    """`Document.save()` appends changes received before their dependencies; storage must
    take such a snapshot (a server refusing it stopped with a fatal storage error)."""
    source = Document()
    changes = []
    for value in range(3):
        with source.transaction() as tx:
            tx.put(ROOT, f"k{value}", ScalarType.Int, value)
        change = source.get_last_local_change()
        changes.append((change.hash, change.bytes))
    waiting = Document.load(Document.load(changes[0][1]).save() + changes[2][1])
    storage = await Storage.open(tmp_path / DATABASE_FILE)
    try:
        await storage.append_changes("doc", changes[:1])
        await storage.save_snapshot("doc", waiting.save(), [changes[0][0]])
        loaded = await storage.load_all()
    finally:
        await storage.close()
    assert loaded.problems == []
    assert loaded.documents["doc"].get_heads() == [changes[0][0]]


# ---------------------------------------------------------------- a lost change row


async def test_change_row_lost_after_a_snapshot_is_reported_not_skipped(tmp_path: Path) -> None:
    """Automerge loads a snapshot followed by a change whose dependency is gone by leaving
    the change out; storage must report that instead of returning a shorter document."""
    storage = await Storage.open(tmp_path / DATABASE_FILE)
    try:
        doc = Document()
        changes = []
        for value in range(3):
            with doc.transaction() as tx:
                tx.put(ROOT, f"k{value}", ScalarType.Int, value)
            change = doc.get_last_local_change()
            changes.append((change.hash, change.bytes))
        await storage.append_changes("doc", changes[:1])
        await storage.save_snapshot("doc", Document.load(changes[0][1]).save(), [changes[0][0]])
        await storage.append_changes("doc", changes[2:])  # the second change never made it
        loaded = await storage.load_all()
    finally:
        await storage.close()
    assert loaded.documents == {}
    assert [(p.document_id, p.table, p.row_id) for p in loaded.problems] == [
        ("doc", "changes", None)
    ]
    # A snapshot kept as a saved document loads without the change (counted as missing);
    # one kept as its change log does not load at all (Automerge names the deps).
    assert re.search("missing|deps", loaded.problems[0].message)


# ---------------------------------------------------------------- full disk, real process


def limit_file_size(limit: int) -> None:
    """In the child: files may grow to `limit` bytes (a soft limit the test can lift)."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, UNLIMITED))


async def call_until_storage_error(client: Client, count: int) -> ApiError:
    for index in range(count):
        try:
            await client.call(
                "add-host", name=f"fill{index}",
                **{"ipv4-address": "192.0.2.7", "comments": "x" * 4000},
            )  # fmt: skip
            if index % 10 == 9:
                await client.call("publish", comments=f"up to fill{index}")
        except ApiError as exc:
            return exc
    raise AssertionError(f"{count} edits fitted in the size limit")


async def test_server_that_reaches_its_file_size_limit_answers_errors_and_recovers(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "n1"
    node = await new_node(data_dir)
    await node.close()
    limit = max(p.stat().st_size for p in data_dir.iterdir()) + 256 * 1024
    server = NodeProcess("n1", data_dir)
    try:
        server.start(timeout=START_TIMEOUT, preexec=lambda: limit_file_size(limit))
        async with Client([server.url], user=ADMIN, password=PASSWORD, domain=DOMAIN) as client:
            failure = await call_until_storage_error(client, 400)
            assert failure.code == "err_storage", failure
            assert "disk I/O error" in failure.message or "full" in failure.message
            published = await client.call("show-revisions", limit=500)
            status = await client.call("show-status")
            with pytest.raises(ApiError) as refused:
                await client.call("publish", comments="does not fit")
            assert refused.value.code == "err_storage"
            after = await client.call("show-status")
            del after["status-token"], status["status-token"]  # a fresh token every call
            assert after == status  # nothing half-written
            assert server.running

            resource.prlimit(server.process.pid, resource.RLIMIT_FSIZE, (UNLIMITED, UNLIMITED))
            await client.call("add-host", name="after", **{"ipv4-address": "192.0.2.8"})
            reply = await client.call("publish", comments="there is room again")
            hosts = await client.call("show-hosts", limit=500)
        server.stop()
        server.start()
        async with Client([server.url], user=ADMIN, password=PASSWORD, domain=DOMAIN) as client:
            revisions = await client.call("show-revisions", limit=500)
            assert await client.call("show-hosts", limit=500) == hosts
        uids = [r["uid"] for r in revisions["objects"]]
        assert uids == [reply["revision"]["uid"], *(r["uid"] for r in published["objects"])]
    finally:
        server.stop()


# ---------------------------------------------------------------- refusing to start


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stopped server's data directory: a domain with a snapshot and later change rows,
    and an unpublished draft."""
    data_dir = tmp_path_factory.mktemp("pristine") / "n1"

    async def build() -> None:
        node = await new_node(data_dir)
        try:
            session = await node.sessions.open(DOMAIN, admin=ADMIN)
            add_hosts(session, "snap", 3)
            await node.sessions.publish(session)
            await node.persister.compact(node.documents.domain(DOMAIN).document_id)
            for prefix in ("after", "later"):  # change rows, the second depending on the first
                add_hosts(session, prefix, 2)
                await node.sessions.publish(session)
            draft = await node.sessions.open(DOMAIN, admin=ADMIN, name="draft")
            add_hosts(draft, "draft", 1)
            await node.sessions.save_edits(draft)
        finally:
            await node.close()

    asyncio.run(build())
    return data_dir


@pytest.fixture
def damaged(pristine: Path, tmp_path: Path) -> Iterator[Path]:
    copy = tmp_path / "n1"
    shutil.copytree(pristine, copy)
    yield copy


def run_sql(data_dir: Path, statement: str) -> Any:
    connection = sqlite3.connect(data_dir / DATABASE_FILE)
    try:
        rows = connection.execute(statement).fetchall()
        connection.commit()
        return rows
    finally:
        connection.close()


def refused_start(data_dir: Path) -> str:
    """`crdtmds start` on `data_dir`: assert it exits non-zero at once; its stderr."""
    try:
        result = run_cli("start", "--data", str(data_dir), check=False, timeout=START_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"crdtmds start served {data_dir} instead of refusing it")
    assert result.returncode != 0
    assert "listening on" not in result.stdout
    assert "Traceback" not in result.stderr and "╭" not in result.stderr, result.stderr
    return result.stderr


def domain_document_id(data_dir: Path) -> str:
    rows = run_sql(data_dir, "SELECT document_id FROM snapshots")
    return str(rows[0][0])


DAMAGE = {
    "change row": (
        "UPDATE changes SET data = x'856f4a83deadbeef' WHERE id = "
        "(SELECT max(id) FROM changes WHERE document_id = '{domain}')",
        ["err_storage_corrupt", "{domain}", "changes row"],
    ),
    "snapshot row": (
        "UPDATE snapshots SET data = substr(data, 1, length(data) / 2)",
        ["err_storage_corrupt", "{domain}", "snapshots row"],
    ),
    "cluster document row": (
        "UPDATE changes SET data = substr(data, 1, 20) WHERE id = "
        "(SELECT min(id) FROM changes WHERE document_id != '{domain}')",
        ["err_storage_corrupt", "changes row"],
    ),
    "missing change": (
        "DELETE FROM changes WHERE id = (SELECT min(id) FROM changes WHERE document_id = "
        "'{domain}')",
        ["err_storage_corrupt", "{domain}"],
    ),
    "session draft row": (
        "UPDATE session_changes SET data = x'00'",
        ["err_storage_corrupt", "session"],
    ),
    "configuration row": (
        "UPDATE meta SET value = '{{not json'",
        ["err_storage_corrupt", "node-config"],
    ),
}


@pytest.mark.parametrize("fault", sorted(DAMAGE))
def test_start_refuses_a_damaged_data_directory(damaged: Path, fault: str) -> None:
    domain = domain_document_id(damaged)
    statement, expected = DAMAGE[fault]
    run_sql(damaged, statement.format(domain=domain))
    before = (damaged / DATABASE_FILE).read_bytes()
    stderr = refused_start(damaged)
    for text in expected:
        assert text.format(domain=domain) in stderr, stderr
    assert (damaged / DATABASE_FILE).read_bytes() == before  # refused, not "repaired"


def test_start_refuses_a_data_directory_of_a_newer_version(damaged: Path) -> None:
    run_sql(damaged, f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    stderr = refused_start(damaged)
    assert "err_storage_version" in stderr
    assert f"schema version {SCHEMA_VERSION + 1}" in stderr and "newer" in stderr
    assert run_sql(damaged, "PRAGMA user_version") == [(SCHEMA_VERSION + 1,)]


# ---------------------------------------------------------------- a store it may not write

PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE = 1
CAP_DAC_READ_SEARCH = 2


def as_an_ordinary_user() -> None:
    """In the child, before it runs the server: as root, give up the capabilities that let
    root write any file whatever its mode (the server then has none of them), so that
    file modes bind it as they bind any other user. Nothing to do for other users."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def modes_bind_the_server(tmp_path: Path) -> bool:
    """Whether a process started with `as_an_ordinary_user` is refused a 0400 file (a
    container may not let root give its capabilities up)."""
    probe = tmp_path / "probe"
    probe.write_text("")
    probe.chmod(0o400)
    try:
        child = subprocess.run(
            ["sh", "-c", f"echo x > '{probe}'"],
            preexec_fn=as_an_ordinary_user, capture_output=True, timeout=10, check=False,
        )  # fmt: skip
    except subprocess.SubprocessError:
        return False
    finally:
        probe.unlink()
    return child.returncode != 0


@pytest.mark.parametrize(
    ("target", "mode", "named"),
    [("database file", 0o400, "crdtmds.sqlite3 (mode 0400)"), ("directory", 0o500, "(mode 0500)")],
)
def test_start_refuses_a_store_it_may_not_write(
    damaged: Path, tmp_path: Path, target: str, mode: int, named: str
) -> None:
    """Run as root, the server gives up root's right to write any file, so that the test
    means the same for root (as in CI) as for the user a server runs as."""
    if not modes_bind_the_server(tmp_path):
        pytest.skip("root cannot give up its file capabilities in this environment")
    server = NodeProcess("n1", damaged)
    server.start(timeout=START_TIMEOUT)  # records its port: the next start writes nothing
    server.stop()
    path = damaged / DATABASE_FILE if target == "database file" else damaged
    path.chmod(mode)
    try:
        with pytest.raises(ClusterError) as refused:
            server.start(timeout=START_TIMEOUT, preexec=as_an_ordinary_user)
    finally:
        server.stop()
        path.chmod(0o700 if path.is_dir() else 0o600)
    message = str(refused.value)
    assert "exited with code 1" in message, message
    assert f"error: err_storage: cannot write {damaged / DATABASE_FILE}" in message, message
    assert "not writable: " in message and named in message, message
    assert "Traceback" not in message
