"""The receive floor: the least CPU a server can spend taking in one publish of a peer.

Measured in this process with Automerge and SQLite alone, on a domain-shaped document
(an objects map and a revisions list) that already holds a given number of publishes:
decoding the peer's sync message, `receive_sync_message`, generating and encoding the
sync messages a server then sends (an answer to the sender and one to each of three other
peers), and one SQLite commit of the publish's change rows (WAL, synchronous FULL, as
`crdtmds.storage.database`). A publish is two changes, as crdtmds makes them today: the
edit and the revision entry. Everything else a server does per publish (the protocol's
CBOR frames, the view update, relays, the event loop) is above this floor.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from pathlib import Path

from automerge.core import ROOT, Document, Message, ObjType, ScalarType, SyncState

OTHER_PEERS = 3
"""Peers besides the sender that a receiving server sends each publish on to (its
observer and the servers of a 5-server mesh would be more; the floor takes few)."""


class _Link:
    """Two documents and their sync states, as the two ends of one link."""

    def __init__(self, near: Document, far: Document) -> None:
        self.near, self.far = near, far
        self.near_state, self.far_state = SyncState(), SyncState()

    def settle(self) -> None:
        """Exchange messages until neither end has anything to send."""
        for _ in range(100):
            moved = False
            for sender, state, receiver, receiver_state in (
                (self.near, self.near_state, self.far, self.far_state),
                (self.far, self.far_state, self.near, self.near_state),
            ):
                message = sender.generate_sync_message(state)
                if message is not None:
                    receiver.receive_sync_message(receiver_state, message)
                    moved = True
            if not moved:
                return
        raise RuntimeError("sync did not settle")


def _publish(doc: Document, index: int) -> None:
    """One publish as two changes: a host record, then a revision entry."""
    objects = doc.get(ROOT, "objects")[1]  # type: ignore[index]
    revisions = doc.get(ROOT, "revisions")[1]  # type: ignore[index]
    with doc.transaction() as tx:
        host = tx.put_object(objects, f"uid-{index}", ObjType.Map)
        for key, value in (("name", f"host-{index}"), ("ipv4-address", "10.0.0.1")):
            tx.put(host, key, ScalarType.Str, value)
    with doc.transaction() as tx:
        entry = tx.insert_object(revisions, doc.length(revisions), ObjType.Map)
        tx.put(entry, "admin", ScalarType.Str, "bench")
        tx.put(entry, "at", ScalarType.F64, time.time())


def _domain(publishes: int) -> Document:
    doc = Document()
    with doc.transaction() as tx:
        tx.put_object(ROOT, "objects", ObjType.Map)
        tx.put_object(ROOT, "revisions", ObjType.List)
    for index in range(publishes):
        _publish(doc, index)
    return doc


def _database(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("CREATE TABLE changes (id INTEGER PRIMARY KEY, hash BLOB, data BLOB)")
    return connection


def receive_floor_seconds(publishes: int, samples: int = 25) -> float:
    """Median CPU seconds of the floor, per publish, in a domain of `publishes` publishes."""
    writer = _domain(publishes)
    chunks = b"".join(change.bytes for change in writer.get_changes([]))
    receiver = Document.load(chunks)
    inbound = _Link(writer, receiver)
    outbound = [_Link(receiver, Document.load(chunks)) for _ in range(OTHER_PEERS)]
    for link in (inbound, *outbound):
        link.settle()
    costs = []
    with tempfile.TemporaryDirectory(prefix="crdtmds-receive-floor-") as tmp:
        connection = _database(Path(tmp) / "floor.sqlite3")
        for index in range(publishes, publishes + samples):
            before = writer.get_heads()
            _publish(writer, index)
            rows = [(c.hash, c.bytes) for c in writer.get_changes(before)]  # as sent
            wire = writer.generate_sync_message(inbound.near_state).encode()  # type: ignore[union-attr]
            start = time.process_time()
            receiver.receive_sync_message(inbound.far_state, Message.decode(wire))
            answers = [receiver.generate_sync_message(inbound.far_state)]
            answers += [receiver.generate_sync_message(link.near_state) for link in outbound]
            encoded = [answer.encode() for answer in answers if answer is not None]
            connection.execute("BEGIN")
            connection.executemany("INSERT INTO changes (hash, data) VALUES (?, ?)", rows)
            connection.execute("COMMIT")
            costs.append(time.process_time() - start)
            if len(encoded) != 1 + OTHER_PEERS:
                raise RuntimeError("the receiver had no message for some peer")
            for link in (inbound, *outbound):  # deliver the answers (not timed)
                link.settle()
        connection.close()
    costs.sort()
    return costs[len(costs) // 2]


if __name__ == "__main__":
    for size in (250, 2000):
        print(f"receive floor at {size} publishes: {receive_floor_seconds(size) * 1000:.2f} ms")
