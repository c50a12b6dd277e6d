"""The cluster status's convergence verdict per domain: identical heads everywhere, and
no server with an epoch step still to run (a start or a carry, `app/epochs.py`)."""

from __future__ import annotations

from typing import Any

from crdtmds.status_query import _heads_by_server


def _statuses(settled: dict[str, bool]) -> dict[str, dict[str, Any]]:
    row = {"document-id": "d0", "heads": ["aa", "bb"], "epoch-document-id": "d1"}
    return {
        name: {"domains": {"acme": {**row, "epochs-settled": done}}}
        for name, done in settled.items()
    }


def test_a_domain_is_not_converged_while_a_server_has_epoch_steps_to_run() -> None:
    assert not _heads_by_server(_statuses({"n1": True, "n2": False}), "acme")["converged"]
    settled = _heads_by_server(_statuses({"n1": True, "n2": True}), "acme")
    assert settled["converged"]
    assert settled["epoch-document-id"] == {"n1": "d1", "n2": "d1"}
