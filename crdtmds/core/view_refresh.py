"""Bringing a domain's plain-data view up to date with the changes its document gained.

The operations of the changes a document gained name the Automerge objects they write
to. `ObjectIndex` knows which entity of a domain each object belongs to (an object
record, a rule, a layer's order, a revision...), so each operation maps to the entity
to re-read, at a cost that follows the size of the changes, not of the document.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from automerge.core import ROOT, Document, ObjType

from crdtmds.core.changes import (
    DEL,
    MAKE_ACTIONS,
    ROOT_ID,
    ObjectId,
    Op,
    decode_change,
    parse_object_id,
)
from crdtmds.core.docdata import child_id, read
from crdtmds.core.domain_state import DomainState, Layer, layer_from_plain, plain_text
from crdtmds.errors import CrdtmdsError, ValidationError

Entity = tuple[Any, ...]
"""Where an Automerge object sits in a domain, e.g. ("rule", layer uid, rule uid)."""
Touch = tuple[Any, ...]
"""What an operation makes stale, e.g. ("object", uid), ("order", layer uid)."""
FULL: Touch = ("full",)
"""The whole view: re-read everything."""
FOREIGN: Entity = ("foreign",)
"""A container that a domain read ignores (under an unknown root key, say)."""

_ROOT_CHILDREN: dict[str, Entity] = {
    "name": ("name",),
    "objects": ("objects",),
    "layers": ("layers",),
    "revisions": ("revisions",),
}


def child_entity(parent: Entity, key: str | ObjectId, element: ObjectId) -> Entity:
    """The entity of an object created under `key` of an object of entity `parent`.

    `element` is the list element the object is (its own id when inserted) if the parent
    is a list.
    """
    kind = parent[0]
    if kind == "root":
        return _ROOT_CHILDREN.get(key, FOREIGN) if isinstance(key, str) else FOREIGN
    if kind == "objects":
        return ("object", key) if isinstance(key, str) else FOREIGN
    if kind == "layers":
        return ("layer", key) if isinstance(key, str) else FOREIGN
    if kind == "layer":
        if key == "rules":
            return ("rules", parent[1])
        return ("order", parent[1]) if key == "order" else ("layer-part", parent[1])
    if kind == "rules":
        return ("rule", parent[1], key) if isinstance(key, str) else ("layer-part", parent[1])
    if kind == "revisions":
        return ("revision", element)
    return parent  # anything inside an entity belongs to it


def touch_of(entity: Entity, op: Op) -> Touch | None:
    """What `op`, acting on an object of `entity`, makes stale (None: nothing read)."""
    kind, key = entity[0], op.key
    if kind == "root":
        if key == "name":
            return ("name",)
        return FULL if key in _ROOT_CHILDREN else None
    if kind in ("objects", "layers"):
        if not isinstance(key, str):
            return FULL
        return ("object", key) if kind == "objects" else ("layer", key)
    if kind == "layer":
        return ("layer-name", entity[1]) if key in ("name", "uid") else ("layer", entity[1])
    if kind == "layer-part":
        return ("layer", entity[1])
    if kind == "rules":
        return ("rule", entity[1], key) if isinstance(key, str) else ("layer", entity[1])
    if kind == "revisions":
        if op.action == DEL:
            return ("revisions", 0)  # a deleted element's index is unknown
        return ("revision", op.id if op.insert else key)
    if kind == "foreign":
        return None
    return entity  # name, object, rule, order, revision: the entity itself


class ObjectIndex:
    """Automerge object id -> the domain entity holding it; plain data, no Document.

    An object is created once, at one place, so an entry never goes stale: the index stays
    valid for every copy of the document and grows from the operations it is shown.
    Objects made before the index first saw the document are found by scanning it: its
    containers, then down to records (object records, rules, revisions), then, only for
    objects nested inside records that no change showed, all the way down.
    """

    def __init__(self) -> None:
        self.entities: dict[ObjectId, Entity] = {ROOT_ID: ("root",)}
        self.seen_heads: list[bytes] | None = None
        """Heads of the document whose every change the index has been shown."""

    def learn(self, made: Mapping[ObjectId, Op]) -> None:
        """Record the objects that a batch of operations creates (`made_by(ops)`)."""
        for object_id in made:
            self.entity_of(object_id, made)

    def entity_of(self, object_id: ObjectId, made: Mapping[ObjectId, Op]) -> Entity | None:
        """The entity of `object_id`, known or created by the operations `made` (None:
        unknown)."""
        chain: list[Op] = []
        entity = self.entities.get(object_id)
        while entity is None and object_id in made:
            op = made[object_id]
            chain.append(op)
            object_id = op.obj
            entity = self.entities.get(object_id)
        if entity is None:
            return None
        for op in reversed(chain):
            element = op.key if isinstance(op.key, tuple) and not op.insert else op.id
            entity = child_entity(entity, op.key, element)
            self.entities[op.id] = entity
        return entity

    def scan(self, doc: Document, depth: str, heads: list[bytes] | None = None) -> None:
        """Register the objects the document holds (at `heads`, else now), down to `depth`
        (in SCAN_DEPTHS)."""
        self._walk(doc, ROOT, ("root",), SCAN_DEPTHS[depth], heads)

    def _walk(
        self,
        doc: Document,
        obj: bytes,
        entity: Entity,
        leaves: frozenset[str],
        heads: list[bytes] | None,
    ) -> None:
        for key, value, exid in _children(doc, obj, heads):
            if not isinstance(value, ObjType):
                continue
            object_id = parse_object_id(exid)
            child = child_entity(entity, object_id if key is None else key, object_id)
            self.entities[object_id] = child
            if child[0] not in leaves:
                self._walk(doc, exid, child, leaves, heads)


SCAN_DEPTHS: dict[str, frozenset[str]] = {
    # The containers of a domain, not their entries: a handful of calls.
    "skeleton": frozenset({"name", "foreign", "objects", "rules", "order", "revisions"}),
    # Down to object records, rules and revisions: one call per container of them.
    "records": frozenset({"name", "foreign", "object", "rule", "order", "revision"}),
    # Everything, nested lists of records included.
    "all": frozenset({"name", "foreign"}),
}
"""Entities whose contents a scan of each depth does not enter."""


def made_by(ops: Iterable[Op]) -> dict[ObjectId, Op]:
    """The operations among `ops` that create objects, by the id of what they create."""
    return {op.id: op for op in ops if op.action in MAKE_ACTIONS}


def _children(
    doc: Document, obj: bytes, heads: list[bytes] | None
) -> Iterator[tuple[str | None, Any, bytes]]:
    """(key, value, id) of each entry of a map; (None, value, id) of each list element."""
    values = doc.values(obj, heads)
    if doc.object_type(obj) != ObjType.Map:
        return ((None, value, exid) for value, exid in values)
    keys = doc.keys(obj, heads)
    if len(keys) != len(values):
        raise ValidationError("map keys and values disagree")
    return ((key, value, exid) for key, (value, exid) in zip(keys, values, strict=True))


class StateRefresher:
    """Brings a domain's view forward along the changes its document gained.

    Keep one per domain (it holds the `ObjectIndex`, never a Document): the first refresh
    that needs to place an object made before it scans the document once.
    """

    def __init__(self) -> None:
        self.index = ObjectIndex()
        self._new_changes: list[tuple[bytes, tuple[bytes, ...]]] = []

    def refresh(self, doc: Document, state: DomainState, since: list[bytes]) -> DomainState:
        """`state` (valid at heads `since`) brought to the document's current heads.

        Only entities that the new changes write to are re-read; anything unexpected means
        a full re-read, which is always right.
        """
        heads = doc.get_heads()
        try:
            touches = self._touches(doc, since)
        except (CrdtmdsError, ValueError):
            touches = None
        fresh = None if touches is None else _apply_touches(doc, state, touches)
        self.index.seen_heads = heads
        return DomainState.from_plain(read(doc)) if fresh is None else fresh

    def take_new_changes(self) -> list[tuple[bytes, tuple[bytes, ...]]]:
        """(hash, deps) of the changes the last refreshes read, once."""
        new, self._new_changes = self._new_changes, []
        return new

    def _touches(self, doc: Document, since: list[bytes]) -> set[Touch] | None:
        new = [decode_change(change.raw_bytes) for change in doc.get_changes(since)]
        self._new_changes.extend((change.hash, change.deps) for change in new)
        ops = [op for change in new for op in change.ops]
        made = self._made_before(doc, since, {change.hash for change in new})
        made.update(made_by(ops))
        # Cheapest first. Records as they were before the changes find those the changes
        # edit and then delete; only objects nested in records need the deep scan.
        scans = [("skeleton", None), ("records", None), ("records", since), ("all", None)]
        touches: set[Touch] = set()
        for op in ops:
            entity = self.index.entity_of(op.obj, made)
            while entity is None and scans:
                self.index.scan(doc, *scans.pop(0))
                entity = self.index.entity_of(op.obj, made)
            if entity is None:
                # Nowhere in the document now (a record edited, then deleted): what the
                # operation wrote is not read, and whatever removed it touched its parent.
                continue
            touch = touch_of(entity, op)
            if touch == FULL:
                return None
            if touch is not None:
                touches.add(touch)
        self.index.learn(made)
        return touches

    def _made_before(
        self, doc: Document, since: list[bytes], new: set[bytes]
    ) -> dict[ObjectId, Op]:
        """Objects made by changes the view holds but the index was not shown (a publish
        of this server, adopted without a refresh): later changes may write to them."""
        seen = self.index.seen_heads
        if seen is None or sorted(seen) == sorted(since):
            return {}
        try:
            missed = doc.get_changes(seen)
        except Exception:  # the binding raises plain Exception for unknown heads
            return {}
        made: dict[ObjectId, Op] = {}
        for change in missed:
            if change.hash not in new:
                made.update(made_by(decode_change(change.raw_bytes).ops))
        return made


def refresh_state(
    doc: Document,
    state: DomainState,
    since: list[bytes],
    refresher: StateRefresher | None = None,
) -> DomainState:
    """`state` (valid at heads `since`) brought to the document's current heads; see
    `StateRefresher.refresh`. Pass the domain's refresher to reuse what it knows."""
    return (refresher or StateRefresher()).refresh(doc, state, since)


def _apply_touches(doc: Document, state: DomainState, touches: set[Touch]) -> DomainState | None:
    fresh = _copy_for(state, {t[1] for t in touches if t[0] in ("order", "layer")})
    reader = _EntityReader(doc)
    revisions = [t for t in touches if t[0] in ("revision", "revisions")]
    if revisions and not reader.reload_revisions(fresh, revisions):
        return None
    for touch in sorted(touches - set(revisions), key=_touch_rank):
        if not reader.apply(fresh, touch):
            return None
    return fresh


def _copy_for(state: DomainState, stale_orders: set[str]) -> DomainState:
    """A copy of `state` to refresh; layers whose order is about to be re-read are copied
    without computing their visible order first."""
    fresh = DomainState(
        name=state.name,
        objects=dict(state.objects),
        revisions=list(state.revisions),
        names=dict(state.names),
    )
    for uid, layer in state.layers.items():
        if uid in stale_orders:
            fresh.layers[uid] = Layer(
                uid, layer.name, dict(layer.rules), list(layer.order),
                sections=dict(layer.sections),
            )  # fmt: skip
        else:
            fresh.layers[uid] = layer.copy()
    return fresh


def _touch_rank(touch: Touch) -> tuple[int, str]:
    # Whole layers first, so that their rules and order are not re-read twice.
    return (0 if touch[0] == "layer" else 1, repr(touch))


class _EntityReader:
    """Re-reads single entities of a domain document into a DomainState."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.objects = child_id(doc, ROOT, "objects")
        self.layers = child_id(doc, ROOT, "layers")
        self.reloaded_layers: set[str] = set()

    def apply(self, state: DomainState, touch: Touch) -> bool:
        kind = touch[0]
        if self.objects is None or self.layers is None:
            return False
        if kind == "name":
            state.name = self._text_at(ROOT, "name")
        elif kind == "object":
            self._reload_object(state, touch[1])
        elif touch[1] in self.reloaded_layers:
            return True
        elif kind == "layer":
            self._reload_layer(state, touch[1])
            self.reloaded_layers.add(touch[1])
        else:
            self._reload_layer_part(state, kind, touch)
        return True

    def _text_at(self, obj: bytes, key: str) -> str:
        got = self.doc.get(obj, key)
        scalar = got[0] if got else None
        return plain_text(scalar[1]) if isinstance(scalar, tuple) else ""

    def reload_revisions(self, state: DomainState, touches: list[Touch]) -> bool:
        """Re-read the revisions from the first one `touches` names to the end.

        Revisions are only ever inserted, so entries before the first touched one are
        unchanged; re-reading from there keeps a long history cheap. The touched elements
        are found by walking back from the end of the list.
        """
        revisions = child_id(self.doc, ROOT, "revisions")
        if revisions is None:
            return False
        length = self.doc.length(revisions)
        elements = {t[1] for t in touches if t[0] == "revision"}
        start = (
            0 if ("revisions", 0) in touches else self._first_index_of(revisions, length, elements)
        )
        if start > len(state.revisions):
            return False
        fresh = state.revisions[:start]
        for index in range(start, length):
            entry = child_id(self.doc, revisions, index)
            fresh.append(read(self.doc, entry) if entry else {})
        state.revisions = [r if isinstance(r, dict) else {} for r in fresh]
        return True

    def _first_index_of(self, revisions: bytes, length: int, elements: set[ObjectId]) -> int:
        """The lowest index holding one of `elements` (0 unless all of them are found)."""
        index = length
        while elements and index > 0:
            index -= 1
            got = self.doc.get(revisions, index)
            if got is not None:
                elements.discard(parse_object_id(got[1]))
        return index if not elements else 0

    def _reload_object(self, state: DomainState, uid: str) -> None:
        obj = child_id(self.doc, self.objects, uid)
        if obj is None:
            state.remove_object(uid)
        else:
            state.put_object(uid, read(self.doc, obj))

    def _reload_layer(self, state: DomainState, uid: str) -> None:
        layer = child_id(self.doc, self.layers, uid)
        if layer is None:
            state.layers.pop(uid, None)
        else:
            state.layers[uid] = layer_from_plain(uid, read(self.doc, layer))

    def _reload_layer_part(self, state: DomainState, kind: str, touch: Touch) -> None:
        layer_id = child_id(self.doc, self.layers, touch[1])
        current = state.layers.get(touch[1])
        if layer_id is None or current is None:
            self._reload_layer(state, touch[1])
            self.reloaded_layers.add(touch[1])
            return
        if kind == "layer-name":
            current.name = self._text_at(layer_id, "name")
        elif kind == "order":
            current.set_order(self._order_at(layer_id))
        elif kind == "rule":
            rules_id = child_id(self.doc, layer_id, "rules")
            rule_id = child_id(self.doc, rules_id, touch[2]) if rules_id else None
            current.set_rule_record(touch[2], read(self.doc, rule_id) if rule_id else None)

    def _order_at(self, layer_id: bytes) -> list[str]:
        # The values alone, not a read of the whole list: several times faster.
        order_id = child_id(self.doc, layer_id, "order")
        if order_id is None or self.doc.object_type(order_id) != ObjType.List:
            return []
        return [
            value[1]
            for value, _ in self.doc.values(order_id)
            if isinstance(value, tuple) and isinstance(value[1], str)
        ]
