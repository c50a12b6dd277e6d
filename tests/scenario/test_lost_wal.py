"""A draft lost with the `-wal` file is told, not hidden: a real server process holding a
draft with changes is SIGKILLed, its `-wal` and `-shm` files are removed, and the server
started again logs the loss, naming the session; `crdtmds login --continue-session` says
on stderr that the draft was lost."""

from __future__ import annotations

import json
from pathlib import Path

from crdtmds_cli.main import app
from typer.testing import CliRunner, Result

from crdtmds.config import DATABASE_FILE
from crdtmds.storage import JOURNAL_FILE
from crdtmds.testing.localcluster import LocalCluster

DOMAIN = "acme"


def cli(cluster: LocalCluster, login_file: Path, *args: str) -> Result:
    argv = [*args, "--login-file", str(login_file)]
    result = CliRunner().invoke(app, argv, env={"CRDTMDS_PASSWORD": cluster.password})
    assert result.exit_code == 0, (args, result.output)
    return result


def log_in(cluster: LocalCluster, login_file: Path, *extra: str) -> Result:
    server = cluster.servers[0]
    return cli(cluster, login_file, "login", "--server", server.url, "--user", cluster.admin,
               "--domain", DOMAIN, *extra)  # fmt: skip


def test_a_draft_lost_with_the_wal_file_is_logged_and_told(tmp_path: Path) -> None:
    with LocalCluster(tmp_path / "cluster", 1) as cluster:
        cluster.start()
        server = cluster.servers[0]
        setup = tmp_path / "setup.json"
        cli(cluster, setup, "login", "--server", server.url, "--user", cluster.admin)
        cli(cluster, setup, "domain", "add", DOMAIN)
        server.stop()  # a clean stop checkpoints the WAL: the domain is in the database file
        server.start()

        login_file = tmp_path / "login.json"
        log_in(cluster, login_file)
        cli(cluster, login_file, "host", "add", "web", "--ip", "192.0.2.10")
        cli(cluster, login_file, "network", "add", "lan", "--subnet", "192.0.2.0/24")
        uid = json.loads(login_file.read_text())["session_uid"]
        journal = json.loads((server.data_dir / JOURNAL_FILE).read_text())
        assert [e["uid"] for e in journal["sessions"]] == [uid]

        server.kill()
        for suffix in ("-wal", "-shm"):
            (server.data_dir / (DATABASE_FILE + suffix)).unlink()
        server.start()
        warnings = [line for line in server.log().splitlines() if uid in line]
        assert len(warnings) == 1, server.log()[-3000:]
        assert "WARNING" in warnings[0]
        assert f"session {uid} of 'admin' on '{DOMAIN}' (last active " in warnings[0]
        assert "unpublished changes were lost (was the -wal file removed?)" in warnings[0]

        resumed = log_in(cluster, tmp_path / "again.json", "--continue-session")
        assert uid in resumed.stderr and "was lost" in resumed.stderr, resumed.stderr
        assert resumed.stderr.startswith("warning: ")
        assert json.loads((tmp_path / "again.json").read_text())["session_uid"] != uid
        shown = cli(cluster, tmp_path / "again.json", "host", "list", "--json").stdout
        assert "web" not in shown
