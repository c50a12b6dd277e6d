"""Tests of crdtmds.gossip: sync message inspection and Gossip hubs on a fake network."""

from __future__ import annotations

import dataclasses
import os

import cbor2
import pytest
from automerge.core import ROOT, Document, Message, ScalarType, SyncState, extract
from hypothesis import given
from hypothesis import strategies as st

from crdtmds.core.changes import change_hash_and_deps
from crdtmds.errors import AuthenticationFailed, ProtocolError
from crdtmds.sync.connection import ConnectionState
from crdtmds.sync.gossip import (
    ConnectionFailed,
    DocumentChanged,
    DocumentUnavailableFromPeer,
    Gossip,
    JoinReceived,
    PeerConnected,
)
from crdtmds.sync.peers import PeerInfo
from crdtmds.sync.protocol import (
    DocUnavailable,
    Ephemeral,
    Error,
    Ignored,
    Join,
    Peer,
    Request,
    Sync,
    decode,
    encode,
    new_document_id,
)
from crdtmds.sync.sync_message import (
    SYNC_MESSAGE_V1,
    encode_sync_message,
    parse_sync_message,
    split_sync_message,
    sync_message_has_changes,
    with_changes,
)
from tests.helpers.gossip import SERVER_METADATA, Hub, MemoryStore, Network, server_peer


def make_doc(**values: str) -> Document:
    doc = Document()
    with doc.transaction() as tx:
        for key, value in values.items():
            tx.put(ROOT, key, ScalarType.Str, value)
    return doc


def client_peer(join: Join) -> PeerInfo:
    """An admin repo client: reads what it asks for, may not write."""
    return PeerInfo(join.sender_id, dict(join.peer_metadata or {}), may_write=False)


# ------------------------------------------------------------------ sync_message_has_changes


def sync_round(sender: Document, receiver: Document) -> tuple[list[bytes], list[bytes]]:
    """Messages of a full sync between two documents: (sender's, receiver's)."""
    sender_state, receiver_state = SyncState(), SyncState()
    sent: list[bytes] = []
    replies: list[bytes] = []
    for _ in range(10):
        message = sender.generate_sync_message(sender_state)
        if message is not None:
            sent.append(message.encode())
            receiver.receive_sync_message(receiver_state, message)
        reply = receiver.generate_sync_message(receiver_state)
        if reply is not None:
            replies.append(reply.encode())
            sender.receive_sync_message(sender_state, reply)
        if message is None and reply is None:
            break
    return sent, replies


def test_first_message_has_no_changes() -> None:
    message = make_doc(a="x").generate_sync_message(SyncState()).encode()
    assert message[0] == 0x42
    assert sync_message_has_changes(message) is False


def test_whole_document_v2_message_has_changes() -> None:
    sent, replies = sync_round(make_doc(a="x"), Document())
    assert sync_message_has_changes(replies[0]) is False  # the empty side says what it needs
    assert [m[0] for m in sent] == [0x42, 0x43]
    assert [sync_message_has_changes(m) for m in sent] == [False, True]


def synced_pair(source: Document) -> tuple[Document, SyncState, Document, SyncState]:
    """`source`, a new document brought in sync with it, and their sync states."""
    target = Document()
    source_state, target_state = SyncState(), SyncState()
    for _ in range(5):
        for doc, state, other, other_state in (
            (source, source_state, target, target_state),
            (target, target_state, source, source_state),
        ):
            message = doc.generate_sync_message(state)
            if message is not None:
                other.receive_sync_message(other_state, message)
    return source, source_state, target, target_state


def test_incremental_message_has_changes() -> None:
    source = make_doc(a="x")
    for i in range(10):
        with source.transaction() as tx:
            tx.put(ROOT, f"k{i}", ScalarType.Str, "v")
    source, source_state, target, target_state = synced_pair(source)
    with source.transaction() as tx:
        tx.put(ROOT, "late", ScalarType.Str, "edit")
    messages = []
    for _ in range(3):
        message = source.generate_sync_message(source_state)
        if message is not None:
            messages.append(message.encode())
            target.receive_sync_message(target_state, message)
        reply = target.generate_sync_message(target_state)
        if reply is not None:
            source.receive_sync_message(source_state, reply)
    carrying = [m for m in messages if sync_message_has_changes(m)]
    assert len(carrying) == 1, "the late edit travelled in one message"
    # the same fields under the v1 type byte, as a peer without v2 support receives them
    as_v1 = b"\x42" + carrying[0][1:]
    Message.decode(as_v1)
    assert sync_message_has_changes(as_v1) is True


def test_encoding_a_parsed_message_gives_back_its_bytes() -> None:
    sent, replies = sync_round(make_doc(a="x"), Document())
    for data in [*sent, *replies, sent[0][:-3]]:
        assert encode_sync_message(parse_sync_message(data), data[0]) == data


def test_with_changes_adds_a_change_the_message_lacks() -> None:
    source, source_state, target, target_state = synced_pair(make_doc(a="x"))
    heads = source.get_heads()
    with source.transaction() as tx:
        tx.put(ROOT, "late", ScalarType.Str, "edit")
    (change,) = source.get_changes(heads)
    bare = encode_sync_message(
        dataclasses.replace(
            parse_sync_message(source.generate_sync_message(source_state).encode()), changes=[]
        )
    )
    assert not sync_message_has_changes(bare)  # as when a Bloom filter errs
    pair = (change.hash, change.bytes)
    carried = with_changes(bare, [pair])
    assert parse_sync_message(carried).changes == [change.bytes]
    target.receive_sync_message(target_state, Message.decode(carried))
    assert target.get_heads() == source.get_heads()
    # Chunks a message carries already are not added twice.
    assert with_changes(carried, [pair]) == carried
    assert with_changes(bare, []) == bare


def linked_pair() -> tuple[Network, Hub, Hub, str]:
    """Hubs a and b linked and in sync on one document a created."""
    net = Network()
    a, b = Hub("a"), Hub("b")
    doc_id = a.create(name="base")
    net.connect(a, b)
    net.pump()
    return net, a, b, doc_id


def test_a_local_publish_reaches_servers_in_one_message_with_its_change_once() -> None:
    net, a, b, doc_id = linked_pair()
    heads = a.store.docs[doc_id].get_heads()
    a.edit(doc_id, rule="allow")
    changes = [(c.hash, c.bytes) for c in a.store.docs[doc_id].get_changes(heads)]
    a.gossip.local_changes(doc_id, changes)
    a.gossip.document_changed(doc_id)
    (frame,) = a.gossip.data_to_send("to-b")
    message = decode(frame)
    assert isinstance(message, Sync)
    assert len(parse_sync_message(message.data).changes) == 1
    net.deliver(b, "from-a", frame)
    assert b.heads(doc_id) == a.heads(doc_id)


def test_message_without_capabilities_parses() -> None:
    message = make_doc(a="x").generate_sync_message(SyncState()).encode()
    assert message.endswith(b"\x02\x01\x02")  # capabilities v1, v2
    assert sync_message_has_changes(message[:-3]) is False


def test_every_prefix_is_judged_like_automerge() -> None:
    """Our parser accepts exactly the prefixes the automerge parser accepts."""
    sent, replies = sync_round(make_doc(a="x", b="y"), make_doc(c="z"))
    for message in sent + replies:
        for end in range(len(message)):
            prefix = message[:end]
            try:
                Message.decode(prefix)
            except Exception:
                with pytest.raises(ProtocolError):
                    sync_message_has_changes(prefix)
            else:
                sync_message_has_changes(prefix)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x41\x00\x00\x00\x00",  # unknown type byte
        b"\x42\x01" + b"\x00" * 31,  # a head one byte short
        b"\x42\x00\x00\x00\xff\xff\xff\xff\x0f",  # four billion changes in nine bytes
        b"\x42" + b"\xff" * 11,  # a LEB128 number that never ends
        b"\x42\x00\x00\x00\x01\x05ab",  # a change chunk shorter than its length
    ],
)
def test_malformed_sync_messages_raise(data: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        sync_message_has_changes(data)
    assert caught.value.code == "err_protocol"


@given(st.binary(max_size=200))
def test_arbitrary_bytes_give_a_bool_or_protocol_error(data: bytes) -> None:
    try:
        result = sync_message_has_changes(b"\x42" + data)
    except ProtocolError:
        return
    assert isinstance(result, bool)


# ---------------------------------------------------------------------------- convergence


def test_two_hubs_converge() -> None:
    net = Network()
    a, b = Hub("a"), Hub("b")
    doc_id = a.create(name="domain-1", color="blue")
    net.connect(a, b)
    net.pump()
    assert b.read(doc_id) == {"name": "domain-1", "color": "blue"}
    assert b.heads(doc_id) == a.heads(doc_id)
    assert b.persisted_hashes[doc_id] == a.heads(doc_id)  # one change, persisted by b
    connected = [e for e in a.events if isinstance(e, PeerConnected)]
    assert connected == [PeerConnected("to-b", connected[0].peer)]
    assert connected[0].peer.peer_id == "b" and connected[0].peer.is_server


def test_concurrent_edits_on_both_sides_merge() -> None:
    net = Network()
    a, b = Hub("a"), Hub("b")
    doc_id = a.create(name="d")
    net.connect(a, b)
    net.pump()
    a.publish(doc_id, left="a")
    b.publish(doc_id, right="b")
    net.pump()
    assert a.read(doc_id) == b.read(doc_id) == {"name": "d", "left": "a", "right": "b"}
    assert a.heads(doc_id) == b.heads(doc_id)


def test_three_hubs_in_a_chain_converge_multi_hop() -> None:
    net = Network()
    a, b, c = Hub("a"), Hub("b"), Hub("c")
    net.connect(a, b)
    net.connect(c, b)
    net.pump()
    doc_id = a.create(name="from-a")
    a.gossip.document_changed(doc_id)  # b follows everything: it is a server
    net.pump()
    assert c.read(doc_id) == {"name": "from-a"}
    c.publish(doc_id, reply="from-c")
    net.pump()
    assert a.read(doc_id) == {"name": "from-a", "reply": "from-c"}
    assert a.heads(doc_id) == b.heads(doc_id) == c.heads(doc_id)
    assert not net.messages(a, c) and not net.messages(c, a)


def test_burst_of_changes_coalesces_to_one_message_per_document() -> None:
    net = Network()
    a, b = Hub("a"), Hub("b")
    doc_ids = [a.create(name=f"d{i}") for i in range(3)]
    net.connect(a, b)
    net.pump()
    for i in range(100):
        for doc_id in doc_ids:
            a.publish(doc_id, counter=str(i))
    frames = a.gossip.data_to_send("to-b")
    messages = [decode(f) for f in frames]
    assert len(messages) == 3
    assert all(isinstance(m, Sync) for m in messages)
    assert sorted(m.document_id for m in messages) == sorted(doc_ids)
    assert a.gossip.data_to_send("to-b") == []  # drained, and in flight


def test_request_type_when_we_hold_no_data() -> None:
    store = MemoryStore()
    empty, full, wanted = new_document_id(), new_document_id(), new_document_id()
    store.docs[empty] = Document()  # we hold the id, but no data
    store.docs[full] = make_doc(name="f")
    gossip = Gossip("me", store)
    gossip.open_connection("c1", dialer=True, local_metadata={})
    gossip.request_document("c1", wanted)  # queued until the handshake completes
    assert [type(decode(f)) for f in gossip.data_to_send("c1")] == [Join]
    gossip.receive("c1", encode(Peer("srv", "me")))
    sent = {m.document_id: type(m) for m in map(decode, gossip.data_to_send("c1"))}
    assert sent == {wanted: Request, empty: Request, full: Sync}


def test_sender_and_target_ids() -> None:
    net = Network()
    a, b = Hub("a"), Hub("b")
    a.create(name="x")
    net.connect(a, b)
    net.pump()
    join, *from_a = net.messages(a, b)
    assert join == Join("a", ("1",), SERVER_METADATA)
    peer, *from_b = net.messages(b, a)
    assert peer == Peer("b", "a", "1", SERVER_METADATA)
    assert from_a and all((m.sender_id, m.target_id) == ("a", "b") for m in from_a)
    assert from_b and all((m.sender_id, m.target_id) == ("b", "a") for m in from_b)


# --------------------------------------------------------------------- persist before forward


def test_held_document_is_not_forwarded_before_persisted() -> None:
    net = Network()
    a, b, c = Hub("a"), Hub("b", auto_persist=False), Hub("c")
    doc_id = a.create(name="base")
    net.connect(a, b)
    net.connect(c, b)
    net.pump()
    b.persist_all()
    net.pump()
    assert c.read(doc_id) == {"name": "base"}

    a.publish(doc_id, rule="allow")
    net.pump()
    assert [e.document_id for e in b.pending] == [doc_id]
    assert b.gossip.is_held(doc_id)
    assert b.read(doc_id) == {"name": "base", "rule": "allow"}  # applied live
    assert c.read(doc_id) == {"name": "base"}  # but not forwarded
    assert b.gossip.data_to_send("from-a") == []  # not even the reply to the sender
    b.gossip.document_changed(doc_id)  # a local publish meanwhile does not release it
    assert b.gossip.data_to_send("from-c") == []

    b.persist_all()
    assert not b.gossip.is_held(doc_id)
    net.pump()
    assert c.read(doc_id) == {"name": "base", "rule": "allow"}
    assert c.heads(doc_id) == a.heads(doc_id)


def test_a_local_publish_not_yet_durable_is_sent_to_nobody() -> None:
    net = Network()
    a, b = Hub("a"), Hub("b")
    doc_id = a.create(name="base")
    net.connect(a, b)
    net.pump()
    a.gossip.hold_local(doc_id)
    a.edit(doc_id, rule="written, not yet durable")
    b.publish(doc_id, other="asks")  # even a peer's message gets no reply with it
    net.pump()
    assert b.read(doc_id) == {"name": "base", "other": "asks"}
    a.gossip.hold_local(doc_id, held=False)
    a.gossip.document_changed(doc_id)
    net.pump()
    assert b.read(doc_id) == {"name": "base", "other": "asks", "rule": "written, not yet durable"}
    assert a.heads(doc_id) == b.heads(doc_id)


def test_document_stays_held_until_every_change_event_is_persisted() -> None:
    net = Network()
    a, b = Hub("a"), Hub("b", auto_persist=False)
    doc_id = a.create(name="base")
    net.connect(a, b)
    net.pump()
    a.publish(doc_id, second="2")
    net.pump()
    assert len(b.pending) == 2  # the first sync, then the second edit
    first, second = b.pending
    b.pending = [first]
    b.persist_all()
    assert b.gossip.is_held(doc_id)
    b.pending = [second]
    b.persist_all()
    assert not b.gossip.is_held(doc_id)


def _servers_but_client(join: Join) -> PeerInfo:
    return dataclasses.replace(server_peer(join), is_server=join.sender_id != "client")


def _relaying_mesh() -> tuple[Network, Hub, Hub, Hub, Hub, str]:
    """a and c are servers linked to b, which relays later; `client` is a repo client."""
    net = Network()
    a, c, client = Hub("a"), Hub("c"), Hub("client")
    b = Hub("b", admit=_servers_but_client)
    doc_id = a.create(name="base")
    for dialer in (a, c, client):
        net.connect(dialer, b)
    client.gossip.request_document("to-b", doc_id)
    net.pump()
    assert c.read(doc_id) == client.read(doc_id) == {"name": "base"}
    b.relay_later = True
    return net, a, b, c, client, doc_id


def test_relay_later_answers_the_sender_and_clients_and_waits_for_other_servers() -> None:
    net, a, b, c, client, doc_id = _relaying_mesh()
    a.publish(doc_id, rule="allow")
    net.pump()
    assert b.read(doc_id) == client.read(doc_id) == {"name": "base", "rule": "allow"}
    assert c.read(doc_id) == {"name": "base"}
    assert b.gossip.relays_pending()
    # The sender heard b's new heads: it does not offer the change again.
    assert a.gossip.data_to_send("to-b") == []
    b.gossip.release_relays()
    assert not b.gossip.relays_pending()
    net.pump()
    assert c.heads(doc_id) == a.heads(doc_id)


def test_relay_later_never_holds_back_changes_from_a_repo_client() -> None:
    net, a, b, c, client, doc_id = _relaying_mesh()
    client.publish(doc_id, rule="from-client")
    net.pump()
    assert not b.gossip.relays_pending()
    assert a.read(doc_id) == c.read(doc_id) == {"name": "base", "rule": "from-client"}


def test_a_local_change_sends_waiting_relays_at_once() -> None:
    net, a, b, c, _client, doc_id = _relaying_mesh()
    a.publish(doc_id, rule="allow")
    net.pump()
    b.publish(doc_id, local="yes")
    assert not b.gossip.relays_pending()
    net.pump()
    assert c.heads(doc_id) == b.heads(doc_id) == a.heads(doc_id)


def test_has_data_to_send_tells_which_senders_to_wake() -> None:
    net, a, b, _c, _client, doc_id = _relaying_mesh()
    assert not b.gossip.has_data_to_send("from-c")
    a.publish(doc_id, rule="allow")
    assert a.gossip.has_data_to_send("to-b")
    net.pump()
    assert not b.gossip.has_data_to_send("from-c")
    b.gossip.release_relays()
    assert b.gossip.has_data_to_send("from-c")
    assert not b.gossip.has_data_to_send("unknown")


def test_persisted_without_pending_change_is_a_caller_error() -> None:
    gossip = Gossip("a", MemoryStore())
    with pytest.raises(RuntimeError):
        gossip.persisted(new_document_id())


def test_unchanged_heads_mark_only_the_sender_dirty() -> None:
    net = Network()
    a, b, c = Hub("a"), Hub("b"), Hub("c")
    doc_id = a.create(name="x")
    for hub in (b, c):
        hub.store.docs[doc_id] = a.store.docs[doc_id].fork()
    net.connect(a, b)
    net.connect(c, b)
    net.pump()
    assert not [e for e in b.events if isinstance(e, DocumentChanged)]
    frames_to_c = [m for m in net.messages(b, c) if isinstance(m, Sync)]
    frames_to_a = [m for m in net.messages(b, a) if isinstance(m, Sync)]
    # b answered each peer's announcement once, and never relayed one peer's to the other
    assert len(frames_to_a) == len(frames_to_c) == 1


def test_a_link_is_warm_once_the_peer_spoke_about_every_document() -> None:
    net = Network()
    a, b = Hub("a"), Hub("b")
    first, second = a.create(name="one"), a.create(name="two")
    for doc_id in (first, second):
        b.store.docs[doc_id] = a.store.docs[doc_id].fork()
    dialer_conn, listener_conn = net.connect(a, b)
    assert not a.gossip.is_warm(dialer_conn)
    assert not b.gossip.is_warm(listener_conn)
    net.pump()
    assert a.gossip.is_warm(dialer_conn) and b.gossip.is_warm(listener_conn)
    assert not a.gossip.is_warm("no-such-connection")


def test_a_received_change_event_carries_the_chunks_of_its_message() -> None:
    net, a, b, doc_id = linked_pair()
    b.events.clear()
    a.publish(doc_id, rule="allow")
    net.pump()
    (changed,) = [e for e in b.events if isinstance(e, DocumentChanged)]
    (change,) = a.store.docs[doc_id].get_changes(changed.before_heads)
    assert [change_hash_and_deps(chunk)[0] for chunk in changed.chunks] == [change.hash]
    assert b.heads(doc_id) == a.heads(doc_id)


# ---------------------------------------------------------------------------- permissions


def test_read_only_peer_sending_changes_is_refused() -> None:
    net = Network()
    server, client = Hub("server", admit=client_peer), Hub("client")
    doc_id = server.create(name="domain")
    net.connect(client, server)
    net.pump()
    assert client.read(doc_id) == {"name": "domain"}  # reading is fine
    before = server.heads(doc_id)

    client.publish(doc_id, name="vandalised")
    net.pump()
    assert server.heads(doc_id) == before
    assert server.read(doc_id) == {"name": "domain"}
    failure = server.failures()
    assert len(failure) == 1 and failure[0].message.startswith("changes refused:")
    errors = [m for m in net.messages(server, client) if isinstance(m, Error)]
    assert [e.message for e in errors] == [failure[0].message]
    assert client.failures()[0].message == f"peer reported an error: {failure[0].message}"
    assert server.gossip.connections() == []  # the fake network closed the socket


def test_unreadable_document_gets_doc_unavailable_and_never_data() -> None:
    net = Network()
    secret = new_document_id()

    def restricted(join: Join) -> PeerInfo:
        return PeerInfo(join.sender_id, {}, may_write=True, may_read=lambda d: d != secret)

    server, client = Hub("server", admit=restricted), Hub("client")
    server.store.docs[secret] = make_doc(password="hunter2")
    public = server.create(name="public")
    conn, _ = net.connect(client, server)
    client.gossip.request_document(conn, secret)
    net.pump()
    server.publish(secret, password="changed")
    net.pump()
    assert client.read(public) == {"name": "public"}
    assert client.store.docs.get(secret) is None
    to_client = net.messages(server, client)
    assert DocUnavailable("server", "client", secret) in to_client
    assert not [m for m in to_client if isinstance(m, Sync | Request) and m.document_id == secret]
    assert DocumentUnavailableFromPeer(conn, secret) in client.events


def test_unavailable_document_is_delivered_when_it_appears() -> None:
    net = Network()
    server = Hub("server", accept=False, admit=client_peer)
    client = Hub("client")
    doc_id = new_document_id()
    conn, _ = net.connect(client, server)
    client.gossip.request_document(conn, doc_id)
    net.pump()
    assert DocumentUnavailableFromPeer(conn, doc_id) in client.events
    assert server.store.accept_calls == [(doc_id, "client")]
    assert client.read(doc_id) is None

    server.store.docs[doc_id] = Document()
    server.publish(doc_id, name="late")
    unrelated = server.create(name="not asked for")
    server.gossip.document_changed(unrelated)
    net.pump()
    assert client.read(doc_id) == {"name": "late"}
    assert client.read(unrelated) is None  # a client only follows what it asked about


def test_request_answered_with_an_empty_document_is_unavailable() -> None:
    net = Network()
    a, b = Hub("a"), Hub("b")  # b takes any document, but has nothing to give
    doc_id = new_document_id()
    conn, _ = net.connect(a, b)
    a.gossip.request_document(conn, doc_id)
    net.pump()
    assert DocumentUnavailableFromPeer(conn, doc_id) in a.events
    b.publish(doc_id, name="arrived")
    net.pump()
    assert a.read(doc_id) == {"name": "arrived"}


# ------------------------------------------------------------------------------ handshake


def handshake(listener: Gossip, conn_id: str = "c1") -> list:
    listener.open_connection(conn_id, dialer=False, local_metadata={})
    return listener.receive(conn_id, encode(Join("x")))


def test_listener_reports_join_and_waits_for_accept() -> None:
    gossip = Gossip("me", MemoryStore())
    events = handshake(gossip)
    assert events == [JoinReceived("c1", Join("x"))]
    assert gossip.state("c1") is ConnectionState.AWAITING_ACCEPT
    assert gossip.data_to_send("c1") == []


def test_message_before_accept_is_a_protocol_error() -> None:
    gossip = Gossip("me", MemoryStore())
    handshake(gossip)
    data = make_doc(a="b").generate_sync_message(SyncState()).encode()
    sync = encode(Sync("x", "me", new_document_id(), data))
    events = gossip.receive("c1", sync)
    assert events == [ConnectionFailed("c1", "unexpected sync message in state awaiting-accept")]
    assert [decode(f) for f in gossip.data_to_send("c1")] == [Error(events[0].message)]
    assert gossip.is_closed("c1")
    assert gossip.receive("c1", encode(Join("x"))) == []  # ignored after close
    assert gossip.data_to_send("c1") == []


def test_first_message_must_be_join() -> None:
    gossip = Gossip("me", MemoryStore())
    gossip.open_connection("c1", dialer=False, local_metadata={})
    events = gossip.receive("c1", encode(Peer("x", "me")))
    assert events == [ConnectionFailed("c1", "unexpected peer message in state awaiting-join")]


def test_unsupported_protocol_version() -> None:
    gossip = Gossip("me", MemoryStore())
    gossip.open_connection("c1", dialer=False, local_metadata={})
    events = gossip.receive("c1", encode(Join("x", ("2",))))
    assert events == [ConnectionFailed("c1", "unsupported protocol version")]
    assert [decode(f) for f in gossip.data_to_send("c1")] == [Error("unsupported protocol version")]


def test_reject_sends_error_and_closes() -> None:
    gossip = Gossip("me", MemoryStore())
    handshake(gossip)
    gossip.reject("c1", "authentication failed")
    assert [decode(f) for f in gossip.data_to_send("c1")] == [Error("authentication failed")]
    assert gossip.is_closed("c1")
    with pytest.raises(RuntimeError):
        gossip.accept("c1", PeerInfo("x", {}, may_write=True), {})


def test_accept_queues_peer_then_announcements() -> None:
    store = MemoryStore()
    doc_id = new_document_id()
    store.docs[doc_id] = make_doc(a="1")
    gossip = Gossip("me", store)
    handshake(gossip)
    gossip.accept("c1", PeerInfo("x", {}, may_write=True), {"role": "primary"})
    peer, sync = (decode(f) for f in gossip.data_to_send("c1"))
    assert peer == Peer("me", "x", "1", {"role": "primary"})
    assert isinstance(sync, Sync) and sync.document_id == doc_id
    assert gossip.peer("c1") == PeerInfo("x", {}, may_write=True)


def test_dialer_peer_info_defaults_and_hook() -> None:
    gossip = Gossip("me", MemoryStore())
    gossip.open_connection("c1", dialer=True, local_metadata={"role": "secondary"})
    assert [decode(f) for f in gossip.data_to_send("c1")] == [
        Join("me", ("1",), {"role": "secondary"})
    ]
    [event] = gossip.receive("c1", encode(Peer("srv", "me", "1", {"role": "primary"})))
    assert isinstance(event, PeerConnected)
    assert (event.peer.peer_id, event.peer.is_server, event.peer.may_write) == ("srv", True, True)
    assert event.peer.may_read(new_document_id())

    def refuse(conn_id: str, peer: Peer) -> PeerInfo:
        raise AuthenticationFailed(f"{peer.sender_id} is not in our cluster")

    hooked = Gossip("me", MemoryStore(), on_peer=refuse)
    hooked.open_connection("c1", dialer=True, local_metadata={})
    hooked.data_to_send("c1")
    events = hooked.receive("c1", encode(Peer("srv", "me")))
    assert events == [ConnectionFailed("c1", "srv is not in our cluster")]
    assert [decode(f) for f in hooked.data_to_send("c1")] == [Error("srv is not in our cluster")]


def test_join_after_handshake_is_a_protocol_error() -> None:
    net = Network()
    a, b = Hub("a"), Hub("b")
    net.connect(a, b)
    net.pump()
    events = net.deliver(b, "from-a", encode(Join("a")))
    assert events == [ConnectionFailed("from-a", "unexpected join message in state connected")]


# ----------------------------------------------------------------- faults stay on their link


@pytest.mark.parametrize(
    "frame",
    [
        b"\xff\x00 garbage",
        cbor2.dumps(["not", "a", "map"]),
        cbor2.dumps({"type": "sync", "senderId": "a", "targetId": "b"}),
        cbor2.dumps(
            {
                "type": "sync",
                "senderId": "a",
                "targetId": "b",
                "documentId": new_document_id(),
                "data": b"\x42\x01corrupt",
            }
        ),
    ],
    ids=["garbage", "not-a-map", "missing-fields", "corrupt-sync-bytes"],
)
def test_malformed_frame_closes_only_that_connection(frame: bytes) -> None:
    net = Network()
    a, b, c = Hub("a"), Hub("b"), Hub("c")
    net.connect(a, b)
    net.connect(c, b)
    net.pump()
    events = net.deliver(b, "from-a", frame)
    assert len(events) == 1 and isinstance(events[0], ConnectionFailed)
    [error] = [decode(f) for f in b.gossip.data_to_send("from-a")]
    assert error == Error(events[0].message)
    assert b.gossip.is_closed("from-a") and not b.gossip.is_closed("from-c")

    doc_id = b.create(name="still working")
    b.gossip.document_changed(doc_id)
    net.pump()
    assert c.read(doc_id) == {"name": "still working"}


def test_oversized_frame_is_refused() -> None:
    net = Network()
    a, b = Hub("a"), Hub("b", max_message_size=200)
    net.connect(a, b)
    net.pump()
    a.create(name="x" * 500)
    a.gossip.document_changed(next(iter(a.store.docs)))
    net.pump()
    [failure] = b.failures()
    assert "exceeds the limit of 200" in failure.message


def test_error_from_peer_closes_without_answer() -> None:
    net = Network()
    a, b = Hub("a"), Hub("b")
    net.connect(a, b)
    net.pump()
    events = net.deliver(b, "from-a", encode(Error("shutting down")))
    assert events == [ConnectionFailed("from-a", "peer reported an error: shutting down")]
    assert b.gossip.data_to_send("from-a") == []
    assert b.gossip.is_closed("from-a")


# ------------------------------------------------------------------------------- reconnect


def test_reconnect_with_fresh_state_converges_after_divergent_edits() -> None:
    net = Network()
    a, b = Hub("a"), Hub("b")
    doc_id = a.create(name="d")
    a_conn, _ = net.connect(a, b)
    net.pump()
    net.disconnect(a, a_conn)
    assert a.gossip.connections() == [] and b.gossip.connections() == []

    a.publish(doc_id, offline_a="1")  # nobody to tell
    b.publish(doc_id, offline_b="2")
    other = b.create(name="created while apart")
    net.connect(a, b)
    net.pump()
    expected = {"name": "d", "offline_a": "1", "offline_b": "2"}
    assert a.read(doc_id) == b.read(doc_id) == expected
    assert a.heads(doc_id) == b.heads(doc_id)
    assert a.read(other) == {"name": "created while apart"}


# ------------------------------------------------------------------------------- ephemeral


def test_ephemeral_messages_reach_other_readers_once() -> None:
    net = Network()
    doc_id = new_document_id()

    def blind(join: Join) -> PeerInfo:
        return PeerInfo(join.sender_id, {}, may_write=True, may_read=lambda d: False)

    hub = Hub("hub")
    hub.store.docs[doc_id] = make_doc(name="x")
    a, c = Hub("a"), Hub("c")
    d = Hub("d")
    net.connect(a, hub)
    net.connect(c, hub)
    net.pump()
    hub.admit = blind
    net.connect(d, hub)
    net.pump()

    presence = Ephemeral("a", "hub", doc_id, 7, "session-1", cbor2.dumps({"cursor": 3}))
    assert net.deliver(hub, "from-a", encode(presence)) == []
    assert net.deliver(hub, "from-a", encode(presence)) == []  # a repeat is dropped
    assert [decode(f) for f in hub.gossip.data_to_send("from-c")] == [
        Ephemeral("a", "c", doc_id, 7, "session-1", cbor2.dumps({"cursor": 3}))
    ]
    assert hub.gossip.data_to_send("from-a") == []
    assert hub.gossip.data_to_send("from-d") == []


def test_ephemeral_messages_do_not_circle_a_triangle() -> None:
    net = Network()
    a, b, c = Hub("a"), Hub("b"), Hub("c")
    doc_id = a.create(name="x")
    net.connect(a, b)
    net.connect(b, c)
    net.connect(c, a)
    net.pump()
    presence = Ephemeral("a", "b", doc_id, 1, "s", b"\xa0")
    net.deliver(b, "from-a", encode(presence))
    net.pump()
    ephemerals = [(m.sender_id, m.target_id) for m in net.messages() if isinstance(m, Ephemeral)]
    assert ephemerals == [("a", "c"), ("a", "a")]  # b to c, c to a, and a drops its own


def test_ignored_message_types_are_ignored() -> None:
    net = Network()
    a, b = Hub("a"), Hub("b")
    net.connect(a, b)
    net.pump()
    assert net.deliver(b, "from-a", encode(Ignored("remote-heads-changed", "a"))) == []
    assert b.gossip.state("from-a") is ConnectionState.CONNECTED


# ---------------------------------------------------------------------------------- interop


class PlainPeer:
    """The other side speaks the protocol with nothing but automerge Documents and
    SyncStates: the package's own sync, no crdtmds logic."""

    def __init__(self, peer_id: str) -> None:
        self.peer_id = peer_id
        self.docs: dict[str, Document] = {}
        self.states: dict[str, SyncState] = {}
        self.hub_id = ""

    def receive(self, data: bytes) -> list[bytes]:
        message = decode(data)
        if isinstance(message, Peer):
            self.hub_id = message.sender_id
            return [self._sync(doc_id) for doc_id in self.docs]
        assert isinstance(message, Sync | Request)
        doc = self.docs.setdefault(message.document_id, Document())
        state = self.states.setdefault(message.document_id, SyncState())
        doc.receive_sync_message(state, Message.decode(message.data))
        return [self._sync(message.document_id)]

    def _sync(self, doc_id: str) -> bytes:
        state = self.states.setdefault(doc_id, SyncState())
        message = self.docs[doc_id].generate_sync_message(state)
        if message is None:
            return b""
        return encode(Sync(self.peer_id, self.hub_id, doc_id, message.encode()))


def test_hub_syncs_with_plain_automerge_peer() -> None:
    hub = Hub("hub")
    from_hub = hub.create(name="hub's")
    plain = PlainPeer("plain")
    from_plain = new_document_id()
    plain.docs[from_plain] = make_doc(name="plain's")

    hub.gossip.open_connection("p", dialer=False, local_metadata={})
    hub.handle(hub.gossip.receive("p", encode(Join("plain"))))
    outgoing = hub.gossip.data_to_send("p")
    for _ in range(20):
        incoming = [reply for frame in outgoing for reply in plain.receive(frame) if reply]
        for frame in incoming:
            hub.handle(hub.gossip.receive("p", frame))
        outgoing = hub.gossip.data_to_send("p")
        if not outgoing and not incoming:
            break
    else:
        pytest.fail("sync with the plain peer did not settle")
    assert hub.read(from_plain) == {"name": "plain's"}
    assert extract(plain.docs[from_hub], ROOT) == {"name": "hub's"}
    assert sorted(plain.docs[from_hub].get_heads()) == hub.heads(from_hub)
    assert sorted(plain.docs[from_plain].get_heads()) == hub.heads(from_plain)


def test_a_sync_message_over_the_budget_is_split_into_messages_that_apply_in_turn() -> None:
    """Automerge sends a peer that holds nothing the whole document, which cannot be cut:
    its changes go instead, shared out in order between messages within the budget."""
    source = Document()
    for index in range(40):
        with source.transaction() as tx:
            tx.put(ROOT, f"k{index}", ScalarType.Str, os.urandom(200).hex())  # no compression
    state = SyncState()
    target, target_state = Document(), SyncState()
    request = target.generate_sync_message(target_state)
    assert request is not None
    source.receive_sync_message(state, request)
    message = source.generate_sync_message(state)
    assert message is not None
    data = message.encode()
    budget = len(data) // 3

    parts = split_sync_message(data, budget, lambda: [c.bytes for c in source.get_changes([])])

    assert len(parts) > 3 and all(len(part) <= budget for part in parts)
    assert {part[0] for part in parts} == {SYNC_MESSAGE_V1}
    for part in parts:
        target.receive_sync_message(target_state, Message.decode(part))
    assert target.get_heads() == source.get_heads()
    assert split_sync_message(data, len(data), list) == [data]  # fits: as it is
