"""Acceptance tests of the Web API door with Check Point's own clients, against two real
server processes on 127.0.0.1: the official Python SDK (`cpapi`, from PyPI
`cp-mgmt-api-sdk`) end to end, a replay of the Terraform provider's calls under the Go
SDK's rules, and two HTTPS sessions on two servers editing the same objects at once."""

from __future__ import annotations

import builtins
import gzip
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import cpapi
import pytest

from tests.integration.web_api_helpers import (
    ADMIN,
    PASSWORD,
    WAIT,
    LocalServer,
    WebApi,
    domain_heads,
    init_server,
    join_server,
    run_cli,
    tls_socket,
    unverified,
)

CONVERGE = 20.0
"""Seconds two servers may take to hold the same heads of a domain."""
TASK_POLLS = 20
"""show-task polls before a publish counts as never finishing (0.25 s apart)."""
LAYER = "Network"

pytestmark = pytest.mark.timeout(180)


class Pair:
    def __init__(self, first: LocalServer, second: LocalServer) -> None:
        self.first, self.second = first, second
        status = json.loads(
            run_cli(
                "status", "--server", first.url, "--user", ADMIN, "--password", PASSWORD, "--json"
            )
        )
        self.web = {entry["name"]: entry["web-api"] for entry in status["servers"]}
        self.url1 = self.web[first.name]["url"]
        self.url2 = self.web[second.name]["url"]

    def add_domain(self, name: str) -> None:
        api = WebApi(self.url1)
        try:
            api.ok("add-domain", {"name": name}, sid=api.login())
        finally:
            api.close()
        wait_until(lambda: name in both_domains(self), f"domain {name} on both servers")

    def converged(self, domain: str) -> list[str]:
        """Wait until both servers hold the same heads of `domain`; returns them."""
        heads: dict[str, list[str]] = {}

        def same() -> bool:
            heads["1"] = sorted(domain_heads(self.first, domain))
            heads["2"] = sorted(domain_heads(self.second, domain))
            return heads["1"] == heads["2"]

        wait_until(same, f"the same heads of {domain} on both servers")
        return heads["1"]


def both_domains(pair: Pair) -> bool | set[str]:
    names: set[str] | None = None
    for url in (pair.url1, pair.url2):
        api = WebApi(url)
        try:
            found = {d["name"] for d in api.ok("show-domains", {}, sid=api.login())["objects"]}
        finally:
            api.close()
        names = found if names is None else names & found
    return names or set()


def wait_until(check: Callable[[], Any], what: str, timeout: float = CONVERGE) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """Two servers of one cluster, each with a Web API on a free port."""
    root = tmp_path_factory.mktemp("web-clients")
    first, secret = init_server(root, "c1", [])
    second: LocalServer | None = None
    try:
        first.start()
        second = join_server(root, "c2", first.url, secret)
        second.start()
        yield Pair(first, second)
    finally:
        for server in (first, second):
            if server is not None:
                server.stop()


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname and parts.port
    return parts.hostname, parts.port


def rulebase_names(reply: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for item in reply["rulebase"]:
        names.extend(rule["name"] for rule in item.get("rulebase", [item]))
    return names


# ---------------------------------------------------------------- the Python SDK


@pytest.fixture
def sdk_sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A scratch cwd (the SDK writes fingerprints.txt there), a refusal of any prompt
    (`input()` would wait forever for an unknown fingerprint) and a bound on every socket
    the SDK opens (it sets no timeout of its own)."""
    monkeypatch.chdir(tmp_path)

    def no_prompt(*_: object) -> str:
        raise AssertionError("the SDK asked about the server's fingerprint")

    monkeypatch.setattr(builtins, "input", no_prompt)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(WAIT)
    yield tmp_path
    socket.setdefaulttimeout(previous)


@pytest.mark.filterwarnings("ignore:ssl.PROTOCOL_TLS is deprecated:DeprecationWarning")
def test_python_sdk_end_to_end(pair: Pair, sdk_sandbox: Path) -> None:
    domain = "SdkDomain"
    pair.add_domain(domain)
    host, port = host_port(pair.url1)
    pinned = pair.web[pair.first.name]["fingerprint-sha1"]
    args = cpapi.APIClientArgs(server=host, port=port, fingerprint=pinned, sync_frequency=0.2)
    hosts = [f"sdk-h{i:03}" for i in range(57)]  # more than one page of 50
    with cpapi.APIClient(args) as client:
        login = client.login(ADMIN, PASSWORD, domain=domain)
        assert login.success, login.error_message
        sid = client.sid
        assert sid == login.data["sid"] and isinstance(login.data["uid"], str)

        def ok(command: str, payload: dict[str, Any]) -> dict[str, Any]:
            reply = client.api_call(command, payload)
            assert reply.success, (command, reply.error_message)
            assert "task-id" not in reply.data and "tasks" not in reply.data
            return reply.data

        for index, name in enumerate(hosts):
            ok("add-host", {"name": name, "ip-address": f"10.7.{index // 200}.{index % 200 + 1}"})
        ok("add-network", {"name": "sdk-net", "subnet": "10.8.0.0", "mask-length": 24})
        ok("add-group", {"name": "sdk-grp", "members": hosts[:3]})
        ok("add-service-tcp", {"name": "sdk-tcp", "port": "8443"})
        rule = ok("add-access-rule", {
            "layer": LAYER, "position": "top", "name": "sdk-rule", "source": ["sdk-grp"],
            "destination": ["sdk-net"], "service": ["sdk-tcp"], "action": "Accept",
            "track": {"type": "Log"},
        })  # fmt: skip
        published = client.api_call("publish", {})  # the SDK waits for the task itself
        assert published.success, published.error_message
        tasks = published.data["tasks"]
        assert tasks and all(task["status"] == "succeeded" for task in tasks)
        # The form the SDK's wait for a `tasks` list ends with: task-id as an array.
        ids = [task["task-id"] for task in tasks]
        again = client.api_call("show-task", {"task-id": ids, "details-level": "full"})
        assert again.success and [t["task-id"] for t in again.data["tasks"]] == ids

        listed = client.api_query("show-hosts", details_level="standard")
        assert listed.success, listed.error_message
        assert sorted(obj["name"] for obj in listed.data) == hosts
    # Leaving the `with` logged out: the sid is refused.
    assert not (sdk_sandbox / "fingerprints.txt").exists() or pinned in (
        sdk_sandbox / "fingerprints.txt"
    ).read_text()
    after = WebApi(pair.url1)
    try:
        refused = after.call("show-hosts", {}, sid=sid)
        assert refused.status == 401, refused.body
        assert refused.data["code"] == "generic_err_wrong_session_id"
    finally:
        after.close()

    pair.converged(domain)
    other = WebApi(pair.url2)
    try:
        sid2 = other.login(domain)
        names: list[str] = []
        offset = 0
        while True:
            page = other.ok("show-hosts", {"limit": 50, "offset": offset}, sid=sid2)
            names += [obj["name"] for obj in page["objects"]]
            assert page["to"] == offset + len(page["objects"])
            if page["to"] == page["total"]:
                break
            offset = page["to"]
        assert sorted(names) == hosts
        network = other.ok("show-network", {"name": "sdk-net"}, sid=sid2)
        assert (network["subnet4"], network["mask-length4"]) == ("10.8.0.0", 24)
        group = other.ok("show-group", {"name": "sdk-grp"}, sid=sid2)
        assert sorted(m["name"] for m in group["members"]) == hosts[:3]
        assert other.ok("show-service-tcp", {"name": "sdk-tcp"}, sid=sid2)["port"] == "8443"
        shown = other.ok("show-access-rule", {"uid": rule["uid"], "layer": LAYER}, sid=sid2)
        assert shown["name"] == "sdk-rule" and shown["action"]["name"] == "Accept"
        assert [s["name"] for s in shown["source"]] == ["sdk-grp"]
        assert [d["name"] for d in shown["destination"]] == ["sdk-net"]
        assert [s["name"] for s in shown["service"]] == ["sdk-tcp"]
        assert shown["track"]["type"]["name"] == "Log"
        other.ok("logout", {}, sid=sid2)
    finally:
        other.close()


# ---------------------------------------------------------------- Terraform, replayed


class GoRulesClient:
    """The Go SDK's rules on the wire, as the Terraform provider uses it: two bare TLS
    handshakes before each call, POST with `Accept-Encoding: gzip` and an `X-chkp-sid`
    header on everything but `login`, success only on the exact status line
    `HTTP/1.1 200 OK`, and every body a JSON object."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.host, self.port = host_port(url)
        self.sid = ""
        self.version = ""
        self.sock: ssl.SSLSocket | None = None
        self.calls: list[str] = []

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def probe(self) -> None:
        """Connect, handshake, close without a request (the fingerprint reads)."""
        for _ in range(2):
            with tls_socket(self.url) as tls:
                assert tls.getpeercert(binary_form=True)

    def raw(self, command: str, payload: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
        self.probe()
        path = "/web_api/" + (f"v{self.version}/" if self.version else "") + command
        self.calls.append(path)
        body = json.dumps(payload).encode()
        headers = [
            f"POST {path} HTTP/1.1", f"Host: {self.host}:{self.port}",
            "User-Agent: Terraform", "Content-Type: application/json", "Accept: */*",
            "Accept-Encoding: gzip", f"Content-Length: {len(body)}",
        ]  # fmt: skip
        if command != "login":
            headers.append(f"X-chkp-sid: {self.sid}")
        request = ("\r\n".join(headers) + "\r\n\r\n").encode() + body
        if self.sock is None:
            self.sock = self._connect()
        try:
            self.sock.sendall(request)
            status, reply = self._read_reply(self.sock)
        except (ConnectionError, ssl.SSLError, EOFError):  # a pooled connection gone idle
            self.close()
            self.sock = self._connect()
            self.sock.sendall(request)
            status, reply = self._read_reply(self.sock)
        data = json.loads(reply)
        assert isinstance(data, dict), f"{command}: not a JSON object: {reply[:200]!r}"
        return status, data

    def call(self, command: str, payload: dict[str, Any]) -> dict[str, Any]:
        status, data = self.raw(command, payload)
        assert status == b"HTTP/1.1 200 OK", (command, status, data)
        if command != "show-task" and "task-id" in data:
            data = self.wait_for_task(data["task-id"])
        return data

    def login(self, payload: dict[str, Any]) -> dict[str, Any]:
        data = self.call("login", {**payload, "continue-last-session": False, "read-only": False})
        assert isinstance(data["sid"], str) and isinstance(data["api-server-version"], str)
        self.sid, self.version = data["sid"], data["api-server-version"]
        return data

    def wait_for_task(self, task_id: str) -> dict[str, Any]:
        assert isinstance(task_id, str)
        for _ in range(TASK_POLLS):
            reply = self.call("show-task", {"task-id": task_id, "details-level": "full"})
            tasks = reply["tasks"]
            assert tasks, reply
            if all("status" in t and t["status"] != "in progress" for t in tasks):
                assert all(t["status"] not in ("failed", "partially succeeded") for t in tasks)
                return reply
            time.sleep(0.25)
        raise AssertionError(f"task {task_id} still in progress after {TASK_POLLS} polls")

    def _connect(self) -> ssl.SSLSocket:
        raw = socket.create_connection((self.host, self.port), timeout=WAIT)
        context = unverified()
        context.set_alpn_protocols(["h2", "http/1.1"])  # what Go's default transport offers
        tls = context.wrap_socket(raw, server_hostname=self.host)
        assert tls.selected_alpn_protocol() in (None, "http/1.1")
        return tls

    @staticmethod
    def _read_reply(sock: ssl.SSLSocket) -> tuple[bytes, bytes]:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(1)
            if not chunk:
                raise EOFError("closed before a reply")
            head += chunk
        lines = head[:-4].split(b"\r\n")
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            fields[name.strip().lower()] = value.strip()
        assert b"set-cookie" not in fields and b"location" not in fields
        if fields.get(b"transfer-encoding", b"").lower() == b"chunked":
            body = b""
            while True:
                size = int(_read_line(sock), 16)
                data = _read_exact(sock, size + 2)[:-2]
                if size == 0:
                    break
                body += data
        else:
            body = _read_exact(sock, int(fields[b"content-length"]))
        if fields.get(b"content-encoding") == b"gzip":
            body = gzip.decompress(body)
        if fields.get(b"connection", b"").lower() == b"close":
            sock.close()
        return lines[0], body


def _read_line(sock: ssl.SSLSocket) -> bytes:
    line = b""
    while not line.endswith(b"\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise EOFError("closed in a chunked body")
        line += chunk
    return line[:-2]


def _read_exact(sock: ssl.SSLSocket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError("closed in a body")
        data += chunk
    return data


def test_terraform_provider_replay(pair: Pair) -> None:
    domain = "TfDomain"
    pair.add_domain(domain)
    # First apply: login (the Go SDK's body), then add and read back each resource.
    apply = GoRulesClient(pair.url1)
    try:
        login = apply.login({"user": ADMIN, "password": PASSWORD, "domain": domain})
        session_file = {"sid": login["sid"], "uid": login["uid"]}
        assert isinstance(login["uid"], str)
        host = apply.call("add-host", {
            "name": "tf-host", "ipv4-address": "192.0.2.10", "color": "black",
            "ignore-errors": False, "ignore-warnings": False,
        })  # fmt: skip
        assert isinstance(host["uid"], str)
        shown = apply.call("show-host", {"uid": host["uid"]})
        assert (shown["name"], shown["ipv4-address"], shown["color"]) == (
            "tf-host", "192.0.2.10", "black",
        )
        assert all(isinstance(tag["name"], str) for tag in shown["tags"])
        network = apply.call("add-network", {
            "name": "tf-net", "subnet4": "198.51.100.0", "mask-length4": 24,
            "broadcast": "allow", "color": "black",
            "ignore-errors": False, "ignore-warnings": False,
        })  # fmt: skip
        shown = apply.call("show-network", {"uid": network["uid"]})
        assert (shown["subnet4"], shown["mask-length4"]) == ("198.51.100.0", 24)
        assert (shown["subnet-mask"], shown["broadcast"]) == ("255.255.255.0", "allow")
        status, refused = apply.raw("add-network", {
            "name": "tf-net-b", "subnet4": "198.51.101.0", "mask-length4": 24,
            "broadcast": "disallow",
        })  # fmt: skip
        assert status == b"HTTP/1.1 400 Bad Request"
        assert refused["code"] == "generic_err_invalid_parameter"
        rule = apply.call("add-access-rule", {
            "layer": LAYER, "position": "top", "name": "tf-rule", "action": "Accept",
            "content-direction": "any", "enabled": True, "source": ["tf-host"],
            "destination": ["tf-net"], "track": {"type": "Log"},
        })  # fmt: skip
        assert isinstance(rule["uid"], str)
        read_rule(apply, rule["uid"], action="Accept", destination=["tf-net"])
        assert all(path.startswith(f"/web_api/v{apply.version}/") for path in apply.calls[1:])
        assert apply.calls[0] == "/web_api/login"
    finally:
        apply.close()

    # The publish binary: sid.json reused, no login, unversioned paths, task polled.
    published = publish_with(pair.url1, session_file)
    assert published["tasks"][0]["status"] == "succeeded"
    assert isinstance(published["tasks"][0]["task-id"], str)

    # The next plan/apply: show-session {uid} reuses the login (unversioned paths).
    again = GoRulesClient(pair.url1)
    try:
        again.sid = session_file["sid"]
        session = again.call("show-session", {"uid": session_file["uid"]})
        assert session["uid"] == session_file["uid"]
        assert again.call("show-host", {"uid": host["uid"]})["name"] == "tf-host"
        again.call("set-host", {
            "uid": host["uid"], "comments": "set by terraform",
            "ignore-errors": False, "ignore-warnings": False,
        })  # fmt: skip
        assert again.call("show-host", {"uid": host["uid"]})["comments"] == "set by terraform"
        again.call("set-network", {
            "uid": network["uid"], "new-name": "tf-net2",
            "ignore-errors": False, "ignore-warnings": False,
        })  # fmt: skip
        again.call("set-access-rule", {
            "uid": rule["uid"], "layer": LAYER, "action": "Drop", "new-position": "bottom",
        })  # fmt: skip
        read_rule(again, rule["uid"], action="Drop", destination=["tf-net2"])
        assert all(not path.startswith("/web_api/v") for path in again.calls)
    finally:
        again.close()
    publish_with(pair.url1, session_file)

    heads = pair.converged(domain)
    assert heads
    reader = WebApi(pair.url2)
    try:
        sid2 = reader.login(domain)
        assert reader.ok("show-host", {"uid": host["uid"]}, sid=sid2)["comments"] == (
            "set by terraform"
        )
        assert reader.ok("show-network", {"uid": network["uid"]}, sid=sid2)["name"] == "tf-net2"
        base = reader.ok("show-access-rulebase", {"name": LAYER, "limit": 20}, sid=sid2)
        assert "tf-rule" in rulebase_names(base)
    finally:
        reader.close()

    # Destroy: delete each resource by uid, publish; a read then gets not-found.
    destroy = GoRulesClient(pair.url1)
    try:
        destroy.sid = session_file["sid"]
        destroy.call("show-session", {"uid": session_file["uid"]})
        destroy.call("delete-access-rule", {"uid": rule["uid"], "layer": LAYER})
        for kind, uid in (("host", host["uid"]), ("network", network["uid"])):
            destroy.call(f"delete-{kind}", {
                "uid": uid, "ignore-errors": False, "ignore-warnings": False,
            })  # fmt: skip
            status, gone = destroy.raw(f"show-{kind}", {"uid": uid})
            assert status != b"HTTP/1.1 200 OK"
            assert gone["code"] == "generic_err_object_not_found"
        status, gone = destroy.raw("show-access-rule", {"uid": rule["uid"], "layer": LAYER})
        assert (status, gone["code"]) == (b"HTTP/1.1 404 Not Found", "generic_err_object_not_found")
    finally:
        destroy.close()
    publish_with(pair.url1, session_file)
    # The logout binary: the stored sid ends; show-session with it then fails (a new login).
    ending = GoRulesClient(pair.url1)
    try:
        ending.sid = session_file["sid"]
        ending.call("logout", {})
        status, refused = ending.raw("show-session", {"uid": session_file["uid"]})
        assert status != b"HTTP/1.1 200 OK" and isinstance(refused["code"], str)
    finally:
        ending.close()


def read_rule(client: GoRulesClient, uid: str, *, action: str, destination: list[str]) -> None:
    """What the provider's read of an access rule takes from `show-access-rule`."""
    rule = client.call("show-access-rule", {"uid": uid, "layer": LAYER})
    assert rule["name"] == "tf-rule" and rule["action"]["name"] == action
    for field in ("source", "destination", "service", "install-on", "time", "content"):
        assert all(isinstance(item["name"], str) for item in rule[field]), field
    assert [item["name"] for item in rule["destination"]] == destination
    assert rule["track"]["type"]["name"] == "Log"
    for flag in ("accounting", "per-connection", "enable-firewall-session"):
        assert isinstance(rule["track"][flag], bool), flag
    assert isinstance(rule["track"]["alert"], str)
    assert all(isinstance(item["type"], str) for item in rule["vpn"])
    for flag in ("enabled", "source-negate", "destination-negate", "service-negate"):
        assert isinstance(rule[flag], bool), flag


def publish_with(url: str, session_file: dict[str, str]) -> dict[str, Any]:
    """The provider's publish binary: `publish {}` then show-task until done; it reports
    `tasks[0].task-id` of the show-task reply."""
    client = GoRulesClient(url)
    try:
        client.sid = session_file["sid"]
        status, reply = client.raw("publish", {})
        assert status == b"HTTP/1.1 200 OK", reply
        assert isinstance(reply["task-id"], str)
        done = client.wait_for_task(reply["task-id"])
        assert done["tasks"][0]["task-id"] == reply["task-id"]
        return done
    finally:
        client.close()


# ---------------------------------------------------------------- concurrency


def test_concurrent_sessions_on_two_servers_merge(pair: Pair) -> None:
    domain = "Concurrent"
    pair.add_domain(domain)
    setup = WebApi(pair.url1)
    try:
        sid = setup.login(domain)
        setup.ok("add-host", {"name": "shared", "ip-address": "10.9.0.1"}, sid=sid)
        for name in ("c-r1", "c-r2", "c-r3"):
            setup.ok("add-access-rule", {
                "layer": LAYER, "position": "bottom", "name": name, "action": "Accept",
            }, sid=sid)  # fmt: skip
        setup.ok("publish", {}, sid=sid)
        setup.ok("logout", {}, sid=sid)
    finally:
        setup.close()
    pair.converged(domain)

    first, second = WebApi(pair.url1), WebApi(pair.url2)
    watch1, watch2 = WebApi(pair.url1), WebApi(pair.url2)
    try:
        sid1, sid2 = first.login(domain), second.login(domain)
        wsid1, wsid2 = watch1.login(domain), watch2.login(domain)
        errors: list[BaseException] = []

        def edit_one() -> None:
            first.ok("set-host", {"name": "shared", "comments": "from server 1"}, sid=sid1)
            first.ok("set-access-rule", {
                "layer": LAYER, "name": "c-r3", "new-position": "top",
            }, sid=sid1)  # fmt: skip

        def edit_two() -> None:
            second.ok("set-host", {"name": "shared", "color": "red"}, sid=sid2)
            second.ok("set-access-rule", {
                "layer": LAYER, "name": "c-r3", "action": "Drop", "comments": "edited on 2",
            }, sid=sid2)  # fmt: skip

        run_together(edit_one, edit_two, errors)

        # Unpublished: each session sees its own edits only; nobody else sees them.
        assert first.ok("show-host", {"name": "shared"}, sid=sid1)["comments"] == "from server 1"
        assert second.ok("show-host", {"name": "shared"}, sid=sid2)["color"] == "red"
        for api, watcher in ((watch1, wsid1), (watch2, wsid2), (second, sid2)):
            assert api.ok("show-host", {"name": "shared"}, sid=watcher)["comments"] == ""
        for api, watcher in ((watch1, wsid1), (watch2, wsid2), (first, sid1)):
            assert api.ok("show-host", {"name": "shared"}, sid=watcher)["color"] != "red"
        order = ["c-r1", "c-r2", "c-r3"]
        for api, watcher in ((watch1, wsid1), (watch2, wsid2), (second, sid2)):
            base = api.ok("show-access-rulebase", {"name": LAYER}, sid=watcher)
            assert rulebase_names(base) == order
        moved = first.ok("show-access-rulebase", {"name": LAYER}, sid=sid1)
        assert rulebase_names(moved) == ["c-r3", "c-r1", "c-r2"]
        assert second.ok("show-access-rule", {"layer": LAYER, "name": "c-r3"}, sid=sid2)[
            "action"
        ]["name"] == "Drop"
        rule_seen = watch1.ok("show-access-rule", {"layer": LAYER, "name": "c-r3"}, sid=wsid1)
        assert rule_seen["action"]["name"] == "Accept" and rule_seen["comments"] == ""

        run_together(
            lambda: first.ok("publish", {}, sid=sid1),
            lambda: second.ok("publish", {}, sid=sid2),
            errors,
        )
    finally:
        for api in (first, second, watch1, watch2):
            api.close()

    heads = pair.converged(domain)
    assert heads
    seen = []
    for url in (pair.url1, pair.url2):
        reader = WebApi(url)
        try:
            sid = reader.login(domain)
            host = reader.ok("show-host", {"name": "shared"}, sid=sid)
            base = reader.ok("show-access-rulebase", {"name": LAYER}, sid=sid)
            rule = reader.ok("show-access-rule", {"layer": LAYER, "name": "c-r3"}, sid=sid)
            reader.ok("logout", {}, sid=sid)
        finally:
            reader.close()
        assert (host["comments"], host["color"]) == ("from server 1", "red")
        assert rulebase_names(base) == ["c-r3", "c-r1", "c-r2"]
        assert (rule["action"]["name"], rule["comments"]) == ("Drop", "edited on 2")
        seen.append((host, base, rule))
    assert seen[0] == seen[1]
    assert sorted(domain_heads(pair.first, domain)) == sorted(domain_heads(pair.second, domain))


def run_together(
    one: Callable[[], Any], two: Callable[[], Any], errors: list[BaseException]
) -> None:
    """Run both at once (two threads, started together); re-raise the first failure."""
    start = threading.Barrier(2, timeout=WAIT)

    def runner(work: Callable[[], Any]) -> None:
        try:
            start.wait()
            work()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=runner, args=(w,)) for w in (one, two)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(4 * WAIT)
        assert not thread.is_alive(), "a concurrent edit did not finish"
    if errors:
        raise errors[0]

