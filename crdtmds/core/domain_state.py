"""The plain-data view of a domain: its objects, access layers (rules and their order)
and revisions, as Python dicts and lists.

Every read of a domain is served from this view, never from the Automerge document:
reading a whole document is slow (tens of microseconds per field). `Domain` keeps one
up to date (see `crdtmds.core.view_refresh`); a session keeps its own for its draft.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from crdtmds.core import model
from crdtmds.errors import InvalidParameter, ObjectNotFound


@dataclass(slots=True)
class Layer:
    """An access layer: rules by uid, sections by uid, and their stored order.

    The order list holds rule uids and section uids: a section is a marker, and the rules
    after it up to the next marker are its rules (Check Point's model). Section records
    are stored in the layer's `rules` map with `"type": "access-section"` (a rule record
    has no `type`), so that an old document, which has no sections, reads as before and
    no container is ever created concurrently; they are split out here on reading.

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
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Section records by uid (see `crdtmds.core.sections`)."""

    def copy(self) -> Layer:
        # Computed here, once for the original and every copy of it, rather than in
        # each copy (every session starts from a copy of the live layers).
        visible = self.ordered_uids()
        order = list(self.order)
        visible = order if visible is self.order else visible
        return Layer(
            self.uid, self.name, dict(self.rules), order, visible, sections=dict(self.sections)
        )

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

    def indices_of(self, uid: str) -> list[int]:
        """Where `uid` stands in the stored order (more than once after concurrent moves)."""
        if self._is_clean():  # every rule once: found in C
            return [self.order.index(uid)] if uid in self.rules else []
        return [i for i, u in enumerate(self.order) if u == uid]

    def remove_rule(self, uid: str) -> None:
        if self._is_clean() and uid in self.rules:
            del self.rules[uid]
            self.order.remove(uid)
            return
        self.rules.pop(uid, None)
        self.order[:] = [u for u in self.order if u != uid]
        self._keep_if_clean()

    def move_rule(self, uid: str, index: int) -> None:
        """Rule `uid` to `index` of the stored order without it (repeats dropped)."""
        if self._is_clean() and uid in self.rules:
            self.order.remove(uid)
        else:
            self.order[:] = [u for u in self.order if u != uid]
        self.order.insert(index, uid)
        self._keep_if_clean()

    def _is_clean(self) -> bool:
        """Whether the stored order is known to hold every rule once and nothing else."""
        return self._visible is self.order

    def set_order(self, order: list[str]) -> None:
        self.order = order
        self._visible = None

    def set_rule_record(self, uid: str, rule: dict[str, Any] | None) -> None:
        """A rule or section as re-read from the document (None: gone), order unknown to
        be clean."""
        self.rules.pop(uid, None)
        self.sections.pop(uid, None)
        if is_section_record(rule):
            self.sections[uid] = rule
        elif rule is not None:
            self.rules[uid] = rule
        self._visible = None

    def put_section(self, section: dict[str, Any]) -> None:
        self.sections[section["uid"]] = section

    def remove_section(self, uid: str) -> None:
        self.sections.pop(uid, None)
        self.order[:] = [u for u in self.order if u != uid]
        self._visible = None

    def insert_marker(self, uid: str, index: int) -> None:
        """A section's marker at `index` of the stored order."""
        self.order.insert(index, uid)
        self._visible = None

    def entries(self) -> list[str]:
        """Rule and section uids in the order every reader sees them: the first occurrence
        of each existing one; rules missing from the list last (as `ordered_uids`), then
        sections missing from it."""
        seen: set[str] = set()
        result: list[str] = []
        for uid in self.order:
            if (uid in self.rules or uid in self.sections) and uid not in seen:
                seen.add(uid)
                result.append(uid)
        result.extend(sorted(uid for uid in self.rules if uid not in seen))
        result.extend(sorted(uid for uid in self.sections if uid not in seen))
        return result

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
    _shared: set[str] = field(default_factory=set, repr=False, compare=False)
    """Parts held in common with a copy, to be copied before they are written: "objects"
    (with `names`), "revisions", and layer uids (see `copy`)."""

    @classmethod
    def from_plain(cls, root: Mapping[str, Any]) -> DomainState:
        # Shapes crdtmds never writes (a peer's bug) read as empty rather than failing.
        state = cls(name=plain_text(root.get("name")))
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
        """A copy that shares every part with this state until one of the two writes it
        (copy on write): a draft's first edit after a publish copies the one layer or
        the object map it edits, never a whole 10,000-rule view. Write a shared state
        only through the methods below and the layer `writable_layer` returns."""
        shared = {"objects", "revisions", *self.layers}
        self._shared |= shared
        return DomainState(
            name=self.name,
            objects=self.objects,
            layers=dict(self.layers),
            revisions=self.revisions,
            names=self.names,
            _shared=set(shared),
        )

    def writable_layer(self, layer: Layer) -> Layer:
        """`layer` of this state, made this state's own first if it is shared."""
        if layer.uid in self._shared:
            self._shared.discard(layer.uid)
            layer = self.layers[layer.uid] = layer.copy()
        return layer

    def append_revision(self, revision: dict[str, Any]) -> None:
        if "revisions" in self._shared:
            self._shared.discard("revisions")
            self.revisions = list(self.revisions)
        self.revisions.append(revision)

    def _own_objects(self) -> None:
        if "objects" in self._shared:
            self._shared.discard("objects")
            self.objects = dict(self.objects)
            self.names = dict(self.names)

    # -- maintenance of the name index

    def put_object(self, uid: str, record: dict[str, Any]) -> None:
        self._own_objects()
        old = self.objects.get(uid)
        if old is not None:
            self._unindex(uid, old.get("name"))
        self.objects[uid] = record
        name = record.get("name")
        if isinstance(name, str):
            self.names[name] = tuple(sorted((*self.names.get(name, ()), uid)))

    def remove_object(self, uid: str) -> None:
        self._own_objects()
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
        else:
            found = by_uid_or_name(layer.rules, ref)
            if found is not None:
                return found
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


SECTION_TYPE = "access-section"


def is_section_record(record: Any) -> bool:
    return isinstance(record, dict) and record.get("type") == SECTION_TYPE


def layer_from_plain(uid: str, plain: Mapping[str, Any]) -> Layer:
    entries = {k: v for k, v in _map(plain.get("rules")).items() if isinstance(v, dict)}
    return Layer(
        uid=uid,
        name=plain_text(plain.get("name")),
        rules={k: v for k, v in entries.items() if not is_section_record(v)},
        order=_order_from_plain(plain.get("order")),
        sections={k: v for k, v in entries.items() if is_section_record(v)},
    )


def _order_from_plain(plain: Any) -> list[str]:
    return [u for u in _list(plain) if isinstance(u, str)]


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def plain_text(value: Any) -> str:
    """A string read from a document, or "" where something else is stored there."""
    return value if isinstance(value, str) else ""


def by_uid_or_name(records: Mapping[str, dict[str, Any]], ref: Any) -> dict[str, Any] | None:
    """The record of uid `ref`, else the one named `ref` (the lowest uid if several share
    the name, after concurrent creates); None when there is none."""
    if not isinstance(ref, str) or not ref:
        return None
    if ref in records:
        return records[ref]
    named = sorted(uid for uid, record in records.items() if record.get("name") == ref)
    return records[named[0]] if named else None
