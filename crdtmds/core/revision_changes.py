"""Which change wrote each revision entry of a domain document.

The content of a revision is read at the change that wrote its entry
(`crdtmds.core.revert.content_heads`). Automerge can find that change only by listing
every change after the revision's heads, and it re-encodes each one from the operations
while holding the GIL: 0.1 to 0.2 s when a 20,000-object change follows, during which
the server answers nothing. So a domain remembers, for the changes it writes and
receives, the heads each was written on, and the change of each revision it learns:
a revision published here is stored with its change (`revision_changes` table), and
the rest are found among the children of the revision's heads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class RevisionChanges:
    """Known changes of revision entries, by revision uid, and the changes seen written
    on each head (the candidates for a revision written on heads that include it)."""

    def __init__(self) -> None:
        self._by_uid: dict[str, bytes] = {}
        self._children: dict[bytes, list[tuple[bytes, frozenset[bytes]]]] = {}
        self.stored_read = False
        """Whether the changes stored with this server's publishes were taken in."""

    def note_change(self, change: bytes, deps: Iterable[bytes]) -> None:
        """A change of the document, written on `deps` (which may also name an earlier
        change of its actor that the heads already reached: Automerge adds it)."""
        deps = frozenset(deps)
        for dep in deps:
            children = self._children.setdefault(dep, [])
            if all(known != change for known, _ in children):
                children.append((change, deps))

    def note_revision(self, uid: str, change: bytes) -> None:
        """The change that wrote the revision entry `uid`."""
        self._by_uid[uid] = change

    def note_stored(self, changes: Mapping[str, bytes]) -> None:
        """The changes stored with this server's publishes, by revision uid."""
        for uid, change in changes.items():
            self._by_uid.setdefault(uid, change)
        self.stored_read = True

    def known(self, uid: str) -> bytes | None:
        return self._by_uid.get(uid)

    def candidates(self, uid: str, heads: Iterable[bytes]) -> list[bytes]:
        """Changes that may have written the entry `uid` on `heads`: the one known, then
        those seen written on `heads`, oldest first. Each is to be checked."""
        heads = frozenset(heads)
        found = self._by_uid.get(uid)
        first = next(iter(heads), None)
        written_on = self._children.get(first, []) if first is not None else []
        children = [change for change, deps in written_on if heads <= deps]
        return [found, *children] if found is not None else children
