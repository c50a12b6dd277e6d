"""The change graph of one document as a peer holds it, and the automerge sync protocol
spoken over it, without an Automerge document.

An observer only needs to know which changes a server holds and when each arrived, not
what they do. Applying them to a real Automerge document costs time that grows with the
document's history, taken from the servers being measured on the same machine; reading
each change's hash and dependencies from its chunk header costs a few microseconds.
The sync messages are read and written by `lib.sync_codec`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from lib.sync_codec import (
    change_hash_and_deps,
    encode_sync_message,
    parse_sync_message,
    sync_message_changes,
)


@dataclass(slots=True)
class ChangeGraph:
    """The changes of one document a peer holds: hashes, arrival times and heads.

    A change is held once every change it depends on is; one that arrives before its
    dependencies waits (as in Automerge), with the time it arrived.
    """

    arrived: dict[bytes, float] = field(default_factory=dict)
    """Held change hash -> when it arrived (`now()` clock)."""
    heads: set[bytes] = field(default_factory=set)
    """Held changes that no held change depends on."""
    waiting: dict[bytes, tuple[tuple[bytes, ...], float]] = field(default_factory=dict)
    """Changes with a missing dependency: hash -> (deps, arrival)."""

    def add(self, change: bytes, deps: Sequence[bytes], arrived: float) -> list[bytes]:
        """Take one change; returns the changes held from now on (it and any it freed)."""
        if change in self.arrived or change in self.waiting:
            return []
        self.waiting[change] = (tuple(deps), arrived)
        held: list[bytes] = []
        progress = True
        while progress:
            progress = False
            for waiting, (waiting_deps, at) in list(self.waiting.items()):
                if all(dep in self.arrived for dep in waiting_deps):
                    self._hold(waiting, waiting_deps, at)
                    held.append(waiting)
                    progress = True
        return held

    def _hold(self, change: bytes, deps: tuple[bytes, ...], arrived: float) -> None:
        del self.waiting[change]
        self.arrived[change] = arrived
        self.heads.difference_update(deps)
        self.heads.add(change)

    def missing(self) -> list[bytes]:
        """Dependencies of waiting changes that are neither held nor waiting."""
        wanted = {dep for deps, _ in self.waiting.values() for dep in deps}
        return sorted(d for d in wanted if d not in self.arrived and d not in self.waiting)

    def sorted_heads(self) -> list[bytes]:
        return sorted(self.heads)


@dataclass(frozen=True, slots=True)
class Offer:
    """Changes of our own and the sync message that carries them, encoded beforehand.

    The message announces `heads`, the heads once the peer has these changes, and one
    `have` whose last sync is those heads with an empty bloom filter. A last sync at the
    heads the peer acknowledged would make it send back every change since then that the
    filter does not hold (these ones among them); at the heads after the changes, which
    the peer holds by the time it answers (the message carries every change it lacks up
    to them, on a connection that keeps order), it has nothing to send back.
    """

    changes: tuple[tuple[bytes, tuple[bytes, ...]], ...]
    """(hash, deps) of each change, in the order carried."""
    chunks: tuple[bytes, ...]
    heads: list[bytes]
    data: bytes
    """The encoded automerge sync message."""
    frame: bytes = b""
    """The message in its automerge-repo envelope, when a connection has wrapped it."""


@dataclass(slots=True)
class GraphSync:
    """The automerge sync protocol with one peer, for a `ChangeGraph`.

    It answers as Automerge's own sync state would (same reply and silence rules) with
    heads = what it holds, need = what waiting changes lack, and one `have` whose last
    sync is its heads and whose bloom filter is empty, so the peer sends each change it
    has beyond those heads exactly once.

    It writes only changes built elsewhere: `prepare` encodes the messages that will carry
    them (before anything is timed), `take` records one as sent. A change the peer
    declares it needs is sent with the next answer if it is one of those.
    """

    graph: ChangeGraph = field(default_factory=ChangeGraph)
    their_heads: list[bytes] | None = None
    their_need: list[bytes] = field(default_factory=list)
    last_sent_heads: list[bytes] | None = None
    in_flight: bool = False
    heard: bool = False
    """Whether the peer has sent a sync message about the document."""
    spoken: bool = False
    """Whether we have sent one."""
    own: dict[bytes, bytes] = field(default_factory=dict)
    """Chunks of the changes we have offered, by hash."""

    def receive(self, data: bytes, arrived: float) -> list[bytes]:
        """Take one sync message; returns the changes held from now on."""
        message = parse_sync_message(data)
        self.in_flight = False
        self.heard = True
        held: list[bytes] = []
        for change, deps in sync_message_changes(message):
            held += self.graph.add(change, deps, arrived)
        self.their_heads = message.heads
        self.their_need = message.need
        return held

    def generate(self) -> bytes | None:
        """The next sync message for the peer, or None when there is nothing to say."""
        heads = self.graph.sorted_heads()
        needed = [self.own[h] for h in self.their_need if h in self.own]
        self.their_need = []
        unchanged = self.spoken and heads == self.last_sent_heads
        if not needed and unchanged and (heads == self.their_heads or self.in_flight):
            return None
        self.spoken = True
        self.last_sent_heads = heads
        self.in_flight = True
        return encode_sync_message(heads, self.graph.missing(), [heads], needed)

    def prepare(self, batches: Iterable[Sequence[bytes]]) -> list[Offer]:
        """One offer per batch of change chunks (each in causal order after what the
        graph holds and the batches before it), to be taken in that order."""
        known = self.graph
        graph = ChangeGraph(dict(known.arrived), set(known.heads), dict(known.waiting))
        offers = []
        for chunks in batches:
            changes = tuple(change_hash_and_deps(chunk) for chunk in chunks)
            for change, deps in changes:
                graph.add(change, deps, 0.0)
            heads = graph.sorted_heads()
            data = encode_sync_message(heads, graph.missing(), [heads], chunks)
            offers.append(Offer(changes, tuple(chunks), heads, data))
        return offers

    def take(self, offer: Offer, sent: float) -> None:
        """Record an offer of `prepare` as sent at `sent`: its changes are ours now."""
        for (change, deps), chunk in zip(offer.changes, offer.chunks, strict=True):
            self.graph.add(change, deps, sent)
            self.own[change] = chunk
        self.spoken = True
        self.last_sent_heads = offer.heads
        self.in_flight = True
