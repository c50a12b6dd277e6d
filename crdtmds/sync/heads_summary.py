"""The heads summary two crdtmds servers exchange when they connect, so that idle domains
cost neither a load nor sync traffic on a reconnect. Pure: no I/O.

Each server remembers, per peer server, the heads both last held alike for each domain
(`HeadsSource.agreed`; recorded whenever the peer's sync message names exactly our heads).
Heads only grow, so if both sides still hold what they agreed on, nothing needs syncing.
On connect each side sends, as an automerge-repo ``ephemeral`` message about the cluster
document (session `SUMMARY_SESSION`; stock peers never get one, see `wants_summary`):

1. ``listed``: the domains whose heads differ from what it agreed with this peer (or
   that it has no record or no known heads for), each with its heads;
2. once it has the peer's list, ``digest``: a hash over the agreed records of every
   domain neither side listed, and ``answers``: its own heads of the domains the peer
   listed and it did not. Equal digests prove both sides hold the same records for the
   rest (a server restored from a backup would not): only the listed domains are
   synced. Different digests fall back to syncing every domain, as a stock peer does.

A listed domain whose heads are the same on both sides is in sync already (its record is
updated: the last message of a sync often tells only one side that both agree). The
dialer drives the sync of the others: its first message about such a domain names the
agreed heads as what the peer has (`crafted_first_message`), so each side sends only
the changes made since, not a Bloom filter of the whole history.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import cbor2

from crdtmds.errors import ProtocolError
from crdtmds.sync.sync_message import SyncMessage, encode_sync_message

SUMMARY_SESSION = "crdtmds-heads-summary/1"
"""The sessionId of summary ephemeral messages."""
CAPABILITY = "heads-summary"
"""The key a server sets to 1 in its crdtmds peer metadata when it speaks the summary."""
_HASH = 32


class HeadsSource(Protocol):
    """What a server knows of heads without loading documents."""

    def domain_ids(self) -> Iterable[str]: ...

    def holds(self, document_id: str) -> bool: ...

    def heads_of(self, document_id: str) -> list[bytes] | None:
        """Current heads, None when unknown without a load."""
        ...

    def agreed(self, peer_key: str) -> Mapping[str, list[bytes]]:
        """Per document, the heads this server and the peer last held alike."""
        ...

    def record_agreed(self, peer_key: str, document_id: str, heads: list[bytes]) -> None: ...


def wants_summary(metadata: Mapping[str, Any]) -> str | None:
    """The peer's server id when its crdtmds metadata offers the summary, else None."""
    if metadata.get(CAPABILITY) == 1 and isinstance(metadata.get("server-id"), str):
        return str(metadata["server-id"])
    return None


@dataclass(slots=True)
class Exchange:
    """The summary exchange on one connection."""

    peer_key: str
    ours: dict[str, list[bytes] | None] = field(default_factory=dict)
    theirs: dict[str, list[bytes] | None] | None = None
    our_digest: bytes | None = None
    answers: dict[str, list[bytes] | None] = field(default_factory=dict)
    """The peer's heads of the domains we listed and it did not."""
    done: bool = False


def listed(source: HeadsSource, peer_key: str) -> dict[str, list[bytes] | None]:
    """The domains whose heads may differ from what was agreed with the peer."""
    agreed = source.agreed(peer_key)
    result: dict[str, list[bytes] | None] = {}
    for document_id in source.domain_ids():
        heads = source.heads_of(document_id)
        record = agreed.get(document_id)
        if heads is None or record is None or sorted(heads) != sorted(record):
            result[document_id] = sorted(heads) if heads is not None else None
    return result


def digest(source: HeadsSource, peer_key: str, excluded: Iterable[str]) -> bytes:
    """A hash over the agreed records of the held domains outside `excluded`."""
    left_out = set(excluded)
    held = set(source.domain_ids())
    hasher = hashlib.sha256()
    for document_id, heads in sorted(source.agreed(peer_key).items()):
        if document_id in held and document_id not in left_out:
            hasher.update(document_id.encode())
            hasher.update(b"".join(sorted(heads)))
    return hasher.digest()


def encode_listed(docs: Mapping[str, list[bytes] | None]) -> bytes:
    joined = {d: b"".join(h) if h is not None else None for d, h in docs.items()}
    return cbor2.dumps({"listed": joined})


def answers(source: HeadsSource, exchange: Exchange) -> dict[str, list[bytes] | None]:
    """Our heads of the domains the peer listed and we did not."""
    theirs = exchange.theirs or {}
    return {d: source.heads_of(d) for d in theirs if d not in exchange.ours}


def encode_digest(value: bytes, heads: Mapping[str, list[bytes] | None]) -> bytes:
    joined = {d: b"".join(sorted(h)) if h is not None else None for d, h in heads.items()}
    return cbor2.dumps({"digest": value, "answers": joined})


def decode(data: bytes) -> dict[str, Any]:
    """A summary message's fields; ProtocolError when malformed."""
    try:
        fields = cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError) as exc:
        raise ProtocolError(f"malformed heads summary: {exc}") from None
    if not isinstance(fields, dict):
        raise ProtocolError("malformed heads summary: not a map")
    if "listed" in fields:
        fields["listed"] = _listed_field(fields["listed"])
    elif isinstance(fields.get("digest"), bytes):
        fields["answers"] = _listed_field(fields.get("answers", {}))
    else:
        raise ProtocolError("malformed heads summary: neither listed nor digest")
    return fields


def _listed_field(raw: Any) -> dict[str, list[bytes] | None]:
    if not isinstance(raw, dict):
        raise ProtocolError("malformed heads summary: listed is not a map")
    result: dict[str, list[bytes] | None] = {}
    for document_id, joined in raw.items():
        if not isinstance(document_id, str) or not (joined is None or isinstance(joined, bytes)):
            raise ProtocolError("malformed heads summary entry")
        if joined is not None and len(joined) % _HASH:
            raise ProtocolError("malformed heads summary: heads are 32-byte hashes")
        result[document_id] = None if joined is None else _split(joined)
    return result


def to_sync(exchange: Exchange, source: HeadsSource, digests_match: bool) -> list[str]:
    """The domains to sync once both digests are known; records domains that both sides
    listed with the same heads as agreed."""
    if not digests_match:
        return list(source.domain_ids())
    theirs = {**exchange.answers, **(exchange.theirs or {})}
    result: list[str] = []
    for document_id in {*exchange.ours, *theirs}:
        mine, other = source.heads_of(document_id), theirs.get(document_id)
        if mine is not None and other is not None and sorted(mine) == sorted(other):
            source.record_agreed(exchange.peer_key, document_id, mine)
            continue
        result.append(document_id)
    return result


def crafted_first_message(heads: list[bytes], since: list[bytes], changes: list[bytes]) -> bytes:
    """A first sync message that says the peer has `since` (heads both held alike) and
    carries our changes made after it: the peer answers with its own changes since then,
    and neither side sends a Bloom filter of the whole history. A peer that lacks some of
    `since` after all answers with Automerge's reset, and the sync starts over in full."""
    have = [(sorted(since), b"")]
    message = SyncMessage(heads=sorted(heads), need=[], have=have, changes=changes)
    return encode_sync_message(message)


def _split(joined: bytes) -> list[bytes]:
    return [joined[i : i + _HASH] for i in range(0, len(joined), _HASH)]
