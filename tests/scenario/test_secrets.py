"""Secrets stay secret: the cluster secret, password hashes, passwords and login tokens.

A two-server cluster runs with debug logging while the test does what tends to leak
credentials: a join, a join with a wrong secret, wrong passwords on /api and on /sync,
automerge-repo clients with credentials and tokens in their URL, a new administrator,
every read of servers, administrators and status, errors that carry the rejected values,
and `crdtmds status`. Afterwards no server log, command output, API reply or error
message may contain the secret (or its random part), any stored password hash (or its
salt or digest), any password, or any login token.

A data directory made by `crdtmds init` and used by `crdtmds start`, both run with
umask 0, holds only owner-only files (0600) in an owner-only directory (0700).
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from automerge.core import Document, SyncState
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from crdtmds.config import DATABASE_FILE
from crdtmds.core import auth
from crdtmds.server import Server
from crdtmds.sync.protocol import Join, Request, decode, encode
from tests.helpers.cluster import (
    ADMIN,
    ADMIN_LOGIN,
    PASSWORD,
    Cluster,
    NodeProcess,
    cli_command,
    cli_env,
    run_cli,
)

DEBUG = ["--log-level", "debug"]
EMPTY_SYNC_MESSAGE = Document().generate_sync_message(SyncState()).encode()
ALICE_PASSWORD = "alice-Pa55word-never-shown"
WRONG_PASSWORD = "wrong-Pa55word-never-shown"


@dataclass
class Transcript:
    """Everything a user or an operator could see: outputs, replies, errors, logs."""

    texts: list[str] = field(default_factory=list)

    def add(self, value: Any) -> Any:
        self.texts.append(value if isinstance(value, str) else json.dumps(value, default=str))
        return value


class ApiSession:
    """One /api connection whose every reply is recorded."""

    def __init__(self, url: str, transcript: Transcript) -> None:
        self.url = f"{url}/api"
        self.transcript = transcript
        self._id = 0

    async def __aenter__(self) -> ApiSession:
        self.ws = await connect(self.url, proxy=None)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()

    async def call(self, command: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        await self.ws.send(json.dumps({"id": self._id, "command": command, "params": params}))
        reply = json.loads(await asyncio.wait_for(self.ws.recv(), 30))
        self.transcript.add(reply)
        return reply


@dataclass
class Exposure:
    transcript: Transcript
    secret: str
    hashes: list[str]
    tokens: list[str]
    logs: list[str]
    repo_clients: dict[str, list[str]]
    """What each automerge-repo client (by its credentials) received, by message type."""


@pytest.fixture(scope="module")
def exposure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exposure]:
    root = tmp_path_factory.mktemp("secrets")
    transcript = Transcript()
    with Cluster(root) as cluster:
        first = cluster.init("n1", start_args=DEBUG)
        joined = run_cli(
            "join", "--data", str(root / "n2"), "--name", "n2", "--listen", "127.0.0.1:0",
            "--peer", first.url, "--secret", cluster.secret, "--json",
        )  # fmt: skip
        transcript.add(joined.stdout + joined.stderr)
        second = NodeProcess("n2", root / "n2", start_args=list(DEBUG))
        cluster.nodes["n2"] = second
        second.start()
        tokens, received = asyncio.run(provoke(cluster, transcript))
        for command in (["status", "--server", first.url, *ADMIN_LOGIN],
                        ["status", "--server", second.url, "--json", *ADMIN_LOGIN]):  # fmt: skip
            result = run_cli(*command)
            transcript.add(result.stdout + result.stderr)
        cluster.stop_all()
        hashes = asyncio.run(stored_password_hashes(first.data_dir))
        yield Exposure(
            transcript=transcript,
            secret=cluster.secret,
            hashes=hashes,
            tokens=tokens,
            logs=[first.log(), second.log()],
            repo_clients=received,
        )


async def provoke(
    cluster: Cluster, transcript: Transcript
) -> tuple[list[str], dict[str, list[str]]]:
    """Everything that could leak a credential; returns the login tokens handed out and
    what the automerge-repo clients received."""
    first, second = cluster["n1"], cluster["n2"]
    tokens = []
    wrong_secret = auth.new_secret(auth.cluster_id_of_secret(cluster.secret))
    failed_join = run_cli(
        "join", "--data", str(cluster.root / "n3"), "--name", "n3", "--listen", "127.0.0.1:0",
        "--peer", first.url, "--secret", wrong_secret, check=False,
    )  # fmt: skip
    assert failed_join.returncode != 0
    transcript.add(failed_join.stdout + failed_join.stderr)

    async with ApiSession(first.url, transcript) as api:
        login = await api.call("login", user=ADMIN, password=PASSWORD)
        tokens.append(login["result"]["sid"])
        await api.call("add-domain", name="acme")
        await api.call("add-administrator", name="alice", password=ALICE_PASSWORD,
                       domains={"acme": "read-write"})  # fmt: skip
        for command in ("show-administrators", "show-servers", "show-status", "show-domains",
                        "show-sessions"):  # fmt: skip
            await api.call(command)
        # errors that could echo what they refuse
        await api.call("add-administrator", name="bob", password=12345)
        await api.call("add-administrator", name="alice", password=ALICE_PASSWORD)
    async with ApiSession(second.url, transcript) as api:
        await api.call("login", user="alice", password=WRONG_PASSWORD, domain="acme")
        await api.call("login", user="nobody", password=cluster.secret)
        await api.call("login", user=ALICE_PASSWORD, password="typed in the wrong field")
        await api.call("login", user=ADMIN, password=ALICE_PASSWORD)
        login = await api.call("login", user="alice", password=ALICE_PASSWORD, domain="acme")
        tokens.append(login["result"]["sid"])
        await api.call("show-hosts", sid=WRONG_PASSWORD)
        await api.call("show-administrators")
    received = await repo_clients(second.url, cluster, tokens, transcript)
    return tokens, received


REPO_CLIENT_QUERIES = {
    "alice's password": f"?user=alice&password={ALICE_PASSWORD}",
    "a wrong password": f"?user=alice&password={WRONG_PASSWORD}",
    "alice's token": "?token={token}",
    "a wrong token": "?token={token}x",
}


async def repo_clients(
    url: str, cluster: Cluster, tokens: list[str], transcript: Transcript
) -> dict[str, list[str]]:
    """automerge-repo clients with credentials in the URL, right and wrong, each asking
    for the cluster document; then a server join with a wrong secret. Returns the types
    of the messages each client received."""
    status = json.loads(run_cli("status", "--server", url, "--json", *ADMIN_LOGIN).stdout)
    cluster_document = status["cluster-document"]["document-id"]
    received: dict[str, list[str]] = {}
    for label, query in REPO_CLIENT_QUERIES.items():
        async with connect(f"{url}/sync{query.format(token=tokens[-1])}", proxy=None) as ws:
            await ws.send(encode(Join(sender_id="repo-client")))
            request = Request("repo-client", "server", cluster_document, EMPTY_SYNC_MESSAGE)
            await ws.send(encode(request))
            received[label] = [type(m).__name__ for m in await messages(ws, 2, transcript)]
    cluster_id = auth.cluster_id_of_secret(cluster.secret)
    intruder = auth.ServerCredentials.create(auth.new_secret(cluster_id), cluster_id, "intruder")
    async with connect(f"{url}/sync", proxy=None) as ws:
        join = Join(sender_id="intruder", peer_metadata={"crdtmds": intruder.to_metadata()})
        await ws.send(encode(join))
        received["wrong secret"] = [type(m).__name__ for m in await messages(ws, 1, transcript)]
    return received


async def messages(ws: Any, count: int, transcript: Transcript) -> list[Any]:
    """Up to `count` decoded messages, fewer if the server closes first."""
    found = []
    for _ in range(count):
        try:
            frame = await asyncio.wait_for(ws.recv(), 10)
        except ConnectionClosed as exc:
            transcript.add(str(exc))
            break
        message = decode(frame)
        transcript.add(repr(message))
        found.append(message)
    return found


async def stored_password_hashes(data_dir: Path) -> list[str]:
    node = await Server.open(data_dir)
    try:
        records = node.documents.cluster.administrators().values()
        return [record["password-hash"] for record in records]
    finally:
        await node.close()


def secret_fragments(exposure: Exposure) -> dict[str, str]:
    """Each credential, and each part of one that is secret on its own."""
    fragments = {"cluster secret": exposure.secret}
    fragments["random part of the secret"] = exposure.secret.partition(".")[2]
    for index, stored in enumerate(exposure.hashes):
        _, _, _, _, salt, digest = stored.split("$")
        fragments |= {f"hash {index}": stored, f"salt {index}": salt, f"digest {index}": digest}
    for index, token in enumerate(exposure.tokens):
        fragments[f"token {index}"] = token
    for name, password in (("admin", PASSWORD), ("alice", ALICE_PASSWORD),
                           ("wrong", WRONG_PASSWORD)):  # fmt: skip
        fragments[f"password of {name}"] = password
    return fragments


def test_the_scenario_produced_what_is_checked(exposure: Exposure) -> None:
    assert len(exposure.hashes) == 2
    assert len(exposure.tokens) == 2
    text = "\n".join(exposure.transcript.texts)
    assert "err_login_failed" in text and "wrong cluster secret" in text
    assert "generic_err_invalid_parameter" in text or "err_validation_failed" in text
    assert "converged" in text
    for log in exposure.logs:
        assert "DEBUG" in log, "the servers did not log at debug level"
    assert "failed login for administrator" in exposure.logs[1]


def test_no_log_shows_a_credential(exposure: Exposure) -> None:
    for log in exposure.logs:
        for what, fragment in secret_fragments(exposure).items():
            assert fragment not in log, f"a server log shows the {what}"


def test_no_output_reply_or_error_shows_a_credential(exposure: Exposure) -> None:
    fragments = secret_fragments(exposure)
    for text in exposure.transcript.texts:
        for what, fragment in fragments.items():
            if what.startswith("token"):
                continue  # a login reply carries its own token; checked below
            assert fragment not in text, f"{what} in {text[:300]}"


def test_tokens_appear_only_in_their_own_login_reply(exposure: Exposure) -> None:
    for token in exposure.tokens:
        carriers = [t for t in exposure.transcript.texts if token in t]
        assert len(carriers) == 1 and '"sid"' in carriers[0], carriers


def test_no_reply_carries_a_password_hash_field(exposure: Exposure) -> None:
    for text in exposure.transcript.texts:
        assert "password-hash" not in text


def test_repo_clients_may_not_read_the_cluster_document(exposure: Exposure) -> None:
    """It holds the password hashes: admitted clients get doc-unavailable for it."""
    assert exposure.repo_clients == {
        "alice's password": ["Peer", "DocUnavailable"],
        "alice's token": ["Peer", "DocUnavailable"],
        "a wrong password": ["Error"],
        "a wrong token": ["Error"],
        "wrong secret": ["Error"],
    }


# ---------------------------------------------------------------- file permissions


def run_with_umask_zero(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli_command(*args), capture_output=True, text=True, timeout=60, env=cli_env(),
        preexec_fn=lambda: os.umask(0), check=True,
    )  # fmt: skip


def test_data_directory_is_private_even_with_umask_zero(tmp_path: Path) -> None:
    data_dir = tmp_path / "n1"
    run_with_umask_zero(
        "init", "--data", str(data_dir), "--name", "n1", "--listen", "127.0.0.1:0",
        "--admin", ADMIN, "--password", PASSWORD,
    )  # fmt: skip
    server = NodeProcess("n1", data_dir)
    try:
        server.start(preexec=lambda: os.umask(0))
        session_file = tmp_path / "config" / "session.json"
        run_with_umask_zero(
            "login", "--server", server.url, "--user", ADMIN, "--password", PASSWORD,
            "--session-file", str(session_file),
        )  # fmt: skip
        run_with_umask_zero("domain", "add", "acme", "--session-file", str(session_file))
        files = {path.name: stat.S_IMODE(path.stat().st_mode) for path in data_dir.iterdir()}
    finally:
        server.stop()
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert {DATABASE_FILE, f"{DATABASE_FILE}-wal", f"{DATABASE_FILE}-shm"} <= set(files)
    assert files == dict.fromkeys(files, 0o600), files
    assert stat.S_IMODE(session_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(session_file.parent.stat().st_mode) == 0o700
