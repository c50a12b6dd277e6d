"""A rule position beyond the end of its layer is refused with a clear message, for `add`
and for a move (`core/session.py` `_raw_index`)."""

from __future__ import annotations

import pytest

from crdtmds.core.domain import Domain
from crdtmds.core.session import Session
from crdtmds.errors import ValidationError


@pytest.fixture
def session() -> Session:
    domain = Domain.create("acme", "doc-positions")
    setup = Session.open(domain, admin="setup", server="s1")
    for name in "ABC":
        setup.add_rule({"name": name, "position": "bottom"})
    setup.publish_in_memory("base")
    return Session.open(domain, admin="alice", server="s1")


def test_a_position_past_the_end_is_refused(session: Session) -> None:
    with pytest.raises(ValidationError) as refused:
        session.add_rule({"name": "far", "position": 99})
    assert refused.value.message == (
        "position 99 is beyond the end of layer 'Network' (3 rule(s)): give 1 to 4, or bottom"
    )
    assert session.add_rule({"name": "last", "position": 4})["rule-number"] == 4


def test_a_move_past_the_end_is_refused(session: Session) -> None:
    expected = r"position 4 is beyond the end of layer 'Network' \(3 rule\(s\)\): give 1 to 3,"
    with pytest.raises(ValidationError, match=expected):
        session.set_rule({"name": "A", "new-position": 4})
    assert session.set_rule({"name": "A", "new-position": 3})["rule-number"] == 3
