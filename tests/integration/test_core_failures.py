"""A panic inside the Automerge core fails the request that met it, not the connection
or the server: the reply is `generic_internal_error` naming the command and the domain."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from crdtmds.core.docdata import ROOT, child_id, fork_with_actor, insert_value, new_actor, put_value
from crdtmds.core.domain import Domain
from crdtmds.core.session import Session
from crdtmds.errors import is_core_error, is_core_panic
from tests.helpers.api_doors import connect, host


def genuine_panic() -> BaseException:
    """A real `PanicException` from the core: `fork_at` panics on the history drafts made
    before publishes became one change (the reason crdtmds never calls it): two writers
    publishing in turn, each on a fork of the live document taken with its own actor,
    change by change, then the fork adopted as the live document."""
    for number in range(20):
        live = Domain.create("acme", f"doc-{number}").doc
        actors, written, count = [new_actor(), new_actor()], [], 0
        for _ in range(3):
            for actor in actors:
                fork = fork_with_actor(live, actor)
                objects = child_id(fork, ROOT, "objects")
                for _ in range(3):
                    count += 1
                    with fork.transaction() as tx:
                        put_value(tx, objects, f"h{count}", {"name": f"h{count}"})
                written.append(fork.get_heads())
                revisions = child_id(fork, ROOT, "revisions")
                with fork.transaction() as tx:
                    insert_value(tx, revisions, fork.length(revisions), {"n": count})
                fork.set_actor(live.get_actor())
                live = fork
        for heads in written:
            try:
                live.fork_at(heads)
            except BaseException as exc:
                return exc
    pytest.fail("the core no longer panics on this history: the test needs another trigger")


def test_a_core_panic_is_not_an_exception_but_is_recognised() -> None:
    panic = genuine_panic()
    assert not isinstance(panic, Exception)
    assert is_core_panic(panic)
    assert is_core_error(panic)
    assert is_core_error(ValueError("bad chunk"))
    assert not is_core_panic(ValueError("bad chunk"))
    assert not is_core_error(KeyboardInterrupt())


async def test_a_panic_under_a_command_is_answered_and_the_connection_goes_on(
    api: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    panic_type = type(genuine_panic())
    alice = connect(api)
    await alice.login("alice")
    await alice.ok("add-host", **host("web", "10.0.0.1"))
    before = api.services.status.domain_heads()

    def panicking(*args: Any, **kwargs: Any) -> Any:
        raise panic_type("called `Result::unwrap()` on an `Err` value: MissingOps")

    monkeypatch.setattr(Session, "add_object", panicking)
    with caplog.at_level(logging.ERROR, logger="crdtmds"):
        reply = await alice.send("add-host", host("db", "10.0.0.2"))
    error = reply["error"]
    assert error["code"] == "generic_internal_error"
    assert "add-host" in error["message"] and "acme" in error["message"]
    assert error["details"]["command"] == "add-host"
    assert error["details"]["document"] == api.services.documents.domain("acme").document_id
    assert any("Automerge core failed" in record.getMessage() for record in caplog.records)

    monkeypatch.undo()
    assert api.services.status.domain_heads() == before
    shown = await alice.ok("show-hosts")
    assert [h["name"] for h in shown["objects"]] == ["web"]
    await alice.ok("add-host", **host("db", "10.0.0.2"))
    await alice.ok("publish")
