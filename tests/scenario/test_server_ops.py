"""Operating servers with real processes: removing a server for good, a server that lost
its data rejoining under its name (`join --replace`), moving a server to a new address,
one server per data directory, and `crdtmds status` exit codes and login."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.helpers.cluster import (
    ADMIN,
    PASSWORD,
    ApiClient,
    Cluster,
    create_domain,
    host_names,
    publish_hosts,
    run_cli,
    wait_converged,
)

WAIT = 30.0


def login(login_file: Path, url: str) -> None:
    run_cli("login", "--server", url, "--user", ADMIN, "--password", PASSWORD,
            "--login-file", str(login_file))  # fmt: skip


def status(login_file: Path) -> subprocess.CompletedProcess[str]:
    return run_cli("status", "--login-file", str(login_file), "--timeout", "2", check=False)


def wait_status_code(login_file: Path, code: int) -> subprocess.CompletedProcess[str]:
    deadline = time.monotonic() + WAIT
    result = status(login_file)
    while result.returncode != code and time.monotonic() < deadline:
        time.sleep(0.5)
        result = status(login_file)
    assert result.returncode == code, result.stdout + result.stderr
    return result


def wait_for(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_removed_server_is_no_longer_waited_for_and_is_refused(tmp_path: Path) -> None:
    with Cluster(tmp_path) as cluster:
        n1 = cluster.init("n1")
        cluster.join("n2", peer=n1.url)
        stray = cluster.join("stray", peer=n1.url)
        stray.stop()  # gone for good
        login_file = tmp_path / "login.json"
        login(login_file, n1.url)
        result = wait_status_code(login_file, 4)
        assert "converged: no" in result.stdout and "UNREACHABLE" in result.stdout

        refused = run_cli("server", "remove", "n1", "--login-file", str(login_file), check=False)
        assert refused.returncode == 1 and "server you are connected to" in refused.stderr
        run_cli("server", "remove", "stray", "--login-file", str(login_file))
        result = wait_status_code(login_file, 0)
        assert "converged: yes" in result.stdout and "stray" not in result.stdout

        stray.start()  # its own copy still lists it; every other server refuses it
        wait_for(lambda: "was removed from the cluster" in n1.log(), "n1 to refuse stray")
        wait_for(lambda: "was removed from the cluster" in cluster["n2"].log(), "n2 refusal")
        report = asyncio.run(wait_converged(n1.url, servers=2))
        assert sorted(s["name"] for s in report["servers"]) == ["n1", "n2"]
        assert all(not s["peers"] or s["peers"] == [o] for s, o in
                   zip(report["servers"], ["n2", "n1"], strict=True))  # fmt: skip


def test_a_server_that_lost_its_data_rejoins_with_replace(tmp_path: Path) -> None:
    with Cluster(tmp_path) as cluster:
        n1 = cluster.init("n1")
        n2 = cluster.join("n2", peer=n1.url)
        asyncio.run(create_domain(n1.url, "acme"))
        asyncio.run(publish_hosts(n1.url, "acme", ["web1", "web2"]))
        asyncio.run(wait_converged(n1.url, servers=2, domains={"acme"}))
        n2.stop()
        shutil.rmtree(n2.data_dir)  # the disk is lost

        args = ("join", "--data", str(n2.data_dir), "--name", "n2", "--listen", "127.0.0.1:0",
                "--peer", n1.url, "--secret", cluster.secret, "--timeout", "30")  # fmt: skip
        plain = run_cli(*args, check=False)
        assert plain.returncode == 1 and "join --replace" in plain.stderr
        run_cli(*args, "--replace")
        n2.start()
        asyncio.run(wait_converged(n1.url, servers=2, domains={"acme"}))
        assert asyncio.run(host_names(n2.url, "acme")) == ["web1", "web2"]
        asyncio.run(publish_hosts(n2.url, "acme", ["web3"], octet=2))
        wait_for(lambda: "web3" in asyncio.run(host_names(n1.url, "acme")), "web3 on n1")


def test_moving_a_server_and_one_server_per_data_directory(tmp_path: Path) -> None:
    with Cluster(tmp_path) as cluster:
        n1 = cluster.init("n1")
        n2 = cluster.join("n2", peer=n1.url)
        login_file = tmp_path / "login.json"
        login(login_file, n1.url)

        second = run_cli("start", "--data", str(n2.data_dir), check=False, timeout=WAIT)
        assert second.returncode == 1
        assert f"is already served by process {n2.process.pid}" in second.stderr  # type: ignore[union-attr]

        n2.stop()
        taken = n1.url.rsplit(":", 1)[1]
        busy = run_cli("start", "--data", str(n2.data_dir), "--listen", f"127.0.0.1:{taken}",
                       check=False, timeout=WAIT)  # fmt: skip
        assert busy.returncode == 1
        assert f"address already in use: another crdtmds (or another program) listens on " \
               f"127.0.0.1:{taken}" in busy.stderr  # fmt: skip

        port = free_port()
        n2.start_args = ["--listen", f"127.0.0.1:{port}", "--url", f"ws://127.0.0.1:{port}"]
        assert n2.start() == f"ws://127.0.0.1:{port}"
        n2.start_args = []
        report = asyncio.run(wait_converged(n1.url, servers=2))
        urls = {s["name"]: s["url"] for s in report["servers"]}
        assert urls["n2"] == f"ws://127.0.0.1:{port}"
        wait_for(lambda: "n2" in _peers_of(n1.url), "n1 to dial n2's new URL")
        n2.stop()
        assert n2.start() == f"ws://127.0.0.1:{port}"  # kept for later starts
        wait_status_code(login_file, 0)


def _peers_of(url: str) -> list[str]:
    async def ask() -> list[str]:
        async with ApiClient(url) as api:
            await api.login()
            return list((await api.call("show-status"))["peers"])

    return asyncio.run(ask())


def test_bad_addresses_are_refused_at_once(tmp_path: Path) -> None:
    with Cluster(tmp_path) as cluster:
        n1 = cluster.init("n1")
        port = free_port()
        started = time.monotonic()
        own = run_cli("join", "--data", str(tmp_path / "x"), "--name", "x", "--listen",
                      f"127.0.0.1:{port}", "--peer", f"ws://127.0.0.1:{port}",
                      "--secret", cluster.secret, check=False)  # fmt: skip
        assert own.returncode == 2 and "own --listen address" in own.stderr
        assert time.monotonic() - started < 20
        for option, value, words in [
            ("--url", "http://h:1", "expected ws://"),
            ("--url", "ws://h", "no port"),
            ("--listen", "ws://h:1", "a URL goes in --url"),
            ("--listen", "h", "HOST:PORT"),
        ]:
            bad = run_cli("init", "--data", str(tmp_path / "y"), "--name", "y", "--listen",
                          "127.0.0.1:0", option, value, "--password", PASSWORD,
                          check=False)  # fmt: skip
            assert bad.returncode == 2 and words in bad.stderr, (option, value, bad.stderr)
        warned = run_cli("init", "--data", str(tmp_path / "z"), "--name", "z", "--listen",
                         "0.0.0.0:0", "--password", PASSWORD)  # fmt: skip
        assert "without --url advertises" in warned.stderr
        anonymous = run_cli("status", "--server", n1.url, "--login-file",
                            str(tmp_path / "none.json"), check=False)  # fmt: skip
        assert anonymous.returncode == 1 and "needs a login" in anonymous.stderr
