"""Fuzzing the `/sync` and `/api` endpoints of one real server process.

Hypothesis generates and mutates CBOR frames, automerge-repo messages, Automerge sync
bytes and JSON requests; hand-made frames add truncations, huge declared lengths, deep
nesting, text frames on `/sync` and frames over the size limit. They reach the server as
an unauthenticated peer, as an administrator's read-only automerge-repo client, as a
server holding the cluster secret, and as a logged-in administrator on `/api`.

After every batch the server must still run, must not have logged a traceback, must
still answer on an `/api` connection opened before the fuzzing began, and must hold
exactly the data it held before (heads and content, read through the API). Each hostile
`/sync` input must end in an `error` message or a close (never in an admission or in data
the peer may not read); each `/api` request gets exactly one well-formed reply, and never
an internal error. The number of inputs tried is printed per batch and in total.

Every wait is bounded and never equal to a server timeout: /sync exchanges wait well below
the server's admission timeout, so a refusal must come at once. Hypothesis does not shrink
(see `fuzz_settings`), so a failing batch ends after its examples instead of minutes later.
"""

from __future__ import annotations

import json
import os
import secrets
import struct
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import cbor2
import pytest
from automerge.core import ROOT, Document, ScalarType, SyncState
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from crdtmds.api.dispatch import command_table
from crdtmds.core import auth
from crdtmds.sync.protocol import (
    DocUnavailable,
    Error,
    Join,
    Peer,
    ProtocolError,
    Request,
    Sync,
    decode,
    encode,
    new_document_id,
)
from tests.helpers.cluster import ADMIN, PASSWORD, Cluster, NodeProcess

DOMAIN = "fuzz"
HANDSHAKE_TIMEOUT = 6.0
"""The server's admission timeout for /sync peers (`--handshake-timeout`)."""
SYNC_REPLY_TIMEOUT = 2.0
"""How long a /sync exchange waits for each frame or the close: well below the admission
timeout, so that a refusal which only comes with that timeout fails the example instead
of passing as a close."""
REPLY_TIMEOUT = 10.0
"""How long an /api request waits for its reply (the server's idle timeout is 900 s)."""
MAX_SIZE = 16 * 1024 * 1024
"""The server's default maximum frame size."""
FORBIDDEN_COMMANDS = frozenset(
    {"login", "logout", "publish", "revert-to-revision", "add-domain", "add-administrator"}
)
"""API commands the fuzzer leaves out: they would change stored data on purpose, or lock
the fuzzer out (failed logins are throttled per source)."""

INPUTS: Counter[str] = Counter()
"""How many inputs each batch tried."""
OUTCOMES: Counter[str] = Counter()
"""How the server dealt with them: refused (error or close) or answered and went on."""


def fuzz_settings(examples: int) -> settings:
    """No shrinking: every example is a network exchange bounded by the timeouts above, and
    shrinking a failure re-runs hundreds of them (minutes). A failure is reported as
    generated, which is enough to reproduce it."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# ---------------------------------------------------------------- the server under fuzz


@dataclass
class Target:
    """The server process, what it held before the fuzzing, and an /api connection
    opened before it (which must keep working)."""

    node: NodeProcess
    secret: str
    domain_id: str
    cluster_document_id: str
    token: str
    baseline: dict[str, Any]
    bystander: ApiConnection

    @property
    def url(self) -> str:
        return self.node.url


class ApiConnection:
    """A synchronous /api connection: `call` returns the result or raises ApiFailure."""

    def __init__(self, url: str) -> None:
        self.ws = open_websocket(f"{url}/api")
        self._ids = iter(range(1, 1 << 62))

    def request(self, request: Any) -> Any:
        self.ws.send(request if isinstance(request, str | bytes) else json.dumps(request))
        return json.loads(self.ws.recv(timeout=REPLY_TIMEOUT))

    def call(self, command: str, **params: Any) -> Any:
        request_id = next(self._ids)
        reply = self.request({"id": request_id, "command": command, "params": params})
        assert reply["id"] == request_id, reply
        if "error" in reply:
            raise ApiFailure(reply["error"])
        return reply["result"]

    def login(self, **params: Any) -> Any:
        return self.call("login", user=ADMIN, password=PASSWORD, **params)

    def close(self) -> None:
        self.ws.close()


class ApiFailure(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.code = error.get("code")


def stored_view(url: str) -> dict[str, Any]:
    """Heads of every document and the domain's content, as the API reads them."""
    api = ApiConnection(url)
    try:
        api.login(domain=DOMAIN, **{"read-only": True})
        status = api.call("show-status")
        return {
            "cluster-document": status["cluster-document"],
            "domains": status["domains"],
            "hosts": api.call("show-hosts", limit=500)["objects"],
            "rulebase": api.call("show-access-rulebase", limit=500)["rulebase"],
            "revisions": api.call("show-revisions", limit=500)["objects"],
            "administrators": api.call("show-administrators", limit=500)["objects"],
        }
    finally:
        api.close()


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    with Cluster(tmp_path_factory.mktemp("fuzz")) as cluster:
        node = cluster.init("n1", start_args=["--handshake-timeout", str(HANDSHAKE_TIMEOUT)])
        setup = ApiConnection(node.url)
        setup.login()
        domain = setup.call("add-domain", name=DOMAIN)
        setup.call("logout")
        setup.login(domain=DOMAIN)
        for index in range(3):
            setup.call("add-host", name=f"host{index}", **{"ipv4-address": f"10.0.0.{index + 1}"})
        setup.call("add-access-rule", name="web", source=["host0"], action="Accept")
        setup.call("publish", comments="before the fuzz")
        setup.call("logout")
        setup.close()

        bystander = ApiConnection(node.url)
        bystander.login(domain=DOMAIN, **{"read-only": True})
        token = bystander.login(domain=DOMAIN, **{"read-only": True})["sid"]
        status = bystander.call("show-status")
        yield Target(
            node=node,
            secret=cluster.secret,
            domain_id=domain["document-id"],
            cluster_document_id=status["cluster-document"]["document-id"],
            token=token,
            baseline=stored_view(node.url),
            bystander=bystander,
        )
        bystander.close()
        print(f"fuzz inputs tried: {sum(INPUTS.values())} ({dict(INPUTS)}); {dict(OUTCOMES)}")


def assert_intact(target: Target) -> None:
    """The server runs, logged no traceback, serves its old connection, changed nothing."""
    assert target.node.running, target.node.log()[-3000:]
    assert "Traceback" not in target.node.log(), target.node.log()[-5000:]
    hosts = target.bystander.call("show-hosts", limit=500)["objects"]
    assert hosts == target.baseline["hosts"]
    assert stored_view(target.url) == target.baseline


# ---------------------------------------------------------------- /sync exchanges


@dataclass
class Outcome:
    """What the server did with one input: the messages it sent, and how it closed."""

    messages: list[Any]
    close_code: int | None
    probe_answered: bool = False

    @property
    def refused(self) -> bool:
        return self.close_code is not None or any(isinstance(m, Error) for m in self.messages)


def open_websocket(url: str) -> ClientConnection:
    """A connection the caller closes (websockets wants a connection entered to be used)."""
    return connect(url, proxy=None, max_size=None, close_timeout=1).__enter__()


def open_sync(url: str, query: str = "") -> ClientConnection:
    return open_websocket(f"{url}/sync{query}")


def send_and_watch(ws: ClientConnection, frames: list[bytes | str], probe: str | None) -> Outcome:
    """Send `frames`, then (if still open) a request for the unknown document `probe`;
    read until the server answers the probe, refuses, or closes."""
    outcome = Outcome([], None)
    try:
        for frame in frames:
            ws.send(frame)
        if probe is not None:
            ws.send(probe_request(probe))
        while True:
            raw = ws.recv(timeout=SYNC_REPLY_TIMEOUT)
            message = decode_reply(raw)
            outcome.messages.append(message)
            if isinstance(message, Error):
                continue  # the close follows
            if isinstance(message, DocUnavailable) and message.document_id == probe:
                outcome.probe_answered = True
                return outcome
            if probe is None and isinstance(message, Peer):
                return outcome
    except ConnectionClosed as exc:
        outcome.close_code = exc.rcvd.code if exc.rcvd is not None else 1006
    return outcome


def decode_reply(raw: bytes | str) -> Any:
    assert isinstance(raw, bytes), f"the server sent a text frame: {raw!r}"
    try:
        return decode(raw)
    except ProtocolError as exc:
        raise AssertionError(f"the server sent a malformed frame {raw[:80]!r}: {exc}") from exc


def probe_request(document_id: str) -> bytes:
    data = Document().generate_sync_message(SyncState())
    assert data is not None
    return encode(Request("fuzzer", "server", document_id, data.encode()))


def repo_client_join() -> bytes:
    return encode(Join(sender_id=f"fuzzer-{secrets.token_hex(4)}"))


def server_join(secret: str) -> bytes:
    cluster_id = auth.cluster_id_of_secret(secret)
    creds = auth.ServerCredentials.create(secret, cluster_id, f"fuzzer-{secrets.token_hex(4)}")
    metadata = {"crdtmds": {**creds.to_metadata(), "role": "secondary"}}
    return encode(Join(sender_id=f"fuzzer-{creds.nonce[:8]}", peer_metadata=metadata))


# ---------------------------------------------------------------- strategies: bytes


def mutate(data: bytes, draw: Callable[[st.SearchStrategy[Any]], Any]) -> bytes:
    """A few random edits: flipped bytes, a cut, an insertion, a repeated slice."""
    buffer = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "repeat", "set"]))
        position = draw(st.integers(0, max(len(buffer) - 1, 0)))
        if kind == "flip" and buffer:
            buffer[position] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and buffer:
            buffer[position] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0x9F, 0xBF, 0xFB]))
        elif kind == "cut":
            buffer = buffer[:position]
        elif kind == "insert":
            buffer[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "repeat" and buffer:
            end = draw(st.integers(position, len(buffer)))
            buffer[position:position] = buffer[position:end] * draw(st.integers(1, 8))
    return bytes(buffer)


def huge_length_frames() -> list[bytes]:
    """CBOR heads that announce far more than the frame holds, and unterminated items."""
    frames = []
    for major in (2, 3, 4, 5):  # byte string, text string, array, map
        frames.append(bytes([(major << 5) | 27]) + struct.pack("!Q", 2**63 - 1))
        frames.append(bytes([(major << 5) | 26]) + struct.pack("!I", 2**32 - 1) + b"\x00" * 8)
        frames.append(bytes([(major << 5) | 31]))  # indefinite length, never ended
    frames.append(b"\xa1\x64type\x7b" + struct.pack("!Q", 2**40) + b"sync")
    frames.append(b"\xd8\x40" * 5000 + b"\x40")  # tag 64 nested 5000 times
    return frames


def deep_nesting_frames() -> list[bytes]:
    frames = []
    for depth in (17, 100, 10_000, 200_000):
        frames.append(b"\x81" * depth + b"\x00")  # arrays in arrays
        frames.append(b"\xa1\x61a" * depth + b"\x00")  # maps in maps
    inner = b"\xa1\x64type\x64sync"
    frames.append(b"\xa2\x64type\x64join\x68metadata" + b"\xa1\x61m" * 50_000 + inner)
    return frames


# ---------------------------------------------------------------- strategies: CBOR messages

MESSAGE_TYPES = (
    "join", "peer", "request", "sync", "doc-unavailable", "error", "ephemeral", "leave",
    "remote-heads-changed", "remote-subscription-change", "", "JOIN", "sync\x00",
)  # fmt: skip
FIELDS = (
    "type", "senderId", "targetId", "documentId", "data", "supportedProtocolVersions",
    "selectedProtocolVersion", "peerMetadata", "metadata", "count", "sessionId", "message",
)  # fmt: skip

cbor_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64 - 1),
    st.floats(),
    st.text(max_size=40),
    st.binary(max_size=64),
    st.just(cbor2.undefined),
    st.builds(cbor2.CBORTag, st.sampled_from([0, 1, 2, 25, 28, 64, 258, 55799, 2**32]), st.text()),
)
cbor_values = st.recursive(
    cbor_leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=8)), inner, max_size=5),
    ),
    max_leaves=20,
)


def automerge_sync_messages() -> tuple[bytes, bytes]:
    """A sync message without changes, and one carrying changes (of another document)."""
    ours, theirs = Document(), Document()
    with ours.transaction() as tx:
        tx.put(ROOT, "name", ScalarType.Str, "not a domain")
    ours_state, theirs_state = SyncState(), SyncState()
    first = ours.generate_sync_message(ours_state)
    assert first is not None
    theirs.receive_sync_message(theirs_state, first)
    answer = theirs.generate_sync_message(theirs_state)
    assert answer is not None
    ours.receive_sync_message(ours_state, answer)
    with_changes = ours.generate_sync_message(ours_state)
    assert with_changes is not None
    return first.encode(), with_changes.encode()


HEADS_ONLY_SYNC, CHANGES_SYNC = automerge_sync_messages()


@st.composite
def sync_data(draw: Callable[[st.SearchStrategy[Any]], Any], *, with_changes: bool) -> bytes:
    """Automerge sync bytes: random, random after a valid version byte, or mutated."""
    kind = draw(st.sampled_from(["random", "versioned", "mutated", "valid", "valid"]))
    if kind == "random":
        return draw(st.binary(max_size=200))
    if kind == "versioned":
        return draw(st.sampled_from([b"\x42", b"\x43"])) + draw(st.binary(max_size=200))
    valid = draw(st.sampled_from([HEADS_ONLY_SYNC, CHANGES_SYNC][: 2 if with_changes else 1]))
    return mutate(valid, draw) if kind == "mutated" else valid


@st.composite
def document_messages(
    draw: Callable[[st.SearchStrategy[Any]], Any],
    document_ids: list[str],
    *,
    with_changes: bool,
) -> bytes:
    """A well-formed envelope (sync, request, ephemeral...) around hostile contents.

    Mostly with a real document id and an unmutated envelope, so that the contents reach
    the Automerge sync code rather than stopping at the codec.
    """
    odds = st.integers(0, 9)
    message: dict[str, Any] = {
        "type": draw(st.sampled_from(["sync", "request", "ephemeral", "doc-unavailable"])),
        "senderId": "fuzzer" if draw(odds) < 8 else draw(st.sampled_from(["", "x" * 300])),
        "targetId": "server" if draw(odds) < 8 else "",
        "documentId": draw(
            st.sampled_from(document_ids)
            if draw(odds) < 7
            else st.one_of(st.text(max_size=30), st.binary(max_size=16))
        ),
        "data": draw(sync_data(with_changes=with_changes)),
    }
    if message["type"] == "ephemeral":
        message["count"] = draw(st.one_of(st.integers(-1, 2**64), st.floats()))
        message["sessionId"] = draw(st.text(max_size=10))
        message["data"] = cbor2.dumps(draw(cbor_values))
    frame = cbor2.dumps(message)
    return mutate(frame, draw) if draw(odds) < 3 else frame


@st.composite
def hostile_frames(draw: Callable[[st.SearchStrategy[Any]], Any]) -> bytes | str:
    """Anything a peer could send before it is admitted."""
    kind = draw(st.sampled_from(["random", "cbor", "message", "mutated-join", "handmade", "text"]))
    if kind == "random":
        return draw(st.binary(max_size=300))
    if kind == "cbor":
        return cbor2.dumps(draw(cbor_values))
    if kind == "message":
        message = draw(
            st.fixed_dictionaries(
                {"type": st.sampled_from(MESSAGE_TYPES)},
                optional={name: cbor_values for name in FIELDS if name != "type"},
            )
        )
        return cbor2.dumps(message)
    if kind == "mutated-join":
        return mutate(repo_client_join(), draw)
    if kind == "handmade":
        return draw(st.sampled_from(huge_length_frames() + deep_nesting_frames()))
    return draw(st.text(max_size=100))


# ---------------------------------------------------------------- strategies: /api


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(),
        st.text(max_size=30),
        st.sampled_from(["10.0.0.1", "::1", "host0", "web", "top", "bottom", "Accept", ""]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)

# The command table does not depend on the node, so an API without one lists it.
COMMANDS = command_table()
FUZZ_COMMANDS = sorted(set(COMMANDS) - FORBIDDEN_COMMANDS)
PARAMETER_NAMES = sorted({name for command in COMMANDS.values() for name in command.params})


@st.composite
def api_requests(draw: Callable[[st.SearchStrategy[Any]], Any]) -> dict[str, Any]:
    """A request for a real command, with parameters of real names and random values."""
    params = draw(
        st.dictionaries(
            st.one_of(st.sampled_from(PARAMETER_NAMES), st.text(max_size=10)),
            json_values,
            max_size=6,
        )
    )
    request: dict[str, Any] = {
        "id": draw(st.one_of(st.integers(-(2**63), 2**63), st.text(max_size=10), st.none())),
        "command": draw(st.one_of(st.sampled_from(FUZZ_COMMANDS), st.text(max_size=20))),
        "params": params if draw(st.integers(0, 9)) else draw(json_values),
    }
    if request["command"] in FORBIDDEN_COMMANDS:
        request["command"] = "show-session"
    return request


@st.composite
def api_texts(draw: Callable[[st.SearchStrategy[Any]], Any]) -> str | bytes:
    """Frames that are not a well-formed request at all."""
    kind = draw(st.sampled_from(["json", "text", "mutated", "bytes"]))
    if kind == "json":
        return json.dumps(draw(json_values))
    if kind == "text":
        return draw(st.text(max_size=200))
    if kind == "mutated":
        request = json.dumps(draw(api_requests())).encode()
        return mutate(request, draw).decode("utf-8", "replace")
    return draw(st.binary(max_size=200))


def handmade_api_texts() -> list[str]:
    """Deep nesting, huge numbers, odd tokens: too big to show in Hypothesis reports."""
    nested = "[" * 50_000 + "]" * 50_000
    return [
        "[" * 100_000,
        '{"a":' * 100_000,
        '{"id": 1, "command": "show-hosts", "params": {"filter": ' + nested + "}}",
        '{"id": 1, "command": "add-host", "params": {"name": ' + "[" * 900 + "]" * 900 + "}}",
        "9" * 5000,
        '{"id": 1e999999, "command": "show-status"}',
        '{"id": NaN, "command": "show-status"}',
        '{"id": 2, "command": "show-status", "command": "add-host"}',
        '{"id": 3, "command": "add-host", "params": {"name": "\\ud800", "ip-address": "::1"}}',
        '{"id": 4, "command": "show-hosts", "params": {"filter": "\\udfff\\u0000"}}',
        "",
    ]


def api_connection(target: Target) -> ApiConnection:
    api = ApiConnection(target.url)
    api.login(domain=DOMAIN)
    return api


def check_api_reply(request: Any, reply: Any) -> None:
    """One well-formed reply: its id echoed, a result or an error with a code, no crash."""
    shown = f"{str(request)[:300]} -> {str(reply)[:300]}"
    assert isinstance(reply, dict), shown
    assert ("result" in reply) != ("error" in reply), shown
    if isinstance(request, dict) and "id" in request and isinstance(request["id"], int | str):
        assert reply["id"] == request["id"], shown
    if "error" in reply:
        error = reply["error"]
        assert isinstance(error.get("code"), str) and isinstance(error.get("message"), str)
        assert error["code"] != "generic_internal_error", shown


# ---------------------------------------------------------------- the tests


def test_unauthenticated_sync_peers_are_refused_whatever_they_send(target: Target) -> None:
    @fuzz_settings(140)
    @given(frame=hostile_frames())
    def exchange(frame: bytes | str) -> None:
        INPUTS["/sync unauthenticated"] += 1
        with open_sync(target.url) as ws:
            outcome = send_and_watch(ws, [frame, repo_client_join()], probe=None)
        assert outcome.refused, (frame[:100], outcome)
        assert not any(isinstance(m, Peer | Sync) for m in outcome.messages), outcome

    exchange()
    for frame in huge_length_frames() + deep_nesting_frames():
        INPUTS["/sync unauthenticated"] += 1
        with open_sync(target.url) as ws:
            outcome = send_and_watch(ws, [frame], probe=None)
        assert outcome.refused and not outcome.messages[1:], (frame[:40], outcome)
    assert_intact(target)


def test_read_only_repo_client_cannot_write_or_break_anything(target: Target) -> None:
    documents = [target.domain_id, target.cluster_document_id, new_document_id()]

    @fuzz_settings(120)
    @given(frame=st.one_of(document_messages(documents, with_changes=True), hostile_frames()))
    def exchange(frame: bytes | str) -> None:
        INPUTS["/sync read-only client"] += 1
        with open_sync(target.url, f"?token={target.token}") as ws:
            joined = send_and_watch(ws, [repo_client_join()], probe=None)
            assert isinstance(joined.messages[-1], Peer), joined
            outcome = send_and_watch(ws, [frame], probe=new_document_id())
        assert outcome.refused or outcome.probe_answered, (frame[:100], outcome)
        OUTCOMES["refused" if outcome.refused else "answered"] += 1
        for message in outcome.messages:
            if isinstance(message, Sync):
                assert message.document_id == target.domain_id, "sent a document it may not read"

    exchange()
    assert_intact(target)


def test_server_peer_with_corrupt_sync_bytes_changes_nothing(target: Target) -> None:
    documents = [target.domain_id, target.cluster_document_id]

    @fuzz_settings(60)
    @given(frame=document_messages(documents, with_changes=False))
    def exchange(frame: bytes) -> None:
        INPUTS["/sync server peer"] += 1
        with open_sync(target.url) as ws:
            joined = send_and_watch(ws, [server_join(target.secret)], probe=None)
            assert isinstance(joined.messages[-1], Peer), joined
            outcome = send_and_watch(ws, [frame], probe=new_document_id())
        assert outcome.refused or outcome.probe_answered, (frame[:100], outcome)
        OUTCOMES["refused" if outcome.refused else "answered"] += 1

    exchange()
    assert_intact(target)


def test_api_answers_every_request_with_one_reply_and_no_internal_error(target: Target) -> None:
    api = api_connection(target)

    @fuzz_settings(200)
    @given(request=st.one_of(api_requests(), api_texts()))
    def exchange(request: dict[str, Any] | str | bytes) -> None:
        INPUTS["/api"] += 1
        reply = api.request(request)
        check_api_reply(request, reply)

    try:
        exchange()
        for text in handmade_api_texts():
            INPUTS["/api"] += 1
            check_api_reply(text, api.request(text))
        api.call("discard")
    finally:
        api.close()
    assert_intact(target)


def test_oversize_frames_close_only_their_connection(target: Target) -> None:
    oversize = os.urandom(MAX_SIZE + 1)
    for path, frame in (("/sync", oversize), ("/api", oversize.hex()[: MAX_SIZE + 1])):
        INPUTS["oversize"] += 1
        with open_websocket(f"{target.url}{path}") as ws:
            ws.send(frame)
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=REPLY_TIMEOUT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009, path
    assert_intact(target)
