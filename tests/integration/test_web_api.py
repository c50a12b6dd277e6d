"""The HTTPS Web API door, against real server processes on 127.0.0.1: the README's curl
examples as written, what the stock Check Point clients rely on on the wire (status line,
JSON objects, keep-alive and `Connection: close`, bare TLS handshakes, fingerprints), and
bad input: each refusal has its Check Point code and HTTP status, and changes nothing."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from tests.integration.web_api_helpers import (
    ADMIN,
    PASSWORD,
    WAIT,
    LocalServer,
    Reply,
    WebApi,
    domain_heads,
    init_server,
    join_server,
    read_until_closed,
    run_cli,
    served_certificate,
    sha1_hex,
    sha256_hex,
    tls_socket,
    web_api_of,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 1.5
"""The servers' --web-api-timeout here."""
MAX_BODY = 65536
DOMAIN = "Bad"

pytestmark = pytest.mark.timeout(120)


class Pair:
    def __init__(self, first: LocalServer, second: LocalServer) -> None:
        self.first, self.second = first, second
        self.url = web_api_of(first)["url"]
        self.other_url = web_api_of(second)["url"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """Two servers of one cluster, each with a Web API; domain DOMAIN holds one host."""
    root = tmp_path_factory.mktemp("web-api")
    args = ["--web-api-timeout", str(TIMEOUT), "--max-message-size", str(MAX_BODY)]
    first, secret = init_server(root, "w1", args)
    second: LocalServer | None = None
    try:
        first.start()
        second = join_server(root, "w2", first.url, secret)
        second.start()
        pair = Pair(first, second)
        api = WebApi(pair.url)
        api.ok("add-domain", {"name": DOMAIN}, sid=api.login())
        sid = api.login(DOMAIN)
        api.ok("add-host", {"name": "h0", "ipv4-address": "10.0.0.1"}, sid=sid)
        api.ok("publish", sid=sid)
        api.close()
        yield pair
    finally:
        for server in (first, second):
            if server is not None:
                server.stop()


def assert_refused(reply: Any, status: int, *codes: str) -> dict[str, Any]:
    """A JSON object error with one of `codes`, a string message and `status`."""
    data = reply.data
    assert reply.status == status, (reply.status, data)
    assert data.get("code") in codes, data
    assert isinstance(data.get("message"), str) and data["message"]
    for key in ("errors", "warnings", "blocking-errors"):
        for item in data.get(key, []):
            assert isinstance(item, dict) and isinstance(item.get("message"), str)
    assert "Set-Cookie" not in reply.headers
    return data


# ---------------------------------------------------------------- the README


def readme_curl_block() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("## Use your Check Point tools", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "the README's Web API section has no sh block"
    return match.group(1)


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_readme_curl_examples_run_as_written(pair: Pair) -> None:
    env = {
        **os.environ,
        "WEB_API": pair.url,
        "WEB_API_CERT": str(pair.first.data_dir / "web-api-cert.pem"),
        "ADMIN_PASSWORD": PASSWORD,
    }
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", readme_curl_block()],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    replies = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert all(isinstance(r, dict) for r in replies)
    assert any(r.get("name") == "web1" and r.get("type") == "host" for r in replies)
    tasks = next(r["tasks"] for r in replies if "tasks" in r)
    assert tasks[0]["status"] == "succeeded"
    assert any(r.get("name") == "Network" and "rulebase" in r for r in replies)
    assert replies[-1] == {"message": "OK"}


# ---------------------------------------------------------------- the wire


def test_login_reply_and_the_same_login_over_the_websocket(pair: Pair) -> None:
    api = WebApi(pair.url)
    reply = api.call("login", {"user": ADMIN, "password": PASSWORD, "domain": DOMAIN},
                     sid="stale-sid-ignored-on-login",
                     headers={"Authorization": "Basic YWRtaW46aWdub3JlZA=="})  # fmt: skip
    assert (reply.status, reply.reason) == (200, "OK")
    login = reply.data
    for key in ("sid", "uid", "api-server-version", "url"):
        assert isinstance(login[key], str) and login[key], key
    assert isinstance(login["session-timeout"], int) and isinstance(login["read-only"], bool)
    assert "last-login-was-at" in login
    assert login["url"] == pair.url + "/web_api"
    api.ok("add-host", {"name": "shared", "ipv4-address": "10.9.0.1"}, sid=login["sid"])
    with connect(pair.first.url + "/api", open_timeout=WAIT, proxy=None) as ws:
        ws.send(json.dumps({"id": 1, "command": "show-session", "sid": login["sid"]}))
        session = json.loads(ws.recv(WAIT))["result"]
    assert session["uid"] == login["uid"] and session["changes"] >= 1
    versioned = api.post(f"/web_api/v{login['api-server-version']}/discard", sid=login["sid"])
    assert versioned.status == 200
    api.close()


def raw_exchange(url: str, requests: bytes) -> bytes:
    with tls_socket(url) as sock:
        sock.sendall(requests)
        return read_until_closed(sock)


def test_status_line_keep_alive_and_connection_close(pair: Pair) -> None:
    request = (
        b"POST /web_api/show-status HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2\r\n%s\r\n{}"
    )
    # two requests on one connection, the second asking to close it
    data = raw_exchange(pair.url, request % b"" + request % b"Connection: close\r\n")
    assert data.count(b"HTTP/1.1 200 OK\r\n") == 2, data[:300]
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"set-cookie" not in data.lower()
    # http.client keeps one connection for many calls (the Python SDK's way)
    api = WebApi(pair.url)
    sid = api.login()
    for _ in range(3):
        assert api.ok("show-domains", sid=sid)["total"] >= 1
    api.close()


def test_router_answers_expect_continue_and_odd_paths(pair: Pair) -> None:
    request = (
        b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2\r\n%s\r\n{}"
    )
    data = raw_exchange(
        pair.url,
        request % (b"/web_api/show-status", b"Expect: 100-continue\r\n")
        + request % (b"/web_api/show%2Dstatus", b"")
        + request % (b"/web_api/a%2Fb", b"Connection: close\r\n"),
    )
    assert data.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"), data[:300]
    assert data.count(b"HTTP/1.1 200 OK\r\n") == 2, data[:600]
    last = data[data.rindex(b"HTTP/1.1 ") :]
    assert last.startswith(b"HTTP/1.1 404 Not Found\r\n"), last[:300]
    assert json.loads(last.split(b"\r\n\r\n", 1)[1])["code"] == "generic_err_command_not_found"


def test_bare_tls_handshakes_cost_nothing(pair: Pair) -> None:
    log_before = len(pair.first.log())
    for _ in range(3):
        der = served_certificate(pair.url)
    assert sha1_hex(der) == web_api_of(pair.first)["fingerprint-sha1"]
    assert WebApi(pair.url).ok("show-status")["status"] == "up"
    new_log = pair.first.log()[log_before:]
    assert not re.search(r"ERROR|CRITICAL|WARNING|Traceback", new_log), new_log


def test_fingerprints_in_status_and_crdtmds_status(pair: Pair) -> None:
    der = served_certificate(pair.url)
    web = web_api_of(pair.first)
    assert web["fingerprint-sha1"] == sha1_hex(der)
    assert web["fingerprint-sha256"] == sha256_hex(der)
    assert re.fullmatch(r"[0-9A-F]{40}", web["fingerprint-sha1"])
    report = json.loads(run_cli(
        "status", "--server", pair.first.url, "--json", "--user", ADMIN, "--password", PASSWORD
    ))
    rows = {row["name"]: row for row in report["servers"]}
    assert rows["w1"]["web-api"] == web
    assert rows["w2"]["web-api"]["url"] == pair.other_url
    text = run_cli("status", "--server", pair.first.url, "--user", ADMIN, "--password", PASSWORD)
    assert web["fingerprint-sha1"] in text and pair.other_url in text


def test_fingerprint_and_url_survive_a_restart(tmp_path: Path) -> None:
    server, _ = init_server(tmp_path, "r1", [])
    key = server.data_dir / "web-api-key.pem"
    assert key.stat().st_mode & 0o777 == 0o600
    try:
        server.start()
        before = web_api_of(server)
        assert sha1_hex(served_certificate(before["url"])) == before["fingerprint-sha1"]
        server.stop()
        server.start()
        after = web_api_of(server)
        assert after == before
        assert sha1_hex(served_certificate(after["url"])) == before["fingerprint-sha1"]
    finally:
        server.stop()


# ---------------------------------------------------------------- bad input


def _expired_sid(api: WebApi) -> str:
    sid = api.login(DOMAIN, **{"session-timeout": 1})
    time.sleep(1.3)
    return sid


ADD = {"name": "intruder", "ipv4-address": "10.66.0.1"}
BAD_INPUT: list[tuple[str, Any]] = [
    ("malformed JSON", lambda api, sid, pair: api.post("/web_api/add-host", b'{"name": ', sid=sid)),
    ("non-object body", lambda api, sid, pair: api.post("/web_api/add-host", [ADD], sid=sid)),
    ("wrong content type", lambda api, sid, pair: api.post(
        "/web_api/add-host", json.dumps(ADD), sid=sid, headers={"Content-Type": "text/plain"})),
    ("unknown command", lambda api, sid, pair: api.call("add-unicorn", ADD, sid=sid)),
    ("unknown parameter", lambda api, sid, pair: api.call(
        "add-host", {**ADD, "hit-count": True}, sid=sid)),
    ("missing parameter", lambda api, sid, pair: api.call("add-host", {"name": "x"}, sid=sid)),
    ("object not found", lambda api, sid, pair: api.call("show-host", {"name": "nope"}, sid=sid)),
    ("missing sid", lambda api, sid, pair: api.call("add-host", ADD)),
    ("forged sid", lambda api, sid, pair: api.call("add-host", ADD, sid="F" * 32)),
    ("expired sid", lambda api, sid, pair: api.call("add-host", ADD, sid=_expired_sid(api))),
    ("sid of another server", lambda api, sid, pair: api.call(
        "add-host", ADD, sid=WebApi(pair.other_url).login(DOMAIN))),
    ("wrong password", lambda api, sid, pair: api.call(
        "login", {"user": ADMIN, "password": "wrong-password", "domain": DOMAIN})),
    ("GET", lambda api, sid, pair: _get(api, "/web_api/add-host")),
    ("no such path", lambda api, sid, pair: api.post("/api/web/add-host", ADD, sid=sid)),
]  # fmt: skip
EXPECTED = {
    "malformed JSON": (400, "generic_err_invalid_syntax"),
    "non-object body": (400, "generic_err_invalid_syntax"),
    "wrong content type": (400, "generic_err_invalid_syntax"),
    "unknown command": (404, "generic_err_command_not_found"),
    "unknown parameter": (
        400,
        "generic_err_invalid_parameter_name",
        "generic_err_invalid_parameter",
    ),
    "missing parameter": (400, "generic_err_missing_required_parameters"),
    "object not found": (404, "generic_err_object_not_found"),
    "missing sid": (401, "generic_err_wrong_session_id", "generic_err_missing_session_id"),
    "forged sid": (401, "generic_err_wrong_session_id"),
    "expired sid": (401, "generic_err_session_expired", "generic_err_wrong_session_id"),
    "sid of another server": (401, "generic_err_wrong_session_id"),
    "wrong password": (400, "err_login_failed"),
    "GET": (405, "generic_err_method_not_allowed"),
    "no such path": (404, "generic_err_command_not_found"),
}


def _get(api: WebApi, path: str) -> Any:
    api.connection.request("GET", path)
    response = api.connection.getresponse()
    return Reply(response.status, response.reason, response.headers, response.read())


@pytest.mark.parametrize("case", [name for name, _ in BAD_INPUT])
def test_bad_input_is_refused_with_its_code_and_changes_nothing(pair: Pair, case: str) -> None:
    send = dict(BAD_INPUT)[case]
    api = WebApi(pair.url)
    sid = api.login(DOMAIN)
    heads = domain_heads(pair.first, DOMAIN)
    status, *codes = EXPECTED[case]
    assert_refused(send(api, sid, pair), status, *codes)
    api.close()
    after = WebApi(pair.url)
    after.ok("publish", sid=after.login(DOMAIN, **{"continue-last-session": True}))
    assert domain_heads(pair.first, DOMAIN) == heads
    assert after.ok("show-status")["status"] == "up"  # the server still serves


def test_oversize_body_gets_413(pair: Pair) -> None:
    api = WebApi(pair.url)
    sid = api.login(DOMAIN)
    heads = domain_heads(pair.first, DOMAIN)
    body = json.dumps({**ADD, "comments": "x" * (MAX_BODY + 10)})
    data = assert_refused(api.post("/web_api/add-host", body, sid=sid), 413,
                          "err_request_too_large")  # fmt: skip
    assert "64 KiB" in data["message"]
    assert domain_heads(pair.first, DOMAIN) == heads


def test_throttled_logins_get_429(pair: Pair) -> None:
    api = WebApi(pair.url)
    codes = []
    for _ in range(8):
        reply = api.call("login", {"user": "guesser", "password": "not-the-password"})
        codes.append((reply.status, reply.data["code"]))
        if reply.status == 429:
            assert int(reply.headers["Retry-After"]) >= 1
            break
    assert codes[0] == (400, "err_login_failed")
    assert codes[-1] == (429, "err_too_many_requests"), codes


def test_plain_http_on_the_https_port_is_refused(pair: Pair) -> None:
    port = int(pair.url.rsplit(":", 1)[1])
    log_before = len(pair.first.log())
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(b"POST /web_api/login HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        started = time.monotonic()
        data = read_until_closed(sock)
    assert not data.startswith(b"HTTP/"), data[:100]
    assert time.monotonic() - started < TIMEOUT + 5
    assert WebApi(pair.url).ok("show-status")["status"] == "up"
    new_log = pair.first.log()[log_before:]
    assert not re.search(r"ERROR|CRITICAL|Traceback", new_log), new_log


def test_slow_clients_are_dropped_and_hold_no_session(pair: Pair) -> None:
    api = WebApi(pair.url)
    system = api.login()
    sessions = api.ok("show-sessions", {"limit": 500}, sid=system)["total"]
    login = json.dumps({"user": ADMIN, "password": PASSWORD, "domain": DOMAIN}).encode()
    head = (
        b"POST /web_api/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(login)
    )
    for partial in (head[:40], head + login[:10]):  # headers unfinished; body unfinished
        started = time.monotonic()
        with tls_socket(pair.url) as sock:
            sock.sendall(partial)
            data = read_until_closed(sock)
        waited = time.monotonic() - started
        assert TIMEOUT - 0.2 < waited < TIMEOUT + 5, waited
        if data:  # a body cut short is answered before the close
            assert data.startswith(b"HTTP/1.1 408 ")
            assert json.loads(data.split(b"\r\n\r\n", 1)[1])["code"] == "err_request_timeout"
    # the idle kept-alive connection was closed meanwhile too: a new one
    again = WebApi(pair.url)
    assert again.ok("show-sessions", {"limit": 500}, sid=system)["total"] == sessions
