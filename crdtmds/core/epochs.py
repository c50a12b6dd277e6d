"""Epochs of a domain: a new document that starts from a snapshot of the previous one.

Automerge keeps every operation and every change ever made, and a publish pays for them:
at 20,000 publishes a transaction on a domain document costs ~2.7x and a peer's
`receive_sync_message` ~12x what they cost at 1,000, while the same publish into a
document holding only the current content costs what it cost in week one (figures in
bench/README.md, "Years of history"). An epoch bounds that history: at a cut (heads of
the current document), each server starts the next epoch's document from the content at
the cut (`start_epoch`); the cut and the next document's id are written into the current
document (`propose_next`), so whoever holds that record holds the cut.

Every server builds the next document on its own, and all build the same bytes: the one
change is written by an actor derived from the previous document and the epoch number,
with no dependencies, the content read at the cut (identical on every server that holds
the cut) written in key order, and no timestamp. So no snapshot travels, and two
servers that start the epoch concurrently hold one and the same change.

The previous document is kept: the revisions of an epoch live in its own document, and a
revision's heads are read in the document that holds them (`EpochChain`). Publishes made
concurrently with the cut land in the previous document after it; `carry_late` brings
what they changed into the new one as field-level writes, and records in the new
document the heads it carried (`carried_heads`), so that nothing is carried twice.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from automerge.core import ROOT, Document, ObjType

from crdtmds.core.docdata import (
    child_id,
    has_heads,
    hex_heads,
    insert_value,
    put_value,
    read,
    unhex_heads,
)
from crdtmds.core.domain import state_at
from crdtmds.core.domain_state import DomainState, Layer
from crdtmds.core.field_writes import put_changed_fields
from crdtmds.core.revert import content_heads
from crdtmds.errors import ValidationError

EPOCH_KEY = "epoch"
"""Root key of an epoch's document: its number, the previous document and the cut, and
per server the heads of the previous document it has carried (`carry_late`)."""
CARRIED_KEY = "carried"
NEXT_EPOCH_KEY = "next-epoch"
"""Root key of a document whose successor was proposed: the cut and the successor's id.
Written after the cut, so whoever holds it holds the cut; a stock automerge-repo client
following a domain finds the next document's id here."""


@dataclass(frozen=True, slots=True)
class Cut:
    """Where an epoch starts: heads of the previous epoch's document."""

    epoch: int
    """Number of the epoch the cut starts (the domain's first document is epoch 0)."""
    previous_document: str
    """Document id of the previous epoch."""
    heads: tuple[bytes, ...]

    def record(self) -> dict[str, Any]:
        return {
            "number": self.epoch,
            "previous-document": self.previous_document,
            "cut": hex_heads(self.heads),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Cut:
        number, previous, cut = (record.get(k) for k in ("number", "previous-document", "cut"))
        valid = isinstance(number, int) and isinstance(previous, str) and isinstance(cut, list)
        if not valid:
            raise ValidationError("not an epoch record")
        return cls(number, previous, tuple(unhex_heads(cut)))


def epoch_actor(cut: Cut) -> bytes:
    """The actor of an epoch's first change: the same on every server."""
    seed = f"crdtmds-epoch\0{cut.previous_document}\0{cut.epoch}".encode()
    return hashlib.sha256(seed).digest()[:16]


def start_epoch(previous: Document, cut: Cut) -> Document:
    """The first document of the epoch `cut` starts: the content of `previous` at the cut,
    without its revisions, in one change whose bytes every server computes alike."""
    heads = list(cut.heads)
    at_heads = set(heads) == set(previous.get_heads())  # spares listing every change
    if not heads or not (at_heads or has_heads(previous, heads)):
        raise ValidationError("the previous document does not hold the cut")
    # Key by key, so that the revisions (most of a long history) are never read.
    content = {}
    for key in previous.keys(ROOT, heads):
        if key not in ("revisions", EPOCH_KEY, NEXT_EPOCH_KEY):
            value, obj = previous.get(ROOT, key, heads)
            content[key] = read(previous, obj, heads) if isinstance(value, ObjType) else value[1]
    doc = Document()
    doc.set_actor(epoch_actor(cut))
    with doc.transaction() as tx:
        for key in sorted(content):
            put_value(tx, ROOT, key, content[key])
        put_value(tx, ROOT, "revisions", [])
        # The map of carried heads is made here, by every server alike: made later by
        # two servers, one map would hide the other.
        put_value(tx, ROOT, EPOCH_KEY, {**cut.record(), CARRIED_KEY: {}})
    return doc


def cut_of(doc: Document) -> Cut | None:
    """The cut an epoch's document started from; None for a domain's first document."""
    obj = child_id(doc, ROOT, EPOCH_KEY)
    if obj is None:
        return None
    record = read(doc, obj)
    return Cut.from_record(record) if isinstance(record, Mapping) else None


def carried_heads(current: Document, previous: Document) -> list[bytes]:
    """Heads of `previous` whose changes are carried into `current` already, by whichever
    server carried them (those `previous` does not hold yet aside), and the cut."""
    obj = child_id(current, ROOT, EPOCH_KEY)
    record = read(current, obj) if obj is not None else None
    if not isinstance(record, Mapping):
        raise ValidationError("not an epoch's document")
    heads = set(Cut.from_record(record).heads)
    carried = record.get(CARRIED_KEY)
    for recorded in carried.values() if isinstance(carried, Mapping) else ():
        if isinstance(recorded, list):
            heads.update(h for h in unhex_heads(recorded) if has_heads(previous, [h]))
    return _newest(previous, heads)


def _newest(doc: Document, heads: set[bytes]) -> list[bytes]:
    """Of `heads`, those no other one descends from: the heads of what they cover."""
    if len(heads) < 2:
        return sorted(heads)
    kept = []
    for head in sorted(heads):
        # Changes the other heads do not cover: `head` is among them unless it is below.
        if head in {change.hash for change in doc.get_changes(sorted(heads - {head}))}:
            kept.append(head)
    return kept


def carry_late(
    previous: Document, carried: Sequence[bytes], current: Document, carrier: str = ""
) -> list[bytes]:
    """Write into `current` (one change) what `previous` gained since its heads `carried`
    (at first the cut), field by field, as a publish would; returns the heads carried now.
    With a `carrier` (a server name), the same change records them for `carried_heads`.

    Reads whole states at both heads: it runs only for publishes concurrent with a cut.
    """
    heads = previous.get_heads()
    if set(heads) == set(carried):
        return heads
    before, after = state_at(previous, carried), state_at(previous, heads)
    if before == after:
        return heads  # nothing but the proposal of the next epoch came after the cut
    now = DomainState.from_plain(read(current))
    carried_map = _carried_map(current) if carrier else None
    with current.transaction() as tx:
        if before.name != after.name:
            put_value(tx, ROOT, "name", after.name)
        _carry_objects(tx, before, after, now)
        _carry_layers(tx, before, after, now)
        _carry_revisions(tx, before, after, now)
        if carried_map is not None:
            put_value(tx, carried_map, carrier, hex_heads(heads))
    return heads


def _carried_map(current: Document) -> bytes:
    epoch = child_id(current, ROOT, EPOCH_KEY)
    carried = child_id(current, epoch, CARRIED_KEY) if epoch is not None else None
    if carried is None:
        raise ValidationError("not an epoch's document")
    return carried


def _carry_objects(tx: Any, before: DomainState, after: DomainState, now: DomainState) -> None:
    objects = child_id(tx, ROOT, "objects")
    if objects is None:
        raise ValidationError("the epoch's document has no object map")
    _carry_records(tx, objects, before.objects, after.objects, now.objects)


def _carry_records(
    tx: Any,
    parent: bytes,
    before: Mapping[str, dict[str, Any]],
    after: Mapping[str, dict[str, Any]],
    now: Mapping[str, dict[str, Any]],
) -> None:
    """Three-way, per field: what changed from `before` to `after`, onto `now`."""
    for uid in before.keys() - after.keys():
        if uid in now:
            tx.delete(parent, uid)
    for uid, record in after.items():
        old = before.get(uid)
        if old == record:
            continue
        current, obj = now.get(uid), child_id(tx, parent, uid)
        if current is None or obj is None:
            put_value(tx, parent, uid, record)
            continue
        # Only the fields the late publish changed; `now` keeps what the epoch changed.
        changed = {k: v for k, v in record.items() if old is None or old.get(k) != v}
        dropped = (old.keys() - record.keys()) if old is not None else set()
        target = {k: v for k, v in {**current, **changed}.items() if k not in dropped}
        put_changed_fields(tx, obj, current, target)


def _carry_layers(tx: Any, before: DomainState, after: DomainState, now: DomainState) -> None:
    layers = child_id(tx, ROOT, "layers")
    if layers is None:
        raise ValidationError("the epoch's document has no layers")
    for uid in before.layers.keys() - after.layers.keys():
        if uid in now.layers:
            tx.delete(layers, uid)
    for uid, layer in after.layers.items():
        old, current = before.layers.get(uid), now.layers.get(uid)
        layer_id = child_id(tx, layers, uid) if current is not None else None
        if layer_id is None:
            entries = {**layer.rules, **layer.sections}
            plain = {"uid": uid, "name": layer.name, "rules": entries, "order": layer.order}
            put_value(tx, layers, uid, plain)
            continue
        old = old or Layer(uid=uid, name=layer.name)
        if old.name != layer.name:
            put_value(tx, layer_id, "name", layer.name)
        rules_id = child_id(tx, layer_id, "rules")
        if rules_id is not None:
            _carry_records(tx, rules_id, {**old.rules, **old.sections},
                           {**layer.rules, **layer.sections},
                           {**current.rules, **current.sections})  # fmt: skip
        if old.order != layer.order:
            _carry_order(tx, layer_id, old.order, layer.order, current.order)


def _carry_order(
    tx: Any, layer_id: bytes, before: list[str], after: list[str], now: list[str]
) -> None:
    """Move, in the order list the epoch holds, the uids the late publish added, removed
    or moved, each to just after the uid it follows in `after`."""
    order_id = child_id(tx, layer_id, "order")
    if order_id is None:
        return
    kept = set()
    for block in difflib.SequenceMatcher(a=before, b=after, autojunk=False).get_matching_blocks():
        kept.update(after[block.b : block.b + block.size])
    placed = [uid for uid in after if uid not in kept]
    leaving = (set(before) - set(after)) | set(placed)
    order = list(now)
    for index in reversed(range(len(order))):
        if order[index] in leaving:
            tx.delete(order_id, index)
            del order[index]
    for uid in placed:
        position = after.index(uid)
        anchor = next((a for a in reversed(after[:position]) if a in order), None)
        index = order.index(anchor) + 1 if anchor is not None else 0
        insert_value(tx, order_id, index, uid)
        order.insert(index, uid)


def _carry_revisions(tx: Any, before: DomainState, after: DomainState, now: DomainState) -> None:
    revisions = child_id(tx, ROOT, "revisions")
    if revisions is None:
        raise ValidationError("the epoch's document has no revision list")
    known = {r.get("uid") for r in before.revisions} | {r.get("uid") for r in now.revisions}
    index = len(now.revisions)
    for entry in after.revisions:
        if entry.get("uid") not in known:
            insert_value(tx, revisions, index, entry)
            index += 1


def propose_next(doc: Document, epoch: int, previous_document: str, next_document: str) -> Cut:
    """Write into `doc` (one change, on its heads as they are) the cut at those heads and
    the id of the next epoch's document."""
    cut = Cut(epoch, previous_document, tuple(doc.get_heads()))
    with doc.transaction() as tx:
        put_value(tx, ROOT, NEXT_EPOCH_KEY, {**cut.record(), "document-id": next_document})
    return cut


def next_epoch(doc: Document) -> tuple[Cut, str] | None:
    """The cut proposed in `doc` and the next epoch's document id, if one was."""
    obj = child_id(doc, ROOT, NEXT_EPOCH_KEY)
    if obj is None:
        return None
    record = read(doc, obj)
    document_id = record.get("document-id") if isinstance(record, Mapping) else None
    if not isinstance(document_id, str):
        return None
    return Cut.from_record(record), document_id


def epoch_number(doc: Document) -> int:
    """The number of the epoch `doc` is the document of (0: the domain's first)."""
    cut = cut_of(doc)
    return cut.epoch if cut is not None else 0


class EpochChain:
    """The documents of one domain's epochs, oldest first: its revisions, and the domain
    as it was at any of them."""

    def __init__(self, documents: Sequence[Document]) -> None:
        if not documents:
            raise ValidationError("a domain has at least one document")
        self.documents = list(documents)

    def revisions(self) -> list[dict[str, Any]]:
        """Every revision entry, oldest first, each once (a late publish's entry stays in
        the previous epoch and may also be carried into the next)."""
        seen: set[Any] = set()
        listed = []
        for doc in self.documents:
            revisions = child_id(doc, ROOT, "revisions")
            for entry in read(doc, revisions) if revisions is not None else []:
                if isinstance(entry, dict) and entry.get("uid") not in seen:
                    seen.add(entry.get("uid"))
                    listed.append(entry)
        return listed

    def state_of(self, revision: Mapping[str, Any]) -> DomainState:
        """The domain as revision `revision` left it, read in the document of its heads."""
        heads = unhex_heads(revision.get("heads") or [])
        for doc in reversed(self.documents):
            if heads and has_heads(doc, heads):
                return state_at(doc, content_heads(doc, heads, revision.get("uid")))
        raise ValidationError(f"no epoch holds the heads of revision '{revision.get('uid')}'")
