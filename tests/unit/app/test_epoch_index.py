"""The links between a domain's epoch documents: the newest epoch is found, and loaded,
without loading the earlier ones once the links are known (from storage or a load)."""

from __future__ import annotations

from crdtmds.app.epoch_index import EpochIndex
from crdtmds.core.domain import Domain
from crdtmds.core.epochs import propose_next, start_epoch
from crdtmds.core.session import Session


def _chain() -> dict[str, Domain]:
    """A domain of three epochs: d0 (its first document), d1 and d2."""
    first = Domain.create("acme", "d0")
    documents = {"d0": first}
    for number, (previous, following) in enumerate((("d0", "d1"), ("d1", "d2")), start=1):
        session = Session.open(documents[previous], admin="admin", server="a")
        session.add_object("host", {"name": f"h{number}", "ipv4-address": "10.0.0.1"})
        session.publish_in_memory()
        cut = propose_next(documents[previous].doc, number, previous, following)
        documents[following] = Domain(following, start_epoch(documents[previous].doc, cut))
    return documents


def _index(stored: dict[str, Domain]) -> tuple[EpochIndex, list[str]]:
    loads: list[str] = []

    def load(document_id: str) -> Domain | None:
        loads.append(document_id)
        return stored.get(document_id)

    return EpochIndex(load, stored.__contains__), loads


def test_with_the_stored_links_only_the_newest_epoch_is_loaded() -> None:
    stored = _chain()
    index, loads = _index(stored)
    index.from_meta({"d0": "d1", "d1": "d2"})
    newest = index.current(stored["d0"])
    assert newest.document_id == "d2" and loads == ["d2"]
    assert newest.domain_id == "d0"
    assert {o["name"] for o in newest.state.objects.values()} == {"h1", "h2"}


def test_links_are_learnt_from_the_documents_and_kept_for_the_next_start() -> None:
    stored = _chain()
    index, loads = _index(stored)
    assert index.current(stored["d0"]).document_id == "d2"
    assert loads == ["d1", "d2"]  # followed record by record, once
    assert index.changed
    kept = index.to_meta()
    assert kept == {"d0": "d1", "d1": "d2"} and not index.changed
    again, _ = _index(stored)
    again.from_meta(kept)
    assert again.chain_ids("d0") == ["d0", "d1", "d2"]
    assert again.domain_id("d2") == "d0"


def test_an_epoch_loaded_on_its_own_knows_its_domain() -> None:
    stored = _chain()
    index, _ = _index(stored)
    index.learn(stored["d1"])  # its cut names d0, its next-epoch record d2
    index.learn(stored["d2"])
    assert stored["d2"].domain_id == "d0"
    assert index.held_chain_ids("d0") == ["d0", "d1", "d2"]
    del stored["d2"]  # not held here (yet): the newest held is d1
    assert index.held_chain_ids("d0") == ["d0", "d1"]
    assert index.current(stored["d0"]).document_id == "d1"
