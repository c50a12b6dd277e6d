"""A domain: the live Automerge document of one customer's or site's policy.

`Domain` owns the live document; `DomainState` is a plain-data view of it (objects,
layers with their rules and order, revisions) that every read is served from. Reading
a whole Automerge document is slow (tens of microseconds per field), so the view is
kept, not rebuilt: a publish from this server hands over the session's view, and changes
merged from peers are applied by re-reading only the entities their patches touch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from automerge.core import ROOT, Document, ObjType

from crdtmds.core import model, names
from crdtmds.core.changes import (
    DEL,
    MAKE_ACTIONS,
    ROOT_ID,
    ObjectId,
    Op,
    decode_change,
    parse_object_id,
)
from crdtmds.core.docdata import child_id, has_heads, put_value, read
from crdtmds.errors import CrdtmdsError, InvalidParameter, ObjectNotFound, ValidationError

# ---------------------------------------------------------------- plain-data view


@dataclass(slots=True)
class Layer:
    """An access layer: rules by uid and their stored order.

    Change `rules` and `order` only through the methods below: they keep the visible
    order cached, so that numbering a rule in a layer of 10,000 rules does not rescan it.
    """

    uid: str
    name: str
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    """The raw order list as stored: may hold repeats after concurrent moves."""
    _visible: list[str] | None = field(default=None, repr=False, compare=False)
    """`ordered_uids()` once computed; the very `order` list while that is clean (every
    rule once, nothing else), as session edits keep it."""

    def copy(self) -> Layer:
        # Computed here, once for the original and every copy of it, rather than in
        # each copy (every session starts from a copy of the live layers).
        visible = self.ordered_uids()
        order = list(self.order)
        visible = order if visible is self.order else visible
        return Layer(self.uid, self.name, dict(self.rules), order, visible)

    def ordered_uids(self) -> list[str]:
        """Rule uids in the order every reader sees them. Do not modify the result."""
        if self._visible is None:
            visible = model.effective_order(self.order, self.rules)
            self._visible = self.order if visible == self.order else visible
        return self._visible

    def number_of(self, uid: str) -> int:
        """The 1-based rule number of rule `uid`."""
        return self.ordered_uids().index(uid) + 1

    def insert_rule(self, rule: dict[str, Any], index: int) -> None:
        """A new rule at `index` of the stored order."""
        self.rules[rule["uid"]] = rule
        self.order.insert(index, rule["uid"])
        self._keep_if_clean()

    def replace_rule(self, rule: dict[str, Any]) -> None:
        """New fields for an existing rule; the order is untouched."""
        if rule["uid"] not in self.rules:
            self._visible = None
        self.rules[rule["uid"]] = rule

    def remove_rule(self, uid: str) -> None:
        self.rules.pop(uid, None)
        self.order[:] = [u for u in self.order if u != uid]
        self._keep_if_clean()

    def move_rule(self, uid: str, index: int) -> None:
        """Rule `uid` to `index` of the stored order without it (repeats dropped)."""
        self.order[:] = [u for u in self.order if u != uid]
        self.order.insert(index, uid)
        self._keep_if_clean()

    def set_order(self, order: list[str]) -> None:
        self.order = order
        self._visible = None

    def set_rule_record(self, uid: str, rule: dict[str, Any] | None) -> None:
        """A rule as re-read from the document (None: gone), order unknown to be clean."""
        if rule is None:
            self.rules.pop(uid, None)
        else:
            self.rules[uid] = rule
        self._visible = None

    def _keep_if_clean(self) -> None:
        # Inserting a new uid, or taking every occurrence of one out, keeps a clean order
        # clean; anything else is recomputed on the next read.
        if self._visible is not self.order:
            self._visible = None


@dataclass(slots=True)
class DomainState:
    """Plain data of a domain at some heads. Records are never mutated in place, so a
    copy shares them safely with its original."""

    name: str
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    layers: dict[str, Layer] = field(default_factory=dict)
    revisions: list[dict[str, Any]] = field(default_factory=list)
    names: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Object name -> uids holding it (more than one only after concurrent creates)."""

    @classmethod
    def from_plain(cls, root: Mapping[str, Any]) -> DomainState:
        # Shapes crdtmds never writes (a peer's bug) read as empty rather than failing.
        state = cls(name=_text(root.get("name")))
        for uid, record in _map(root.get("objects")).items():
            if isinstance(record, dict):
                state.put_object(uid, record)
        for uid, layer in _map(root.get("layers")).items():
            if isinstance(layer, dict):
                state.layers[uid] = layer_from_plain(uid, layer)
        # Non-map entries stay as placeholders so that list indices keep matching the
        # document's.
        state.revisions = [r if isinstance(r, dict) else {} for r in _list(root.get("revisions"))]
        return state

    def copy(self) -> DomainState:
        return DomainState(
            name=self.name,
            objects=dict(self.objects),
            layers={uid: layer.copy() for uid, layer in self.layers.items()},
            revisions=list(self.revisions),
            names=dict(self.names),
        )

    # -- maintenance of the name index

    def put_object(self, uid: str, record: dict[str, Any]) -> None:
        old = self.objects.get(uid)
        if old is not None:
            self._unindex(uid, old.get("name"))
        self.objects[uid] = record
        name = record.get("name")
        if isinstance(name, str):
            self.names[name] = tuple(sorted((*self.names.get(name, ()), uid)))

    def remove_object(self, uid: str) -> None:
        old = self.objects.pop(uid, None)
        if old is not None:
            self._unindex(uid, old.get("name"))

    def _unindex(self, uid: str, name: Any) -> None:
        uids = tuple(u for u in self.names.get(name, ()) if u != uid)
        if uids:
            self.names[name] = uids
        else:
            self.names.pop(name, None)

    # -- reads

    def find_object(self, ref: str) -> dict[str, Any] | None:
        """An object by uid or name (the lowest uid if concurrent creates share a name)."""
        record = self.objects.get(ref)
        if record is not None:
            return record
        uids = self.names.get(ref)
        return self.objects[uids[0]] if uids else None

    def get_object(self, ref: Any, obj_type: str | None = None) -> dict[str, Any]:
        if not isinstance(ref, str) or not ref:
            raise InvalidParameter("an object is named by 'uid' or 'name'")
        record = self.find_object(ref)
        if record is None or (obj_type is not None and record.get("type") != obj_type):
            kind = obj_type or "object"
            raise ObjectNotFound(f"{kind} '{ref}' not found", details={"reference": ref})
        return record

    def objects_of_type(self, obj_type: str) -> list[dict[str, Any]]:
        found = [r for r in self.objects.values() if r.get("type") == obj_type]
        return sorted(found, key=lambda r: (str(r.get("name", "")), r["uid"]))

    def get_layer(self, ref: Any = None) -> Layer:
        """A layer by uid or name; the default layer when `ref` is None."""
        if ref is None:
            ref = model.DEFAULT_LAYER_NAME
        if not isinstance(ref, str):
            raise InvalidParameter("'layer' must be a layer name or uid")
        if ref in self.layers:
            return self.layers[ref]
        matches = sorted(uid for uid, layer in self.layers.items() if layer.name == ref)
        if not matches:
            raise ObjectNotFound(f"access layer '{ref}' not found", details={"reference": ref})
        return self.layers[matches[0]]

    def rulebase(self, layer_ref: Any = None) -> list[dict[str, Any]]:
        """Rules of a layer in order, each with its 1-based `rule-number`."""
        layer = self.get_layer(layer_ref)
        return [
            {**layer.rules[uid], "type": "access-rule", "rule-number": number}
            for number, uid in enumerate(layer.ordered_uids(), start=1)
        ]

    def get_rule(self, layer: Layer, ref: Any) -> dict[str, Any]:
        """A rule of `layer` by uid, name or rule number."""
        if isinstance(ref, int) and not isinstance(ref, bool):
            ordered = layer.ordered_uids()
            if 1 <= ref <= len(ordered):
                return layer.rules[ordered[ref - 1]]
        elif isinstance(ref, str) and ref:
            if ref in layer.rules:
                return layer.rules[ref]
            named = sorted(uid for uid, rule in layer.rules.items() if rule.get("name") == ref)
            if named:
                return layer.rules[named[0]]
        raise ObjectNotFound(
            f"access rule '{ref}' not found in layer '{layer.name}'",
            details={"reference": ref, "layer": layer.name},
        )

    def where_used(self, uid: str) -> list[dict[str, Any]]:
        """Every group and rule that refers to object `uid`."""
        uses: list[dict[str, Any]] = [
            {"type": "group", "uid": g["uid"], "name": g.get("name")}
            for g in self.objects.values()
            if g.get("type") == "group" and uid in g.get("members", ())
        ]
        for layer in self.layers.values():
            for number, rule_uid in enumerate(layer.ordered_uids(), start=1):
                rule = layer.rules[rule_uid]
                for column in model.RULE_REFERENCE_FIELDS:
                    if uid in rule.get(column, ()):
                        uses.append(
                            {
                                "type": "access-rule",
                                "uid": rule_uid,
                                "name": rule.get("name", ""),
                                "layer": layer.name,
                                "rule-number": number,
                                "column": column,
                            }
                        )
        return uses

    def revision(self, ref: str) -> dict[str, Any]:
        for entry in self.revisions:
            if entry.get("uid") == ref:
                return entry
        raise ObjectNotFound(f"revision '{ref}' not found", details={"reference": ref})

    def verify(self) -> list[dict[str, Any]]:
        """What concurrent publishes from different servers can leave behind.

        Duplicate object or layer names, references (group members, rule columns) to
        objects that a concurrent publish deleted, and groups that concurrent edits made
        contain themselves. An empty list means sound.
        """
        problems: list[dict[str, Any]] = [
            {"type": "duplicate-name", "name": name, "uids": list(uids)}
            for name, uids in sorted(self.names.items())
            if len(uids) > 1
        ]
        layer_names: dict[str, list[str]] = {}
        for layer in self.layers.values():
            layer_names.setdefault(layer.name, []).append(layer.uid)
        problems.extend(
            {"type": "duplicate-layer-name", "name": name, "uids": sorted(uids)}
            for name, uids in sorted(layer_names.items())
            if len(uids) > 1
        )
        problems.extend(self._dangling_references())
        problems.extend(self._group_cycles())
        return problems

    def _group_cycles(self) -> Iterator[dict[str, Any]]:
        groups = {
            uid: list(record.get("members", ()))
            for uid, record in self.objects.items()
            if record.get("type") == "group"
        }
        reachable = {uid: _groups_reachable(uid, groups) for uid in groups}
        reported: set[frozenset[str]] = set()
        for uid in sorted(groups):
            if uid not in reachable[uid]:
                continue
            cycle = frozenset(other for other in reachable[uid] if uid in reachable[other])
            if cycle not in reported:
                reported.add(cycle)
                yield {"type": "group-cycle", "uids": sorted(cycle)}

    def _dangling_references(self) -> Iterator[dict[str, Any]]:
        for group in self.objects.values():
            for member in group.get("members", ()) if group.get("type") == "group" else ():
                if member not in self.objects:
                    yield {
                        "type": "dangling-reference",
                        "holder": {"type": "group", "uid": group["uid"], "name": group["name"]},
                        "field": "members",
                        "missing": member,
                    }
        for layer in self.layers.values():
            for rule_uid in layer.ordered_uids():
                rule = layer.rules[rule_uid]
                for column in model.RULE_REFERENCE_FIELDS:
                    for ref in rule.get(column, ()):
                        if ref != model.ANY_UID and ref not in self.objects:
                            yield {
                                "type": "dangling-reference",
                                "holder": {
                                    "type": "access-rule",
                                    "uid": rule_uid,
                                    "layer": layer.name,
                                },
                                "field": column,
                                "missing": ref,
                            }


def _groups_reachable(start: str, groups: Mapping[str, list[str]]) -> set[str]:
    """Groups that group `start` contains, directly or through other groups."""
    seen: set[str] = set()
    pending = list(groups[start])
    while pending:
        uid = pending.pop()
        if uid in groups and uid not in seen:
            seen.add(uid)
            pending.extend(groups[uid])
    return seen


def layer_from_plain(uid: str, plain: Mapping[str, Any]) -> Layer:
    rules = {k: v for k, v in _map(plain.get("rules")).items() if isinstance(v, dict)}
    return Layer(
        uid=uid,
        name=_text(plain.get("name")),
        rules=rules,
        order=_order_from_plain(plain.get("order")),
    )


def _order_from_plain(plain: Any) -> list[str]:
    return [u for u in _list(plain) if isinstance(u, str)]


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


# ---------------------------------------------------------------- the live document


class Domain:
    """The live document of one domain and its plain-data view."""

    def __init__(self, document_id: str, doc: Document) -> None:
        self.document_id = document_id
        self.doc = doc
        self._state: DomainState | None = None
        self._state_heads: list[bytes] = []
        self._refresher = StateRefresher()

    @classmethod
    def create(cls, name: str, document_id: str) -> Domain:
        """A new domain with the default access layer, in one change."""
        name = names.check_name(name, "name")
        doc = Document()
        layer_uid = model.new_uid()
        with doc.transaction() as tx:
            put_value(tx, ROOT, "name", name)
            put_value(tx, ROOT, "objects", {})
            put_value(
                tx,
                ROOT,
                "layers",
                {
                    layer_uid: {
                        "uid": layer_uid,
                        "name": model.DEFAULT_LAYER_NAME,
                        "rules": {},
                        "order": [],
                    }
                },
            )
            put_value(tx, ROOT, "revisions", [])
        return cls(document_id, doc)

    @property
    def name(self) -> str:
        return self.state.name

    def heads(self) -> list[bytes]:
        return self.doc.get_heads()

    @property
    def state(self) -> DomainState:
        """The plain-data view at the current heads, brought up to date on demand."""
        heads = self.doc.get_heads()
        if self._state is None:
            self._state = DomainState.from_plain(read(self.doc))
            self._refresher.index.seen_heads = heads
        elif heads != self._state_heads:
            self._state = self._refresher.refresh(self.doc, self._state, self._state_heads)
        self._state_heads = heads
        return self._state

    def adopt_document(self, doc: Document, state: DomainState) -> None:
        """Take `doc`, this document plus changes nobody raced, as the live document. It
        takes the live document's actor: the session that wrote it goes on writing as its
        own actor elsewhere, and two documents must never write as one actor."""
        doc.set_actor(self.doc.get_actor())
        self.doc = doc
        self.adopt_state(state)

    def adopt_state(self, state: DomainState) -> None:
        """Take `state` as the view at the current heads (a publish nobody raced)."""
        self._state = state
        self._state_heads = self.doc.get_heads()

    def state_at(self, heads: Iterable[bytes]) -> DomainState:
        """The domain as it was at `heads` (a past revision), read in place."""
        heads = list(heads)
        if not has_heads(self.doc, heads):
            raise ValidationError("unknown heads: the document holds no such changes")
        return DomainState.from_plain(read(self.doc, ROOT, heads))

    def is_domain_document(self) -> bool:
        """Whether the document has the shape of a domain (it may be a fresh, empty copy
        still waiting for its first sync)."""
        return child_id(self.doc, ROOT, "objects") is not None


# ---------------------------------------------------------------- refreshing the view
#
# The operations of the changes a document gained name the Automerge objects they write
# to. `ObjectIndex` knows which entity of a domain each object belongs to (an object
# record, a rule, a layer's order, a revision...), so each operation maps to the entity
# to re-read, at a cost that follows the size of the changes, not of the document.

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

    def _touches(self, doc: Document, since: list[bytes]) -> set[Touch] | None:
        new = [decode_change(change.raw_bytes) for change in doc.get_changes(since)]
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
            fresh.layers[uid] = Layer(uid, layer.name, dict(layer.rules), list(layer.order))
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
        return _text(scalar[1]) if isinstance(scalar, tuple) else ""

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
