"""Names and the text around them: which characters and shapes a name may have, and that
text from clients and peers reaches logs and terminals escaped.

Every kind of name (objects of each type, tags, rule names, administrators, domains,
servers, sessions) refuses control, format and bidi characters; object names also refuse
"Any" in any case and the shape of a uid. Names stored before these checks (or by an
older peer) still load and are shown escaped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import unicodedata
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from crdtmds_cli import server as server_cli
from crdtmds_cli.main import app
from typer.testing import CliRunner

from crdtmds.api.dispatch import AdminAPI
from crdtmds.api_socket import ApiError
from crdtmds.bootstrap import init_cluster
from crdtmds.client import Client
from crdtmds.core import auth, model, names
from crdtmds.core.cluster import ClusterDocument
from crdtmds.core.domain import Domain
from crdtmds.core.session import Session
from crdtmds.errors import CrdtmdsError
from crdtmds.server import Server
from crdtmds.transports.ws_api import JsonConnection
from tests.helpers.api_doors import admin_api

VALIDATION = "err_validation_failed"
UNSAFE = {
    "ESC": "\x1b",
    "newline": "\n",
    "tab": "\t",
    "RLO": "\u202e",
    "line separator": "\u2028",
    "ZWJ": "\u200d",
}
"""One character of each kind a name must not hold, by what it is."""
MORE_UNSAFE = ["\r", "\x7f", "\x9b", "\u2029", "\ufeff", "\u2066", "\U000e0001", "\x00"]
OBJECT_PARAMS: dict[str, dict[str, Any]] = {
    "host": {"ipv4-address": "192.0.2.1"},
    "network": {"subnet4": "192.0.2.0", "mask-length4": 24},
    "address-range": {"ipv4-address-first": "192.0.2.1", "ipv4-address-last": "192.0.2.9"},
    "group": {},
    "service-tcp": {"port": 443},
    "service-udp": {"port": 53},
}
PASSWORD = "names-test-password"


def code_of(char: str) -> str:
    return f"U+{ord(char):04X}"


def expect_refusal(call: Callable[[], Any], char: str, code: str = VALIDATION) -> CrdtmdsError:
    """`call()` fails with `code`, naming the offending character as U+XXXX."""
    with pytest.raises(CrdtmdsError) as caught:
        call()
    error = caught.value
    assert error.code == code, error
    assert code_of(char) in error.message
    assert error.details["character"] == code_of(char)
    assert char not in error.message  # the message itself is safe to log and print
    return error


@contextlib.contextmanager
def unchecked_names(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Write as a server without these checks did: names stored as given."""
    with monkeypatch.context() as patch:
        patch.setattr(names, "check_name", lambda value, field="name": value)
        yield


# ---------------------------------------------------------------- the model


@pytest.fixture
def domain() -> Domain:
    return Domain.create("acme", "doc-names")


@pytest.fixture
def session(domain: Domain) -> Session:
    return Session.open(domain, admin="alice", server="s1")


def assert_nothing_written(session: Session, edit: Callable[[], Any], char: str) -> None:
    session.take_unsaved_changes()
    edits, view = session.stored_edits, session.view.copy()
    expect_refusal(edit, char)
    assert session.stored_edits == edits
    assert session.view == view
    assert session.take_unsaved_changes() == []


@pytest.mark.parametrize("char", [*UNSAFE.values(), *MORE_UNSAFE], ids=repr)
@pytest.mark.parametrize("obj_type", sorted(OBJECT_PARAMS))
def test_object_names_refuse_control_format_and_bidi_characters(
    session: Session, obj_type: str, char: str
) -> None:
    params = {"name": f"web{char}x", **OBJECT_PARAMS[obj_type]}
    assert_nothing_written(session, lambda: session.add_object(obj_type, params), char)


@pytest.mark.parametrize("char", UNSAFE.values(), ids=UNSAFE.keys())
@pytest.mark.parametrize("where", ["start", "end"])
def test_blanks_are_not_stripped_away_before_the_check(
    session: Session, char: str, where: str
) -> None:
    name = f"{char}web" if where == "start" else f"web{char}"
    params = {"name": name, "ipv4-address": "192.0.2.1"}
    assert_nothing_written(session, lambda: session.add_object("host", params), char)


@pytest.mark.parametrize("char", UNSAFE.values(), ids=UNSAFE.keys())
def test_renames_tags_and_rule_names_refuse_them_too(session: Session, char: str) -> None:
    session.add_object("host", {"name": "web", "ipv4-address": "192.0.2.1"})
    rule = session.add_rule({"name": "r1"})
    edits = [
        lambda: session.set_object("host", {"name": "web", "new-name": f"w{char}"}),
        lambda: session.add_object(
            "host", {"name": "db", "ipv4-address": "192.0.2.2", "tags": ["ok", f"t{char}"]}
        ),
        lambda: session.add_rule({"name": f"r{char}2"}),
        lambda: session.set_rule({"uid": rule["uid"], "new-name": f"r{char}1"}),
    ]
    for edit in edits:
        assert_nothing_written(session, edit, char)


def test_the_error_names_the_parameter_and_the_character(session: Session) -> None:
    session.add_object("host", {"name": "x", "ipv4-address": "192.0.2.1"})
    error = expect_refusal(
        lambda: session.set_object("host", {"name": "x", "new-name": "a\u202eb"}), "\u202e"
    )
    assert error.details["parameter"] == "new-name"
    assert "'new-name'" in error.message and "U+202E" in error.message


@pytest.mark.parametrize("char", ["\x1b", "\u202e", "\u2028", "\x9b", "\r"], ids=repr)
def test_comments_keep_tabs_and_newlines_but_refuse_other_controls(
    session: Session, char: str
) -> None:
    record = session.add_object(
        "host", {"name": "web", "ipv4-address": "192.0.2.1", "comments": "one\n\ttwo"}
    )
    assert record["comments"] == "one\n\ttwo"
    rule = session.add_rule({"name": "r1", "comments": "a\nb"})
    assert rule["comments"] == "a\nb"
    assert_nothing_written(
        session, lambda: session.set_object("host", {"name": "web", "comments": char}), char
    )
    assert_nothing_written(
        session, lambda: session.set_rule({"uid": rule["uid"], "comments": char}), char
    )
    expect_refusal(lambda: session.publish(f"publish{char}", b"\x01" * 16), char)


@pytest.mark.parametrize("name", ["Any", "ANY", "any", " aNy ", "ANy"])
def test_any_in_any_letter_case_is_not_an_object_or_tag_name(session: Session, name: str) -> None:
    session.add_object("host", {"name": "web", "ipv4-address": "192.0.2.1"})
    for edit in (
        lambda: session.add_object("host", {"name": name, "ipv4-address": "192.0.2.2"}),
        lambda: session.set_object("host", {"name": "web", "new-name": name}),
        lambda: session.set_object("host", {"name": "web", "tags": [name]}),
    ):
        with pytest.raises(CrdtmdsError) as caught:
            edit()
        assert caught.value.code == VALIDATION
        assert "reserved" in caught.value.message
    assert session.view.find_object(name.strip()) is None


@pytest.mark.parametrize(
    "name",
    [model.new_uid(), model.new_uid().upper(), model.ANY_UID, f" {model.new_uid()} "],
)
def test_uid_shaped_names_are_refused(session: Session, name: str) -> None:
    for obj_type, params in OBJECT_PARAMS.items():
        with pytest.raises(CrdtmdsError) as caught:
            session.add_object(obj_type, {"name": name, **params})
        assert caught.value.code == VALIDATION and "uid" in caught.value.message
    assert session.view.objects == {}


@pytest.mark.parametrize(
    "name", ["anything", "Any-host", "12345678-1234-1234-1234-12345678", "évora\u00a0gw", "网关"]
)
def test_names_near_the_refused_ones_are_fine(session: Session, name: str) -> None:
    assert session.add_object("host", {"name": name, "ipv4-address": "192.0.2.1"})["name"] == name


@pytest.mark.parametrize("char", UNSAFE.values(), ids=UNSAFE.keys())
def test_domain_and_session_names_refuse_them(domain: Domain, char: str) -> None:
    expect_refusal(lambda: Domain.create(f"acme{char}", "doc-x"), char)
    expect_refusal(lambda: Session.open(domain, admin="a", server="s1", name=f"s{char}"), char)


@pytest.mark.parametrize("char", UNSAFE.values(), ids=UNSAFE.keys())
def test_administrator_domain_and_server_names_refuse_them(char: str) -> None:
    cluster = ClusterDocument.create("cluster-1", "doc-1")
    cluster.add_server("eu1", "ws://127.0.0.1:1", "eu", "primary")
    heads = cluster.doc.get_heads()
    name = f"eve{char}x"
    expect_refusal(lambda: cluster.add_administrator(name, auth.hash_password(PASSWORD)), char)
    expect_refusal(lambda: cluster.add_domain(name, "doc-2", created_by="root"), char)
    expect_refusal(lambda: cluster.add_server(name, "ws://127.0.0.1:2", "eu", "secondary"), char)
    expect_refusal(lambda: cluster.add_server("us1", "ws://127.0.0.1:2", name, "secondary"), char)
    assert cluster.doc.get_heads() == heads


@pytest.mark.parametrize("name", ["any", "ANY", model.new_uid()])
def test_cluster_names_refuse_any_and_uid_shapes(name: str) -> None:
    cluster = ClusterDocument.create("cluster-1", "doc-1")
    for write in (
        lambda: cluster.add_administrator(name, auth.hash_password(PASSWORD)),
        lambda: cluster.add_domain(name, "doc-2", created_by="root"),
        lambda: cluster.add_server(name, "ws://127.0.0.1:2", "eu", "secondary"),
    ):
        with pytest.raises(CrdtmdsError) as caught:
            write()
        assert caught.value.code == VALIDATION
    assert cluster.administrators() == cluster.domains() == cluster.servers() == {}


def test_names_stored_before_the_checks_still_load_and_update(
    monkeypatch: pytest.MonkeyPatch, domain: Domain
) -> None:
    cluster = ClusterDocument.create("cluster-1", "doc-1")
    with unchecked_names(monkeypatch):
        cluster.add_server("eu\x1b1", "ws://127.0.0.1:1", "eu", "primary")
        setup = Session.open(domain, admin="setup", server="s1")
        setup.add_object("host", {"name": "old\x1b[2J", "ipv4-address": "192.0.2.1"})
        setup.publish_in_memory("")
    # The server re-registers a new URL under its old name (register_self at start).
    cluster.add_server("eu\x1b1", "ws://127.0.0.1:9", "eu", "primary")
    assert cluster.servers()["eu\x1b1"]["url"] == "ws://127.0.0.1:9"
    reloaded = Domain("doc-names", domain.doc.fork())
    assert reloaded.state.find_object("old\x1b[2J") is not None
    session = Session.open(reloaded, admin="alice", server="s1")
    renamed = session.set_object("host", {"name": "old\x1b[2J", "new-name": "fixed"})
    assert renamed["name"] == "fixed"


# ---------------------------------------------------------------- escaping


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("\x1b[2J\x1b[H", "\\x1b[2J\\x1b[H"),
        ("a\nb\tc\rd", "a\\nb\\tc\\rd"),
        ("evil\u202etxt.exe", "evil\\u202etxt.exe"),
        ("x\u2028y\u200dz", "x\\u2028y\\u200dz"),
        ("\x9b31m\x7f", "\\x9b31m\\x7f"),
        ("tag\U000e0041", "tag\\U000e0041"),
        ("évora gw\u00a0网关 C:\\dir", "évora gw\u00a0网关 C:\\dir"),
    ],
)
def test_escape_text_makes_unsafe_characters_visible(text: str, shown: str) -> None:
    assert names.escape_text(text) == shown
    assert names.escape_text(shown) == shown
    assert names.first_unsafe_character(shown) == (-1, "")


def test_json_output_escapes_what_json_dumps_leaves_raw() -> None:
    from crdtmds_cli.output import json_text  # here: the module is new with this test

    data = {"name": "a\x1b\x9b\u202e\u2028\U000e0001b", "comments": "é\n网"}
    text = json_text(data)
    assert json.loads(text) == data
    assert names.first_unsafe_character(text, "\n") == (-1, "")
    assert "é" in text and "网" in text


# ---------------------------------------------------------------- the API and its log


@pytest.fixture
async def node(tmp_path: Path, cheap_password_hashes: None) -> AsyncIterator[Server]:
    await init_cluster(
        tmp_path, name="s1", listen_host="127.0.0.1", listen_port=0, url="ws://127.0.0.1:1",
        region="eu", admin="root", password=PASSWORD,
    )  # fmt: skip
    node = await Server.open(tmp_path)
    await node.cluster_admin.create_domain("acme", created_by="root")
    yield node
    await node.close()


class Caller:
    def __init__(self, api: AdminAPI) -> None:
        self.connection = JsonConnection(api, "192.0.2.1:40000")

    async def send(self, command: str, **params: Any) -> dict[str, Any]:
        request = {"id": 1, "command": command, "params": params}
        return json.loads(await self.connection.handle_text(json.dumps(request)))

    async def ok(self, command: str, **params: Any) -> dict[str, Any]:
        reply = await self.send(command, **params)
        assert "error" not in reply, reply
        return reply["result"]


async def test_api_refuses_bad_names_and_stores_nothing(node: Server) -> None:
    caller = Caller(admin_api(node, throttle=auth.LoginThrottle(limit=3)))
    await caller.ok("login", user="root", password=PASSWORD, domain="acme")
    cluster_heads = node.documents.cluster.doc.get_heads()
    for command, params in [
        ("add-host", {"name": "web\x1b[2J", "ip-address": "192.0.2.1"}),
        ("add-domain", {"name": "acme\n2"}),
        ("add-administrator", {"name": "eve\u202e", "password": "long-enough-password"}),
        ("add-access-rule", {"name": "r\u2028", "position": "top"}),
        ("publish", {"comments": "done\x1b]0;owned\x07"}),
    ]:
        reply = await caller.send(command, **params)
        error = reply["error"]
        assert error["code"] == VALIDATION, (command, reply)
        assert error["message"].startswith(f"'{error['details']['parameter']}' must not")
    assert node.documents.cluster.doc.get_heads() == cluster_heads
    assert (await caller.ok("show-changes"))["total"] == 0
    refused = await Caller(node.api).send(
        "login", user="root", password=PASSWORD, domain="acme", **{"session-name": "s\x1b"}
    )
    assert refused["error"]["code"] == VALIDATION


async def test_a_name_from_an_older_server_cannot_forge_log_lines(
    node: Server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    forger = "eve\n2026-01-01 00:00:00 INFO crdtmds.api root added administrator mallory"
    with unchecked_names(monkeypatch):
        await node.cluster_admin.add_administrator(forger, PASSWORD, superuser=True)
    caller = Caller(node.api)
    with caplog.at_level(logging.INFO, logger="crdtmds"):
        await caller.ok("login", user=forger, password=PASSWORD, domain="acme")
        await caller.ok("add-domain", name="globex")
        await caller.send("login", user=f"{forger}x", password="wrong")
    messages = [
        r.getMessage() for r in caplog.records if r.name in ("crdtmds.api", "crdtmds.logins")
    ]
    assert len(messages) == 3, messages
    for message in messages:
        assert "\n" not in message and "\r" not in message, message
    assert repr(forger) in messages[0] and "logged in" in messages[0]
    assert messages[1] == f"{forger!r} added domain 'globex'"


# ---------------------------------------------------------------- the command line


@pytest.fixture
def session_file(tmp_path: Path) -> Path:
    path = tmp_path / "session.json"
    stored = {"version": 1, "urls": ["ws://127.0.0.1:1"], "user": "root", "sid": "s",
              "server": "ws://127.0.0.1:1", "domain": "acme"}  # fmt: skip
    path.write_text(json.dumps(stored))
    return path


def fake_server(monkeypatch: pytest.MonkeyPatch, replies: dict[str, Any]) -> None:
    """Replace the client's calls: `replies` per command, a reply or an exception."""

    async def call(self: Client, command: str, **params: Any) -> dict[str, Any]:
        reply = replies[command]
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def close(self: Client) -> None:
        return None

    monkeypatch.setattr(Client, "call", call)
    monkeypatch.setattr(Client, "close", close)


EVIL_HOST = {
    "uid": "0b1c2d3e-0000-4000-8000-000000000001",
    "type": "host",
    "name": "web\x1b[2J\x1b[H",
    "ipv4-address": "192.0.2.1",
    "comments": "fine\nforged line \u202eexe.txt",
    "tags": ["t\x9b31m"],
    "color": "black",
}


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def assert_terminal_safe(text: str) -> None:
    """No control, format or separator character but the CLI's own line breaks."""
    unsafe = [c for c in text if c != "\n" and unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")]
    assert not unsafe, repr(text)


def test_cli_prints_stored_names_and_comments_escaped(
    monkeypatch: pytest.MonkeyPatch, session_file: Path
) -> None:
    listing = {"objects": [EVIL_HOST], "total": 1, "to": 1}
    fake_server(monkeypatch, {"show-host": EVIL_HOST, "show-hosts": listing})
    shown = cli("host", "show", "web", "--session-file", str(session_file))
    assert shown.exit_code == 0, shown.output
    assert_terminal_safe(shown.stdout)
    assert "web\\x1b[2J\\x1b[H" in shown.stdout
    assert "fine\\nforged line \\u202eexe.txt" in shown.stdout
    listed = cli("host", "list", "--session-file", str(session_file))
    assert listed.exit_code == 0, listed.output
    assert_terminal_safe(listed.stdout)
    assert len(listed.stdout.splitlines()) == 3  # header, rule, one host on one line
    as_json = cli("host", "show", "web", "--json", "--session-file", str(session_file))
    assert_terminal_safe(as_json.stdout)
    assert json.loads(as_json.stdout) == EVIL_HOST


def test_cli_prints_server_errors_escaped(
    monkeypatch: pytest.MonkeyPatch, session_file: Path
) -> None:
    error = ApiError("generic_err_object_not_found", "host 'x\x1b]0;owned\x07' not found")
    fake_server(monkeypatch, {"show-host": error})
    result = cli("host", "show", "x", "--session-file", str(session_file))
    assert result.exit_code == 1
    assert_terminal_safe(result.stderr)
    assert "x\\x1b]0;owned\\x07" in result.stderr


def test_cluster_status_from_a_hostile_server_is_escaped(monkeypatch: pytest.MonkeyPatch) -> None:
    report = {
        "servers": [{"name": "eu1\x1b[2J", "region": "eu\u202e", "role": "primary",
                     "reachable": True, "peers": ["us\n1"], "url": "ws://h:1"}],
        "domains": {"acme\u2028": {"converged": True, "heads": {"eu1\x1b[2J": ["ab" * 16]}}},
        "cluster-document": {"converged": True, "heads": {"eu1\x1b[2J": ["cd" * 16]}},
        "converged": True,
    }  # fmt: skip

    async def collect(server: str, **_: Any) -> dict[str, Any]:
        return report

    monkeypatch.setattr(server_cli, "collect_status", collect)
    result = cli("status", "--server", "ws://h:1")
    assert result.exit_code == 0, result.output
    assert_terminal_safe(result.stdout)
    assert "eu1\\x1b[2J" in result.stdout and "us\\n1" in result.stdout


@pytest.mark.parametrize("command", ["init", "join"])
def test_init_and_join_refuse_a_bad_server_name_before_writing(
    tmp_path: Path, command: str
) -> None:
    data = tmp_path / "data"
    args = [command, "--data", str(data), "--name", "eu\x1b1", "--listen", "127.0.0.1:0"]
    extra = ["--password", "pw"] if command == "init" else ["--peer", "ws://h:1", "--secret", "s"]
    result = cli(*args, *extra)
    assert result.exit_code == 1
    assert "U+001B" in result.stderr
    assert_terminal_safe(result.stderr)
    assert not data.exists()
