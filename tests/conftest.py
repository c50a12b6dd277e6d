"""Fixtures shared by tests in more than one folder.

Folder-wide fixtures are in the conftest.py of each folder: tests/integration (in-process
servers, cheap password hashes for all) and tests/scenario (every test there is `slow`).
Helpers that tests import are in tests/helpers.
"""

from __future__ import annotations

import pytest

from crdtmds.core import auth


@pytest.fixture
def cheap_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """scrypt at production cost takes ~70 ms per hash; tests that hash and log in a lot use
    a cheap cost instead. Not autouse here: tests/unit/core/test_auth.py hashes at the
    production cost on purpose."""
    monkeypatch.setattr(auth, "SCRYPT_N", 2**8)
