"""Lifecycle of administrators and domains across real server processes: what a change
made on one server does on every server, within bounded waits."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from crdtmds.config import DATABASE_FILE
from tests.helpers.cluster import (
    ADMIN,
    PASSWORD,
    ApiClient,
    ApiError,
    Cluster,
    create_domain,
    publish_hosts,
    run_cli,
    start_cluster,
    wait_converged,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

WAIT = 15.0
"""How long a change made on one server may take to act on every other (loopback)."""


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Cluster]:
    cluster = start_cluster(tmp_path / "servers", 3)
    try:
        yield cluster
    finally:
        cluster.stop_all()


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"not within {WAIT} s: {what}")


async def login_code(url: str, user: str, password: str) -> str:
    """'ok', or the error code of a login on `url`."""
    async with ApiClient(url) as api:
        try:
            await api.call("login", user=user, password=password)
        except ApiError as exc:
            return exc.code
    return "ok"


async def logins_everywhere(cluster: Cluster, user: str, password: str) -> set[str]:
    urls = [node.url for node in cluster.nodes.values()]
    return set(await asyncio.gather(*(login_code(url, user, password) for url in urls)))


async def superuser_call(url: str, command: str, **params: object) -> object:
    async with ApiClient(url) as api:
        await api.login()
        return await api.call(command, **params)


def stored_rows(cluster: Cluster, name: str, document_id: str) -> int:
    path = cluster[name].data_dir / DATABASE_FILE
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return sum(
            db.execute(
                f"SELECT count(*) FROM {table} WHERE document_id = ?", (document_id,)
            ).fetchone()[0]
            for table in ("changes", "snapshots", "sessions")
        )


def cli_login(cluster: Cluster, server: str, user: str, password: str, login_file: Path) -> None:
    run_cli("login", "--server", cluster[server].url, "--user", user, "--password", password,
            "--login-file", str(login_file))  # fmt: skip


async def test_password_lock_and_delete_reach_every_server(mesh: Cluster, tmp_path: Path) -> None:
    n1, n2, n3 = (mesh[name].url for name in ("n1", "n2", "n3"))
    await create_domain(n1, "acme")
    await superuser_call(n1, "add-administrator", name="alice", password="alice-password-1",
                         domains={"acme": "read-write"})  # fmt: skip
    await wait_converged(n1, servers=3, domains={"acme"})
    await eventually(
        lambda: _same(logins_everywhere(mesh, "alice", "alice-password-1"), {"ok"}),
        "alice can log in everywhere",
    )

    # her own password, with the CLI, on n2: the new one works everywhere, the old nowhere
    alice_file = tmp_path / "alice.json"
    cli_login(mesh, "n2", "alice", "alice-password-1", alice_file)
    run_cli("passwd", "--old-password", "alice-password-1", "--new-password", "alice-password-2",
            "--login-file", str(alice_file))  # fmt: skip
    wrong = run_cli("passwd", "--old-password", "not-her-password", "--new-password", "x" * 12,
                    "--login-file", str(alice_file), check=False)  # fmt: skip
    assert wrong.returncode == 1 and "err_login_failed" in wrong.stderr
    await eventually(
        lambda: _same(logins_everywhere(mesh, "alice", "alice-password-2"), {"ok"}),
        "the new password works everywhere",
    )
    assert await logins_everywhere(mesh, "alice", "alice-password-1") == {"err_login_failed"}

    # locked on n1: her open logins on n2 and n3 end, and she cannot log in anywhere
    root_file = tmp_path / "root.json"
    cli_login(mesh, "n1", ADMIN, PASSWORD, root_file)
    async with ApiClient(n2) as on_n2, ApiClient(n3) as on_n3:
        for api in (on_n2, on_n3):
            await api.call("login", user="alice", password="alice-password-2", domain="acme")
            await api.call("show-hosts")
        run_cli("admin", "set", "alice", "--disable", "--login-file", str(root_file))
        await eventually(lambda: _ended(on_n2), "alice's login on n2 ends")
        await eventually(lambda: _ended(on_n3), "alice's login on n3 ends")
    await eventually(
        lambda: _same(logins_everywhere(mesh, "alice", "alice-password-2"), {"err_login_failed"}),
        "a locked administrator cannot log in anywhere",
    )
    shown = run_cli("admin", "show", "alice", "--json", "--login-file", str(root_file))
    assert '"locked": true' in shown.stdout

    run_cli("admin", "set", "alice", "--enable", "--login-file", str(root_file))
    await eventually(
        lambda: _same(logins_everywhere(mesh, "alice", "alice-password-2"), {"ok"}),
        "an unlocked administrator logs in everywhere again",
    )

    # deleted on n1: her open login on n3 ends, and the name is unknown everywhere
    async with ApiClient(n3) as on_n3:
        await on_n3.call("login", user="alice", password="alice-password-2", domain="acme")
        run_cli("admin", "delete", "alice", "--login-file", str(root_file))
        await eventually(lambda: _ended(on_n3), "a deleted administrator's login on n3 ends")
    assert await logins_everywhere(mesh, "alice", "alice-password-2") == {"err_login_failed"}
    again = run_cli("admin", "delete", "alice", "--login-file", str(root_file), check=False)
    assert again.returncode == 1 and "generic_err_object_not_found" in again.stderr
    last = run_cli("admin", "delete", ADMIN, "--login-file", str(root_file), check=False)
    assert last.returncode == 1 and "err_validation_failed" in last.stderr


async def test_a_deleted_domain_stays_deleted_when_a_server_that_missed_it_returns(
    mesh: Cluster, tmp_path: Path
) -> None:
    n1 = mesh["n1"].url
    gone = await create_domain(n1, "gone")
    await create_domain(n1, "kept")
    await publish_hosts(n1, "gone", ["web1", "web2"])
    await wait_converged(n1, servers=3, domains={"gone", "kept"})
    document_id = gone["document-id"]
    await eventually(
        lambda: _true(all(stored_rows(mesh, n, document_id) for n in ("n1", "n2", "n3"))),
        "every server stores the domain",
    )

    mesh["n3"].stop()
    root_file = tmp_path / "root.json"
    cli_login(mesh, "n2", ADMIN, PASSWORD, root_file)
    async with ApiClient(n1) as on_n1:
        await on_n1.login("gone")
        run_cli("domain", "delete", "gone", "--login-file", str(root_file))
        run_cli("domain", "rename", "kept", "kept-eu", "--login-file", str(root_file))
        await eventually(lambda: _ended(on_n1), "a login to the deleted domain on n1 ends")
    await eventually(
        lambda: _true(not any(stored_rows(mesh, n, document_id) for n in ("n1", "n2"))),
        "the deleted domain leaves the storage of the running servers",
    )

    mesh["n3"].start()
    await wait_converged(n1, servers=3, domains={"kept-eu"}, timeout=30)
    await eventually(
        lambda: _true(stored_rows(mesh, "n3", document_id) == 0),
        "the returning server removes its copy",
    )
    await asyncio.sleep(2)  # time for the returning server to have offered its old copy
    for name in ("n1", "n2", "n3"):
        assert stored_rows(mesh, name, document_id) == 0, name
        listed = await superuser_call(mesh[name].url, "show-domains")
        assert [d["name"] for d in listed["objects"]] == ["kept-eu"], name  # type: ignore[index]
    listing = run_cli("domain", "list", "--json", "--login-file", str(root_file)).stdout
    assert "kept-eu" in listing and '"gone"' not in listing
    async with ApiClient(mesh["n3"].url) as on_n3:
        await on_n3.login("kept-eu")
        assert (await on_n3.call("show-hosts"))["objects"] == []


async def _ended(api: ApiClient) -> bool:
    try:
        await api.call("show-hosts")
    except ApiError as exc:
        return exc.code == "generic_err_wrong_session_id"
    return False


async def _same(values: Awaitable[set[str]], expected: set[str]) -> bool:
    return await values == expected


async def _true(value: bool) -> bool:
    return value
