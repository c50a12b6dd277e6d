"""A stock JavaScript automerge-repo client (Server.js, @automerge/automerge-repo 2.5) syncs a
domain from a crdtmds server and sees later publishes arrive."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from crdtmds.client import Client
from crdtmds.testing.localcluster import LocalCluster

JS_DIR = Path(__file__).resolve().parents[1] / "js"
CLIENT_TIMEOUT_MS = 20_000


def _js_client_available() -> str | None:
    """Why the JavaScript client cannot run here, or None when it can."""
    if shutil.which("node") is None:
        return "Server.js is not installed"
    if not (JS_DIR / "node_modules" / "@automerge" / "automerge-repo").is_dir():
        return "tests/js dependencies are not installed (npm ci --prefix tests/js)"
    return None


pytestmark = pytest.mark.skipif(
    _js_client_available() is not None, reason=str(_js_client_available())
)


def _sync_url(server_url: str, user: str, password: str) -> str:
    return f"{server_url}/sync?user={user}&password={password}"


async def _until_listed(url: str, cluster: LocalCluster, host: str) -> None:
    """Wait (10 s at most) until the server at `url` lists `host` in acme."""
    deadline = time.monotonic() + 10.0
    while True:
        try:
            async with Client(
                [url], user=cluster.admin, password=cluster.password, domain="acme"
            ) as reader:
                hosts = (await reader.call("show-hosts"))["objects"]
            if host in [h["name"] for h in hosts]:
                return
        except Exception:  # the domain has not reached that server yet: ask again
            pass
        assert time.monotonic() < deadline, f"{url} never listed {host}"
        await asyncio.sleep(0.1)


async def test_js_repo_client_finds_a_domain_and_sees_a_later_publish(tmp_path: Path) -> None:
    with LocalCluster(tmp_path, 2).start() as cluster:
        first, second = cluster.urls
        async with Client([first], user=cluster.admin, password=cluster.password) as admin:
            entry = await admin.call("add-domain", name="acme")
        async with Client(
            [first], user=cluster.admin, password=cluster.password, domain="acme"
        ) as editor:
            await editor.call("add-host", **{"name": "before", "ipv4-address": "192.0.2.1"})
            await editor.call("publish")
            # The JS client asks the second server, which must hold the domain by then (a
            # repo client takes "not here" from its only peer as unavailable).
            await _until_listed(second, cluster, "before")
            js = subprocess.Popen(
                [
                    "node",
                    str(JS_DIR / "repo_client.mjs"),
                    _sync_url(second, cluster.admin, cluster.password),
                    entry["url"],
                    "after",
                    str(CLIENT_TIMEOUT_MS),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                assert js.stdout is not None
                first_state = json.loads(js.stdout.readline())
                assert first_state["domain"] == "acme"
                assert "before" in first_state["objects"]
                await editor.call("add-host", **{"name": "after", "ipv4-address": "192.0.2.2"})
                await editor.call("publish")
                out, err = js.communicate(timeout=CLIENT_TIMEOUT_MS / 1000 + 5)
            finally:
                if js.poll() is None:
                    js.kill()
        assert js.returncode == 0, f"JS client failed: {out} {err}"
        last = json.loads(out.strip().splitlines()[-1])
        assert last["objects"] == ["after", "before"]


async def test_js_repo_client_with_a_wrong_password_gets_nothing(tmp_path: Path) -> None:
    with LocalCluster(tmp_path, 1).start() as cluster:
        (url,) = cluster.urls
        async with Client([url], user=cluster.admin, password=cluster.password) as admin:
            entry = await admin.call("add-domain", name="acme")
        result = subprocess.run(
            [
                "node",
                str(JS_DIR / "repo_client.mjs"),
                _sync_url(url, cluster.admin, "wrong"),
                entry["url"],
                "anything",
                "3000",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode != 0
        assert '"objects"' not in result.stdout
