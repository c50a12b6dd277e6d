"""The actors a server publishes as: a small pool, each actor handed to one publish at a
time, so that the documents already hold them.

Automerge numbers a document's operations by the position of their actor in the sorted
actor table: the first change of an actor that does not sort after every actor the
document holds rewrites every actor column, on the writer and on every server it
reaches (milliseconds at 10,000 rules). An actor per session did that for nearly every
new session and grew the table by one per session forever. A server's publishes instead
take an actor from its pool: the one it last used in that document when free (the
document holds it: nothing is renumbered), else another free one, else a new
clock-prefixed one (it sorts after every actor made before it). Publishes of one domain
are serialised, so the pool holds about one actor per concurrent publish: the table
grows with servers, not with sessions.

An actor some of whose sequence numbers went to a change that was then taken back (a
publish that could not be made durable) is retired, never handed out again by this
process: another change with those numbers would be a different change under the same
identity, and the taken-back one may have reached the change log after all (a peer's
changes stored as the document's changes since some heads). After a restart the
document itself says where each actor goes on from, so the retirement is stored only as
advice (with the next write of the pool).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from crdtmds.core.docdata import new_actor


class ActorPool:
    """The publishing actors of one server."""

    def __init__(self, actors: Iterable[bytes] = (), retired: Iterable[bytes] = ()) -> None:
        self._retired = set(retired)
        self._free = sorted(a for a in set(actors) if a not in self._retired)
        self._busy: set[bytes] = set()
        self._last: dict[str, bytes] = {}
        """Per document, the actor its last publish from this server wrote as."""
        self.changed = False
        """Whether the pool changed since `to_meta` was last called (persist it)."""

    def acquire(self, document_id: str) -> bytes:
        """An actor for one publish to the document, until `release` or `retire`."""
        actor = self._last.get(document_id)
        if actor is None or actor not in self._free:
            actor = self._free[-1] if self._free else None
        if actor is None:
            actor = new_actor()
            self.changed = True
        else:
            self._free.remove(actor)
        self._busy.add(actor)
        return actor

    def release(self, document_id: str, actor: bytes) -> None:
        """The publish is over, and the document holds its change."""
        self._busy.discard(actor)
        self._last[document_id] = actor
        self._free.append(actor)
        self._free.sort()

    def retire(self, actor: bytes) -> None:
        """The publish wrote a change that was taken back: never use `actor` again."""
        self._busy.discard(actor)
        self._retired.add(actor)
        for document_id in [d for d, a in self._last.items() if a == actor]:
            del self._last[document_id]
        self.changed = True

    @property
    def actors(self) -> list[bytes]:
        """Every actor in use or free (not the retired ones)."""
        return sorted({*self._free, *self._busy})

    def to_meta(self) -> dict[str, Any]:
        self.changed = False
        return {
            "actors": [actor.hex() for actor in self.actors],
            "retired": sorted(actor.hex() for actor in self._retired),
        }

    @classmethod
    def from_meta(cls, meta: Any) -> ActorPool:
        """The pool stored by `to_meta`; an empty one for anything else."""
        if not isinstance(meta, dict):
            return cls()
        try:
            actors = [bytes.fromhex(a) for a in meta.get("actors", [])]
            retired = [bytes.fromhex(a) for a in meta.get("retired", [])]
        except (TypeError, ValueError):
            return cls()
        return cls(actors, retired)
